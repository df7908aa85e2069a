"""Untrusted files: weights, checkpoints and caches load only through safetensors or JSON, remote code
stays off unless asked, dataset file names cannot leave the image root, and no shell string is built.

(HTML escaping of report text is tested with the report.)
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from captune.cli import main
from captune.config import ModelConfig
from captune.data import load_dataset
from captune.errors import DataError, ModelError, UserError

SRC = Path(__file__).resolve().parents[1] / "src" / "captune"
TRAVERSAL = "../../etc/passwd"


def _source_hits(pattern: str, root: Path = SRC) -> list[str]:
    """Lines of captune's source matching `pattern`, ignoring comments and docstring prose."""
    hits = []
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.split("#", 1)[0]
            if re.search(pattern, code) and not code.strip().startswith(('"', "'", "`")):
                hits.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return hits


# ----------------------------------------------------------------------------- pickles and remote code


@pytest.mark.parametrize("pattern", [
    r"torch\.load\(", r"pickle\.loads?\(", r"^\s*import pickle|from pickle import", r"dill|cloudpickle|joblib\.load",
    r"weights_only\s*=\s*False", r"trust_remote_code\s*=\s*True", r"use_safetensors\s*=\s*False",
    r"safe_serialization\s*=\s*False",
])
def test_no_unsafe_loader_in_source(pattern: str) -> None:
    assert _source_hits(pattern) == []


@pytest.mark.parametrize("pattern", [r"shell\s*=\s*True", r"os\.system\(", r"os\.popen\(", r"subprocess\.getoutput",
                                     r"subprocess\.getstatusoutput"])
def test_no_shell_string_in_source(pattern: str) -> None:
    assert _source_hits(pattern) == []


def test_subprocesses_get_argument_lists() -> None:
    """Every subprocess call passes a prepared argument list (`cmd`), never a formatted string."""
    calls = _source_hits(r"subprocess\.(run|Popen|call|check_call|check_output)\(")
    assert calls, "expected the Java metric runners"
    for call in calls:
        argument = call.split("(", 1)[1]
        assert not argument.lstrip().startswith(("f\"", "f'", "\"", "'")), call


def test_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The scans above would see a violation (guards against a regex that matches nothing)."""
    (tmp_path / "bad.py").write_text("import pickle\nstate = torch.load(path)\nsubprocess.run(f'ls {x}', shell=True)\n"
                                     "# torch.load( in a comment is fine\n")
    assert len(_source_hits(r"torch\.load\(", tmp_path)) == 1
    assert len(_source_hits(r"shell\s*=\s*True", tmp_path)) == 1
    assert len(_source_hits(r"^\s*import pickle|from pickle import", tmp_path)) == 1


def test_pickle_adapter_is_refused_by_name(tmp_path: Path) -> None:
    from captune.model.adapters import read_adapter_config

    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (tmp_path / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelError, match=r"adapter_model\.bin: pickle weights are refused"):
        read_adapter_config(tmp_path)


def _fake_checkpoint(run_dir: Path, name: str) -> Path:
    step = run_dir / "train" / "checkpoints" / "step-4"
    (step / "adapter").mkdir(parents=True)
    (step / "state.json").write_text(json.dumps({"step": 4}))
    target = step / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"\x80\x04K\x01.")
    return target


@pytest.mark.parametrize("name", ["optimizer.pt", "adapter/adapter_model.bin", "../last.ckpt"])
def test_pickle_checkpoint_is_refused_on_resume(name: str, tmp_path: Path, tiny_model_dirs, capsys,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    import torch

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a pickle loader was called")

    monkeypatch.setattr(torch, "load", never)
    monkeypatch.setattr(pickle, "load", never)
    monkeypatch.setattr(pickle, "loads", never)
    from train_helpers import colour_dataset

    data = colour_dataset(tmp_path / "data")
    bad = Path(os.path.normpath(_fake_checkpoint(tmp_path / "runs" / "r", name)))
    code = main(["train", "--no-progress", "--resume", "--set", f"model.name_or_path={tiny_model_dirs['opt']}",
                 "--set", f"data.path={data}", "--set", f"output_dir={tmp_path / 'runs'}", "--set", "name=r",
                 "--set", "train.batch_size=2", str(_config(tmp_path))])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert str(bad) in err and "pickle checkpoint refused" in err
    assert bad.is_file()  # refused, not deleted or overwritten


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  max_steps: 2\n  tensorboard: false\n")
    return path


def test_feature_cache_reads_only_safetensors(tmp_path: Path) -> None:
    from captune.model.features import VisionFeatureStore

    (tmp_path / "ns").mkdir()
    (tmp_path / "ns" / "shard-000000.pt").write_bytes(b"\x80\x04K\x01.")
    (tmp_path / "ns" / "shard-000001.safetensors").write_bytes(b"\xff" * 32)  # damaged: ignored, recomputed
    store = VisionFeatureStore("ns", tmp_path)
    assert len(store) == 0


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def wrap(self, monkeypatch: pytest.MonkeyPatch, cls: Any, label: str) -> None:
        original = cls.from_pretrained.__func__

        def recorded(klass: Any, *args: Any, **kwargs: Any) -> Any:
            if sys._getframe(1).f_globals.get("__name__", "").startswith("captune"):  # captune's calls only
                self.calls.append((label, kwargs))
            return original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(recorded))


@pytest.mark.parametrize("asked", [False, True])
def test_trust_remote_code_only_when_asked(asked: bool, tiny_model_dirs, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoProcessor, Blip2Config, Blip2ForConditionalGeneration

    from captune.model.load import load_blip2

    recorder = _Recorder()
    for cls, label in ((Blip2Config, "config"), (Blip2ForConditionalGeneration, "model"),
                       (AutoProcessor, "processor")):
        recorder.wrap(monkeypatch, cls, label)
    load_blip2(ModelConfig(name_or_path=str(tiny_model_dirs["opt"]), trust_remote_code=asked))
    labels = [label for label, _ in recorder.calls]
    assert {"config", "model", "processor"} <= set(labels)
    for label, kwargs in recorder.calls:
        assert kwargs.get("trust_remote_code") is asked, label
    model_kwargs = next(kwargs for label, kwargs in recorder.calls if label == "model")
    assert model_kwargs["use_safetensors"] is True


def test_trust_remote_code_defaults_off() -> None:
    assert ModelConfig().trust_remote_code is False


# ----------------------------------------------------------------------------- file names from dataset files


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "a.jpg")
    return root


def _flickr(root: Path, tokens: str, split: str | None = None) -> Path:
    (root / "Flicker8k_Dataset").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "Flicker8k_Dataset" / "a.jpg")
    (root / "Flickr8k_text").mkdir()
    (root / "Flickr8k_text" / "Flickr8k.token.txt").write_text(tokens)
    if split is not None:
        (root / "Flickr8k_text" / "Flickr_8k.trainImages.txt").write_text(split)
    return root


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


ESCAPES = [
    ("token-file", lambda r: _flickr(r / "f", f"a.jpg#0\ta cat\n{TRAVERSAL}#0\tsecrets\n"), "token file line 2"),
    ("split-file", lambda r: _flickr(r / "f", "a.jpg#0\ta cat\n", f"a.jpg\n{TRAVERSAL}\n"),
     "Flickr_8k.trainImages.txt line 2"),
    ("jsonl", lambda r: _write(r / "c.jsonl", json.dumps({"file_name": "a.jpg", "caption": "x"}) + "\n"
                               + json.dumps({"file_name": TRAVERSAL, "caption": "y"}) + "\n"), "c.jsonl line 2"),
    ("jsonl-absolute", lambda r: _write(r / "c.jsonl", json.dumps({"image": "/etc/passwd", "text": "y"}) + "\n"),
     "c.jsonl line 1"),
    ("csv-backslashes", lambda r: _write(r / "c.csv", "image,caption\na.jpg,x\n..\\..\\etc\\passwd,y\n"),
     "c.csv line 3"),
    ("imagefolder", lambda r: _write(r / "metadata.jsonl", json.dumps({"file_name": TRAVERSAL, "text": "y"}) + "\n"),
     "metadata.jsonl line 1"),
    ("coco", lambda r: _write(r / "captions_val2014.json", json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 7, "file_name": TRAVERSAL}],
        "annotations": [{"image_id": 1, "caption": "x"}, {"image_id": 7, "caption": "y"}]})),
     "captions_val2014.json images[1]"),
    ("karpathy-filename", lambda r: _write(r / "dataset_x.json", json.dumps({"images": [
        {"filename": "a.jpg", "split": "train", "sentences": [{"raw": "x"}]},
        {"filename": TRAVERSAL, "split": "test", "sentences": [{"raw": "y"}]}]})), "dataset_x.json images[1]"),
    ("karpathy-filepath", lambda r: _write(r / "dataset_x.json", json.dumps({"images": [
        {"filename": "passwd", "filepath": "../../etc", "split": "train", "sentences": [{"raw": "y"}]}]})),
     "dataset_x.json images[0]"),
]


@pytest.mark.parametrize(("build", "entry"), [pytest.param(b, e, id=i) for i, b, e in ESCAPES])
def test_dataset_names_cannot_leave_the_image_root(build, entry: str, image_root: Path, capsys) -> None:
    path = build(image_root)
    with pytest.raises(DataError) as info:
        load_dataset(path)
    message = str(info.value)
    assert message.startswith(entry) and "points outside the image root" in message, message
    assert main(["data", "check", str(path)]) == 1  # and the CLI says the same in one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and entry in err


def test_symlinked_image_folder_still_works(tmp_path: Path) -> None:
    """The check is lexical: names are distrusted, the user's own symlinked folders are not."""
    real = tmp_path / "real"
    real.mkdir()
    Image.new("RGB", (8, 8)).save(real / "a.jpg")
    root = tmp_path / "ds"
    root.mkdir()
    (root / "images").symlink_to(real, target_is_directory=True)
    path = _write(root / "c.jsonl", json.dumps({"file_name": "images/a.jpg", "caption": "x"}) + "\n")
    assert [r.name for r in load_dataset(path).records] == ["images/a"]


def test_user_error_hierarchy() -> None:
    """Every refusal above is a UserError, so the CLI prints it as one line with exit 1."""
    assert issubclass(DataError, UserError) and issubclass(ModelError, UserError)
