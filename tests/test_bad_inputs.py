"""The bad-input corpus: every broken file a user may hand captune, run through the CLI they would type.

Each case ends in one clear line on stderr and exit 1 naming the file or key (and the fix), or in a
counted, reported skip with exit 0 — never a traceback, exit 2, a hang or a partial output shown as
complete. The corpus is built in a temp folder by the module fixture below; a few cases also run as
real subprocesses to prove what a shell sees.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from captune.cli import main
from train_helpers import colour_dataset

CASE_TIMEOUT_S = 120


@dataclass
class Corpus:
    root: Path
    opt: Path
    t5: Path

    def __truediv__(self, name: str) -> Path:
        return self.root / name


# ----------------------------------------------------------------------------- building the corpus


def _jpeg_bytes(size: int = 64) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _bad_images(folder: Path) -> dict[str, Path]:
    """Broken files named like images, each a different way downloads and scrapes go wrong."""
    folder.mkdir(parents=True, exist_ok=True)
    data = _jpeg_bytes()
    files = {
        "corrupt": (folder / "corrupt.jpg", data[:20] + b"\x00" * 200 + data[220:]),
        "truncated": (folder / "truncated.jpg", data[: len(data) // 2]),
        "zero-byte": (folder / "zero.jpg", b""),
        "html-as-jpg": (folder / "html.jpg", b"<!DOCTYPE html><html><body>404 Not Found</body></html>"),
    }
    for path, payload in files.values():
        path.write_bytes(payload)
    bomb = folder / "bomb.png"  # 20000 x 20000 = 400 M pixels: over the decompression-bomb limit
    Image.new("1", (20000, 20000)).save(bomb)
    return {**{k: p for k, (p, _) in files.items()}, "bomb": bomb}


def _odd_images(folder: Path) -> dict[str, Path]:
    """Valid images in modes that break naive loaders: they must load."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"cmyk": folder / "cmyk.jpg", "16-bit": folder / "gray16.png", "palette": folder / "palette.png",
             "animated": folder / "animated.gif"}
    Image.new("CMYK", (32, 32), (0, 120, 200, 10)).save(paths["cmyk"])
    Image.fromarray(np.full((32, 32), 40000, dtype=np.uint16)).save(paths["16-bit"])
    palette = Image.new("P", (32, 32), 3)
    palette.info["transparency"] = 3
    palette.save(paths["palette"], transparency=3)
    frames = [Image.new("P", (32, 32), i) for i in range(3)]
    frames[0].save(paths["animated"], save_all=True, append_images=frames[1:])
    return paths


def _flickr(root: Path, tokens: bytes, train_split: bytes | None = None, image_dir: bool = True) -> Path:
    """A Flickr8K-layout folder with two images and the given token (and train split) file."""
    text = root / "Flickr8k_text"
    text.mkdir(parents=True)
    if image_dir:
        (root / "Flicker8k_Dataset").mkdir()
        for name, rgb in (("a.jpg", (200, 10, 10)), ("b.jpg", (10, 10, 200))):
            Image.new("RGB", (16, 16), rgb).save(root / "Flicker8k_Dataset" / name)
    (text / "Flickr8k.token.txt").write_bytes(tokens)
    if train_split is not None:
        (text / "Flickr_8k.trainImages.txt").write_bytes(train_split)
    return root


GOOD_TOKENS = b"a.jpg#0\ta red square on a field\nb.jpg#0\ta blue square on a field\n"


def _config(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def _adapters(c: Corpus) -> None:
    """An OPT adapter, the same adapter reshaped as if trained on a narrower base, and damaged ones."""
    from captune.config import LoraConfig, ModelConfig
    from captune.model.adapters import save_adapter
    from captune.model.load import load_blip2
    from captune.model.lora import apply_lora

    loaded = load_blip2(ModelConfig(name_or_path=str(c.opt)))
    peft_model, _ = apply_lora(loaded.model, LoraConfig(), loaded.family)
    save_adapter(peft_model, c / "adapter-opt")

    narrow = shutil.copytree(c / "adapter-opt", c / "adapter-narrow")
    tensors = load_file(str(narrow / "adapter_model.safetensors"))
    reshaped = {k: torch.zeros(v.shape[0], 32) if ".lora_A." in k else torch.zeros(32, v.shape[1])
                for k, v in tensors.items()}
    save_file(reshaped, str(narrow / "adapter_model.safetensors"))

    pickled = (c / "adapter-pickle")
    pickled.mkdir()
    shutil.copy(c / "adapter-opt" / "adapter_config.json", pickled)
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.")

    listed = shutil.copytree(c / "adapter-opt", c / "adapter-listcfg")
    (listed / "adapter_config.json").write_text("[1, 2]")
    damaged = shutil.copytree(c / "adapter-opt", c / "adapter-damaged")
    (damaged / "adapter_model.safetensors").write_bytes(b"\xff" * 64)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tiny_model_dirs: dict[str, Path]) -> Corpus:
    c = Corpus(tmp_path_factory.mktemp("corpus"), tiny_model_dirs["opt"], tiny_model_dirs["t5"])
    bad = _bad_images(c / "bad")
    odd = _odd_images(c / "odd")
    Image.new("RGB", (32, 32), (90, 160, 40)).save(c / "good.jpg")

    mixed = c / "mixed"
    mixed.mkdir()
    for path in [*bad.values(), *odd.values()]:
        shutil.copy(path, mixed / path.name)
    rows = [{"file_name": p.name, "caption": "a thing on a table"} for p in [*bad.values(), *odd.values()]]
    (mixed / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    train_bad = c / "train-bad"
    colour_dataset(train_bad)
    rows = [json.loads(x) for x in (train_bad / "captions.jsonl").read_text().splitlines()]
    for name in ("corrupt.jpg", "zero.jpg"):
        shutil.copy(bad["corrupt" if name == "corrupt.jpg" else "zero-byte"], train_bad / name)
        rows.append({"file_name": name, "caption": "a broken file", "split": "train"})
    (train_bad / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    _flickr(c / "f-malformed", b"this line has no tab and no id\n" + GOOD_TOKENS)
    _flickr(c / "f-latin1", b"a.jpg#0\ta red caf\xe9 sign\nb.jpg#0\ta blue square\n")
    _flickr(c / "f-bom", b"\xef\xbb\xbf" + GOOD_TOKENS)
    _flickr(c / "f-crlf", GOOD_TOKENS.replace(b"\n", b"\r\n"), b"a.jpg\r\nb.jpg\r\n")
    _flickr(c / "f-empty-caption", b"a.jpg#0\t   \na.jpg#1\ta red square\nb.jpg#0\ta blue square\n")
    _flickr(c / "f-duplicate-id", b"a.jpg#0\ta red square\na.jpg#0\tagain\nb.jpg#0\ta blue square\n")
    _flickr(c / "f-split-unknown", GOOD_TOKENS, b"a.jpg\nnot-there.jpg\nb.jpg\n")
    _flickr(c / "f-zero-token-file", b"")
    _flickr(c / "f-no-images", GOOD_TOKENS, image_dir=False)

    colours = colour_dataset(c / "colours")
    base = f"output_dir: {c / 'runs'}\nmodel:\n  name_or_path: {c.opt}\ndata:\n  path: {colours}\n"
    _config(c / "malformed.yaml", "model: [unclosed\n  name_or_path: : x\n")
    _config(c / "unknown-key.yaml", base + "train:\n  lrr: 0.001\n")
    _config(c / "unknown-section.yaml", base + "trian:\n  lr: 0.001\n")
    _config(c / "zero-batch.yaml", base + "train:\n  batch_size: 0\n")
    _config(c / "negative-lr.yaml", base + "train:\n  lr: -0.001\n")
    _config(c / "absurd-lr.yaml", base + "train:\n  lr: 1000\n")
    _config(c / "nan-lr.yaml", base + "train:\n  lr: .nan\n")
    _config(c / "inf-epochs.yaml", base + "train:\n  epochs: .inf\n")
    _config(c / "wrong-type.yaml", base + "train:\n  batch_size: lots\n")
    _config(c / "list-top.yaml", "- model\n- train\n")
    _config(c / "batch-over-data.yaml", base + "name: big\ntrain:\n  batch_size: 64\n  tensorboard: false\n")
    _config(c / "system-beams.yaml", base + "eval:\n  systems:\n    - {name: greedy, num_beams: 0}\n")
    (c / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    _config(c / "bad-images.yaml", f"output_dir: {c / 'runs'}\nname: skip\nmodel:\n  name_or_path: {c.opt}\n"
            f"data:\n  path: {train_bad / 'captions.jsonl'}\ntrain:\n  batch_size: 2\n  max_steps: 2\n"
            "  tensorboard: false\n  prompt: ''\n")

    score = c / "score"
    score.mkdir()
    (score / "refs.json").write_text(json.dumps({"1": ["a red square"], "2": ["a blue square"]}))
    good = [{"image_id": 1, "caption": "a red square"}, {"image_id": 2, "caption": "a blue square"}]
    preds = {
        "ok": good,
        "missing-id": good[:1],
        "extra-id": [*good, {"image_id": 3, "caption": "a cat"}],
        "duplicate-id": [*good, {"image_id": 2, "caption": "again"}],
        "string-id": [{"image_id": "1", "caption": "a"}, good[1]],
        "float-id": [{"image_id": 1.5, "caption": "a"}, good[1]],
        "no-caption": [{"image_id": 1}, good[1]],
        "mapping": {"1": "a red square"},
    }
    for name, obj in preds.items():
        (score / f"{name}.json").write_text(json.dumps(obj))
    (score / "empty.json").write_text("")
    (score / "malformed.json").write_text('[{"image_id": 1, "caption": ')

    _adapters(c)
    (c / "a-file").write_text("not a folder")
    (c / "project").mkdir()
    (c / "project" / "notes.txt").write_text("the user's own work")
    return c


# ----------------------------------------------------------------------------- running the CLI


class _Hang(Exception):
    pass


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., tuple[int, str, str]]]:
    """Run `captune ARGS` in-process with a hang guard; returns (exit code, stdout, stderr)."""

    def on_alarm(signum: int, frame: object) -> None:
        raise _Hang(f"no answer within {CASE_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)

    def run(*args: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        signal.alarm(CASE_TIMEOUT_S)
        try:
            code = main([str(a) for a in args])
        finally:
            signal.alarm(0)
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    signal.signal(signal.SIGALRM, previous)


def assert_one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 1, (code, err)
    assert err.count("\n") == 1 and err.startswith("captune: error: "), err
    assert "Traceback" not in out + err and "internal error" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


Case = tuple[str, Callable[[Corpus], list[str | Path]], Callable[[Corpus], list[str]]]

# id, argv, what the one line must name (file or key, and the fix where there is one)
ERRORS: list[Case] = [
    # images a user captions directly
    ("image-corrupt", lambda c: ["caption", "--model", c.opt, c / "bad/corrupt.jpg"],
     lambda c: [str(c / "bad/corrupt.jpg"), "remove"]),
    ("image-truncated", lambda c: ["caption", "--model", c.opt, c / "bad/truncated.jpg"],
     lambda c: [str(c / "bad/truncated.jpg"), "re-download"]),
    ("image-zero-byte", lambda c: ["caption", "--model", c.opt, c / "bad/zero.jpg"],
     lambda c: [str(c / "bad/zero.jpg"), "0 bytes"]),
    ("image-not-an-image", lambda c: ["caption", "--model", c.opt, c / "bad/html.jpg"],
     lambda c: [str(c / "bad/html.jpg"), "not an image"]),
    ("image-decompression-bomb", lambda c: ["caption", "--model", c.opt, c / "bad/bomb.png"],
     lambda c: [str(c / "bad/bomb.png"), "decompression-bomb"]),
    ("image-missing", lambda c: ["caption", "--model", c.opt, c / "nope.jpg"],
     lambda c: [str(c / "nope.jpg"), "check the path"]),
    ("caption-zero-beams", lambda c: ["caption", "--model", c.opt, c / "good.jpg", "--num-beams", "0"],
     lambda c: ["--num-beams", "> 0"]),
    ("caption-zero-batch", lambda c: ["caption", "--model", c.opt, c / "good.jpg", "--batch-size", "0"],
     lambda c: ["--batch-size"]),
    ("caption-top-p-5", lambda c: ["caption", "--model", c.opt, c / "good.jpg", "--sample", "--top-p", "5"],
     lambda c: ["--top-p", "(0, 1]"]),
    ("caption-not-an-int", lambda c: ["caption", "--model", c.opt, c / "good.jpg", "--num-beams", "two"],
     lambda c: ["--num-beams", "captune caption --help"]),
    ("model-is-a-file", lambda c: ["caption", "--model", c / "good.jpg", c / "good.jpg"],
     lambda c: [str(c / "good.jpg"), "model directory"]),
    ("model-missing", lambda c: ["caption", "--model", c / "no-model", c / "good.jpg"],
     lambda c: [str(c / "no-model"), "model.name_or_path"]),
    # datasets
    ("data-path-missing", lambda c: ["data", "check", c / "no-dataset"], lambda c: [str(c / "no-dataset")]),
    ("data-image-folder-missing", lambda c: ["data", "check", c / "f-no-images"],
     lambda c: [str(c / "f-no-images"), "--image-root"]),
    ("data-image-root-missing", lambda c: ["data", "check", c / "f-bom", "--image-root", c / "nowhere"],
     lambda c: [str(c / "nowhere"), "--image-root"]),
    ("data-image-root-is-a-file", lambda c: ["data", "check", c / "f-bom", "--image-root", c / "good.jpg"],
     lambda c: [str(c / "good.jpg"), "image folder"]),
    ("data-zero-byte-token-file", lambda c: ["data", "check", c / "f-zero-token-file"],
     lambda c: [str(c / "f-zero-token-file"), "no image with a caption"]),
    ("data-image-given-as-dataset", lambda c: ["data", "check", c / "good.jpg"],
     lambda c: [str(c / "good.jpg"), "--data-format"]),
    ("data-negative-threads", lambda c: ["data", "check", c / "f-bom", "--threads", "-1"],
     lambda c: ["--threads", ">= 0"]),
    ("data-json-out-is-a-folder",
     lambda c: ["data", "check", c / "f-bom", "--out", c / "score"], lambda c: [str(c / "score"), "is a folder"]),
    # configs
    ("config-malformed-yaml", lambda c: ["train", c / "malformed.yaml"],
     lambda c: [str(c / "malformed.yaml"), "line 2", "fix the syntax"]),
    ("config-unknown-key", lambda c: ["train", c / "unknown-key.yaml"],
     lambda c: ["train.lrr", "did you mean 'train.lr'"]),
    ("config-unknown-section", lambda c: ["train", c / "unknown-section.yaml"],
     lambda c: ["'trian'", "did you mean 'train'"]),
    ("config-zero-batch", lambda c: ["train", c / "zero-batch.yaml"], lambda c: ["train.batch_size", "> 0"]),
    ("config-negative-lr", lambda c: ["train", c / "negative-lr.yaml"], lambda c: ["train.lr", "> 0"]),
    ("config-absurd-lr", lambda c: ["train", c / "absurd-lr.yaml"], lambda c: ["train.lr", "1e-4"]),
    ("config-nan-lr", lambda c: ["train", c / "nan-lr.yaml"], lambda c: ["train.lr", "finite"]),
    ("config-inf-epochs", lambda c: ["train", c / "inf-epochs.yaml"], lambda c: ["train.epochs", "finite"]),
    ("config-wrong-type", lambda c: ["train", c / "wrong-type.yaml"], lambda c: ["train.batch_size", "int"]),
    ("config-top-level-list", lambda c: ["train", c / "list-top.yaml"], lambda c: [str(c / "list-top.yaml")]),
    ("config-not-utf8", lambda c: ["train", c / "latin1.yaml"], lambda c: [str(c / "latin1.yaml"), "UTF-8"]),
    ("config-missing", lambda c: ["train", c / "nope.yaml"], lambda c: [str(c / "nope.yaml"), "not found"]),
    ("config-is-a-folder", lambda c: ["train", c.root], lambda c: [str(c.root), "YAML config file"]),
    ("config-batch-over-data", lambda c: ["train", c / "batch-over-data.yaml", "--no-progress"],
     lambda c: ["train.batch_size", "4 training captions"]),
    ("config-system-zero-beams", lambda c: ["eval", c / "system-beams.yaml", "--no-progress"],
     lambda c: ["eval.systems[0].num_beams"]),
    ("override-without-value", lambda c: ["train", c / "unknown-key.yaml", "--set", "train.lr"],
     lambda c: ["train.lr", "KEY=VALUE"]),
    ("override-nan", lambda c: ["train", c / "zero-batch.yaml", "--set", "train.batch_size=4",
                                "--set", "train.max_grad_norm=.nan"], lambda c: ["train.max_grad_norm"]),
    ("missing-argument", lambda c: ["train"], lambda c: ["config", "captune train --help"]),
    # predictions for `captune score`
    *[(f"score-{name}", (lambda n: lambda c: ["score", "--pred", c / f"score/{n}.json", "--refs",
                                              c / "score/refs.json", "--metrics", "rouge", "-q"])(name),
       (lambda n, w: lambda c: [str(c / f"score/{n}.json"), w])(name, want))
      for name, want in (("missing-id", "have no prediction"), ("extra-id", "not in the references"),
                         ("duplicate-id", "more than once"), ("string-id", "not integers"),
                         ("float-id", "not integers"), ("no-caption", '"caption"'), ("mapping", "JSON list"),
                         ("empty", "empty file"), ("malformed", "malformed JSON"), ("nope", "not found"))],
    ("score-pred-is-a-folder", lambda c: ["score", "--pred", c / "score", "--refs", c / "score/refs.json",
                                          "--metrics", "rouge"], lambda c: [str(c / "score"), "is a folder"]),
    ("score-out-is-a-folder", lambda c: ["score", "--pred", c / "score/ok.json", "--refs", c / "score/refs.json",
                                         "--metrics", "rouge", "-q", "--out", c / "score"],
     lambda c: [str(c / "score"), "is a folder"]),
    ("score-out-under-a-file", lambda c: ["score", "--pred", c / "score/ok.json", "--refs", c / "score/refs.json",
                                          "--metrics", "rouge", "-q", "--out", c / "a-file/scores.json"],
     lambda c: [str(c / "a-file"), "is a file"]),
    # adapters
    ("adapter-shape-mismatch-export", lambda c: ["export", "--adapter", c / "adapter-narrow", "--model", c.opt,
                                                 "--out", c / "out-narrow"],
     lambda c: [str(c / "adapter-narrow"), "different base"]),
    ("adapter-shape-mismatch-caption", lambda c: ["caption", "--model", c.opt, "--adapter", c / "adapter-narrow",
                                                  c / "good.jpg"], lambda c: [str(c / "adapter-narrow"), "shape"]),
    ("adapter-opt-on-t5-export", lambda c: ["export", "--adapter", c / "adapter-opt", "--model", c.t5,
                                            "--out", c / "out-t5"],
     lambda c: [str(c / "adapter-opt"), "language_model", "base model it was trained on"]),
    ("adapter-opt-on-t5-caption", lambda c: ["caption", "--model", c.t5, "--adapter", c / "adapter-opt",
                                             c / "good.jpg"], lambda c: [str(c / "adapter-opt"), "lacks"]),
    ("adapter-pickle", lambda c: ["export", "--adapter", c / "adapter-pickle", "--out", c / "out-pickle"],
     lambda c: [str(c / "adapter-pickle/adapter_model.bin"), "pickle", "safe_serialization=True"]),
    ("adapter-config-not-object", lambda c: ["export", "--adapter", c / "adapter-listcfg", "--out", c / "out-l"],
     lambda c: [str(c / "adapter-listcfg/adapter_config.json"), "JSON object"]),
    ("adapter-weights-damaged", lambda c: ["caption", "--model", c.opt, "--adapter", c / "adapter-damaged",
                                           c / "good.jpg"],
     lambda c: [str(c / "adapter-damaged/adapter_model.safetensors"), "damaged"]),
    ("adapter-missing", lambda c: ["export", "--adapter", c / "no-adapter", "--out", c / "out-m"],
     lambda c: [str(c / "no-adapter"), "not found"]),
    ("adapter-is-a-file", lambda c: ["export", "--adapter", c / "good.jpg", "--out", c / "out-f"],
     lambda c: [str(c / "good.jpg"), "adapter folder"]),
    ("export-out-is-a-file", lambda c: ["export", "--adapter", c / "adapter-opt", "--out", c / "a-file"],
     lambda c: [str(c / "a-file"), "is a file"]),
    ("export-out-is-users-folder", lambda c: ["export", "--adapter", c / "adapter-opt", "--out", c / "project"],
     lambda c: [str(c / "project"), "not empty"]),
    ("tiny-model-out-is-a-file", lambda c: ["tiny-model", "--out", c / "a-file"],
     lambda c: [str(c / "a-file"), "is a file"]),
]


@pytest.mark.parametrize(("argv", "needles"), [pytest.param(a, n, id=i) for i, a, n in ERRORS])
def test_bad_input_is_one_line_exit_1(corpus: Corpus, cli, argv, needles) -> None:
    code, out, err = cli(*argv(corpus))
    assert_one_line_error(code, out, err, *needles(corpus))


def test_failed_commands_leave_no_output_behind(corpus: Corpus) -> None:
    """The error cases above wrote nothing that could pass for a finished result."""
    for name in ("out-narrow", "out-t5", "out-pickle", "out-l", "out-m", "out-f"):
        assert not (corpus / name).exists(), name
    assert (corpus / "a-file").read_text() == "not a folder"
    assert (corpus / "project" / "notes.txt").read_text() == "the user's own work"
    assert not (corpus / "runs" / "big" / "adapter").exists()
    assert sorted(p.name for p in (corpus / "score").iterdir() if p.name.startswith(".")) == []


# id, argv, what stdout must say (the loaded or the counted, reported skip)
SKIPS: list[Case] = [
    ("odd-image-modes-load", lambda c: ["caption", "--model", c.opt, c / "odd", "--max-new-tokens", "2", "--json"],
     lambda c: ["cmyk.jpg", "gray16.png", "palette.png", "animated.gif"]),
    ("bad-images-counted-in-check", lambda c: ["data", "check", c / "mixed/captions.jsonl"],
     lambda c: ["unreadable images: 5", "corrupt.jpg", "truncated.jpg", "zero.jpg", "html.jpg", "bomb.png",
                "image formats: ", "status: ok"]),
    ("bad-images-skipped-in-train", lambda c: ["train", c / "bad-images.yaml", "--no-progress"],
     lambda c: ["skipped 2 unreadable training images", "corrupt.jpg", "trained 2 steps"]),
    ("token-malformed-line", lambda c: ["data", "check", c / "f-malformed"],
     lambda c: ["malformed_line 1", "token file line 1", "images in splits: 2 (2 captions)"]),
    ("token-latin1", lambda c: ["data", "check", c / "f-latin1"],
     lambda c: ["latin1_line 1", "decoded as latin-1", "images in splits: 2 (2 captions)"]),
    ("token-bom", lambda c: ["data", "check", c / "f-bom"], lambda c: ["images in splits: 2 (2 captions)"]),
    ("token-crlf", lambda c: ["data", "check", c / "f-crlf"],
     lambda c: ["images in splits: 2 (2 captions)", "train: 2 images"]),
    ("token-empty-caption", lambda c: ["data", "check", c / "f-empty-caption"],
     lambda c: ["empty captions (dropped): 1", "images in splits: 2 (2 captions)"]),
    ("token-duplicate-id", lambda c: ["data", "check", c / "f-duplicate-id"],
     lambda c: ["duplicate_id 1", "duplicate caption id 'a.jpg#0'"]),
    ("split-names-unknown-image", lambda c: ["data", "check", c / "f-split-unknown"],
     lambda c: ["split_unknown_image 1", "'not-there.jpg' names no image", "train: 2 images"]),
]


@pytest.mark.parametrize(("argv", "needles"), [pytest.param(a, n, id=i) for i, a, n in SKIPS])
def test_tolerable_input_loads_or_is_counted(corpus: Corpus, cli, argv, needles) -> None:
    code, out, err = cli(*argv(corpus))
    assert code == 0, err
    assert "Traceback" not in out + err
    for needle in needles(corpus):
        assert needle in out, (needle, out[-2000:])


def test_crlf_and_bom_leave_no_stray_characters(corpus: Corpus) -> None:
    from captune.data import load_dataset

    for name in ("f-crlf", "f-bom"):
        records = load_dataset(corpus / name).select("all")
        assert [r.name for r in records] == ["a", "b"], name
        assert all(not ref.endswith("\r") and "\ufeff" not in ref for r in records for ref in r.refs), name


# ----------------------------------------------------------------------------- exit codes


def test_keyboard_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch, cli, corpus: Corpus) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("captune.data.check.check_dataset", interrupted)
    code, _out, err = cli("data", "check", corpus / "f-bom")
    assert code == 130 and err.count("\n") == 1 and "interrupted" in err and "--resume" in err


def test_unexpected_exception_exits_2_with_report_hint(monkeypatch: pytest.MonkeyPatch, cli,
                                                       corpus: Corpus) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("captune.data.check.check_dataset", broken)
    monkeypatch.delenv("CAPTUNE_DEBUG", raising=False)
    code, _out, err = cli("data", "check", corpus / "f-bom")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "internal error (ZeroDivisionError: division by zero)" in err
    assert "CAPTUNE_DEBUG=1" in err and "report it" in err


def test_debug_env_shows_the_traceback(monkeypatch: pytest.MonkeyPatch, corpus: Corpus) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("captune.data.check.check_dataset", broken)
    monkeypatch.setenv("CAPTUNE_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["data", "check", str(corpus / "f-bom")])


# ----------------------------------------------------------------------------- from a real shell


def _shell(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CAPTUNE_FAULT", "CAPTUNE_DEBUG")}
    return subprocess.run([sys.executable, "-m", "captune", *map(str, args)], capture_output=True, text=True,
                          timeout=CASE_TIMEOUT_S, env=dict(env, OMP_NUM_THREADS="1"))


@pytest.mark.parametrize(("argv", "needles"), [
    pytest.param(lambda c: ["train", c / "malformed.yaml"], lambda c: [str(c / "malformed.yaml")], id="yaml"),
    pytest.param(lambda c: ["nosuch"], lambda c: ["No such command 'nosuch'", "captune --help"], id="usage"),
])
def test_shell_sees_one_line_and_exit_1(corpus: Corpus, argv, needles) -> None:
    res = _shell(*argv(corpus))
    assert_one_line_error(res.returncode, res.stdout, res.stderr, *needles(corpus))
