"""`captune demo`'s recipe: the tiny pretrained base (base.py) and the LoRA settings (recipe.py)."""

from captune.demo.base import build_base, ensure_synth
from captune.demo.recipe import DemoSettings, demo_run_config

__all__ = ["DemoSettings", "build_base", "demo_run_config", "ensure_synth"]
