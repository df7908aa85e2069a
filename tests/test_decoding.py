"""One decoding type (issue 18): `generate.*` from YAML reaches transformers' `generate()` through
`captune caption` and through a grid system that does not override it; the default grid's choice of
inherited keys; eval.systems round-trip; generate/ never imports train/."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captune.config import config_from_dict, config_to_dict, dump_config, load_config
from captune.decoding import Decoding, default_systems
from captune.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src" / "captune"


@pytest.fixture(scope="module")
def run_yaml(tmp_path_factory, tiny_model_dirs) -> Path:
    """Three eval images, a tiny OPT, beam decoding set only in `generate`, and two systems: one inherits it."""
    root = tmp_path_factory.mktemp("decoding")
    rows = []
    for i in range(3):
        Image.fromarray(np.random.RandomState(i).randint(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            root / f"img{i}.png")
        rows.append(json.dumps({"file_name": f"img{i}.png", "caption": "a small square", "split": "test"}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    path = root / "run.yaml"
    path.write_text(
        f"name: dec\noutput_dir: {root / 'runs'}\nmodel:\n  name_or_path: {tiny_model_dirs['opt']}\n"
        f"data:\n  path: {root}\n  format: imagefolder\n"
        "generate:\n  num_beams: 2\n  length_penalty: 0.5\n  max_new_tokens: 4\n"
        "eval:\n  human_baseline: false\n  systems:\n    - {name: inherits}\n    - {name: own, num_beams: 3}\n")
    return path


@pytest.fixture
def generate_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The keyword arguments of every transformers `generate()` call."""
    from transformers.generation.utils import GenerationMixin

    seen: list[dict] = []
    original = GenerationMixin.generate

    def spy(self, *args, **kwargs):
        seen.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", spy)
    return seen


def test_generate_keys_reach_generate_through_caption(run_yaml: Path, generate_calls: list[dict]) -> None:
    from captune.generate.files import caption_images

    caption_images([run_yaml.parent / "img0.png"], config=run_yaml)
    assert generate_calls and all(
        (c["num_beams"], c["length_penalty"], c["max_new_tokens"]) == (2, 0.5, 4) for c in generate_calls)


def test_generate_keys_reach_generate_through_a_grid_system(run_yaml: Path, generate_calls: list[dict]) -> None:
    from captune.grid.run import run_grid

    run_grid(load_config(run_yaml), progress=False, score=False)
    got = sorted((c["num_beams"], c["length_penalty"], c["max_new_tokens"]) for c in generate_calls)
    assert got == [(2, 0.5, 4), (3, 0.5, 4)]  # "inherits" takes all three; "own" sets num_beams only


def test_systems_inherit_generate_and_round_trip(run_yaml: Path, tmp_path: Path) -> None:
    cfg = load_config(run_yaml, ["generate.num_beams=4", "train.prompt=a photo of",
                                 "eval.systems=[{name: a}, {name: b, adapter: true, top_k: 5}]"])
    a, b = cfg.eval.systems
    assert isinstance(cfg.generate, Decoding) and a.decode == cfg.generate.decoding()
    assert (b.decode.num_beams, b.decode.prompt, b.decode.top_k) == (4, "a photo of", 5)
    assert config_from_dict(config_to_dict(cfg)) == cfg
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    with pytest.raises(ConfigError, match=r"unknown config key 'eval\.systems\[0\]\.num_beam'; did you mean"):
        config_from_dict({"eval": {"systems": [{"name": "a", "num_beam": 3}]}})
    with pytest.raises(ConfigError, match=r"eval\.systems\[0\]\.top_p': must be in \(0, 1\]"):
        config_from_dict({"eval": {"systems": [{"name": "a", "top_p": 0}]}})
    with pytest.raises(ConfigError, match=r"'generate\.batch_size'"):
        config_from_dict({"generate": {"batch_size": 0}})


def test_default_grid_takes_only_length_and_seed_from_generate(run_yaml: Path) -> None:
    cfg = load_config(run_yaml, ["generate.seed=7", "generate.repetition_penalty=1.3"])
    for system in default_systems(cfg.generate, train_prompt="a photo of"):
        assert (system.decode.max_new_tokens, system.decode.seed) == (4, 7), system.name
        assert system.decode.repetition_penalty in (1.0, 1.5) and system.decode.length_penalty == 1.0
    greedy = default_systems(cfg.generate)[0]
    assert greedy.name == "zero-shot-greedy" and greedy.decode == Decoding(max_new_tokens=4, seed=7)


def test_generate_does_not_import_train() -> None:
    for path in sorted((SRC / "generate").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "captune.train" or n.startswith("captune.train.") for n in names), path
