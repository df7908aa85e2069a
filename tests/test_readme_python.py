"""README's "Use from Python" block, extracted from README.md and run as written on the tiny model, so the
README cannot drift from the API."""

from __future__ import annotations

import json
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_section() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Use from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "README's Python section should hold one python block"
    return blocks[0]


def test_readme_python_section_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = _python_section()
    namespace: dict = {}
    exec(compile(code, "README.md#use-from-python", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "report.html" in printed
    captions, scores = namespace["captions"], namespace["scores"]
    assert len(captions) == 40 and all(isinstance(c, list) and len(c) == 1 for c in captions.values())
    assert set(scores["systems"]) == {"lora-greedy"} and scores["images"] == 10
    # The API ran the same stages as the CLI: the run directory has what `captune run` writes.
    run = tmp_path / "runs" / "py"
    assert (run / "adapter" / "adapter_config.json").is_file()
    grid = json.loads((run / "scores.json").read_text())
    same = grid["systems"]["lora-greedy"]["metrics"]["coco/CIDEr"]["value"]
    assert abs(scores["systems"]["lora-greedy"]["metrics"]["coco/CIDEr"]["value"] - same) < 1e-9


def test_api_names_have_docstrings_and_hints():
    import inspect

    import captune

    for name in captune.API:
        fn = getattr(captune, name)
        assert inspect.getdoc(fn), name
        assert "return" in inspect.get_annotations(fn) or name == "load_config", name


def test_load_config_keyword_sections_and_errors(tmp_path):
    import re

    import pytest

    import captune
    from captune.errors import ConfigError

    cfg = captune.load_config(model={"name_or_path": "tiny-t5"}, train={"lr": 5e-4}, name="x")
    assert (cfg.model.name_or_path, cfg.train.lr, cfg.name) == ("tiny-t5", 5e-4, "x")
    yaml = tmp_path / "run.yaml"
    yaml.write_text("train:\n  lr: 0.001\n  epochs: 2\n")
    cfg = captune.load_config(yaml, ["train.epochs=3"], train={"lr": 0.002})
    assert (cfg.train.lr, cfg.train.epochs) == (0.002, 3)
    with pytest.raises(ConfigError, match=r"train\.lrr"):
        captune.load_config(train={"lrr": 1})
    with pytest.raises(ConfigError, match=re.escape(str(yaml))):
        captune.load_config(yaml, train={"lr": "fast"})
