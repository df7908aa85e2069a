"""`captune demo`: the recipe on a synthetic benchmark (synth.py, captions.py, judge.py), a tiny base
pretrained by captune (base.py), and the LoRA run read from demo.yaml (recipe.py, pipeline.py)."""
