"""`captune data check` on a small dataset with every kind of defect, run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from captune.cli import main


def _dataset(root: Path) -> Path:
    images = root / "imgs"
    images.mkdir(parents=True)
    Image.new("RGB", (30, 20), (1, 2, 3)).save(images / "a.jpg")
    (images / "a_copy.jpg").write_bytes((images / "a.jpg").read_bytes())
    Image.new("RGB", (50, 40), (9, 9, 9)).save(images / "b.png")
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(images / "c.jpg", quality=90)
    (images / "c.jpg").write_bytes((images / "c.jpg").read_bytes()[:-2000])  # truncated download
    rows = [("a.jpg", "A thing .", "train"), ("a.jpg", "a thing", "train"), ("a_copy.jpg", "Copy", "train"),
            ("b.png", "", "val"), ("b.png", "Bee", "val"), ("c.jpg", "Cut", "test"), ("gone.jpg", "Lost", "test")]
    (root / "caps.jsonl").write_text("".join(
        json.dumps({"image": i, "caption": c, "split": s}) + "\n" for i, c, s in rows))
    return root / "caps.jsonl"


def test_check_reports_defects_and_exits_zero(tmp_path, capsys):
    path = _dataset(tmp_path)
    report_file = tmp_path / "report.json"
    assert main(["data", "check", str(path), "--image-root", str(tmp_path / "imgs"), "--out", str(report_file)]) == 0
    out = capsys.readouterr().out
    assert "train: 2 images, 3 captions" in out and "val: 1 images, 1 captions" in out
    assert "test: 1 images, 1 captions" in out
    assert "missing images: 1" in out and "gone.jpg" in out
    assert "unreadable images: 1" in out and "c.jpg: truncated" in out
    assert "duplicate images (identical files): 1\n  a.jpg, a_copy.jpg" in out
    assert "empty captions (dropped): 1" in out
    assert "duplicate captions within an image: 1\n  a: 2x 'a thing'" in out
    assert "image width: min 30 / median 30 / max 50" in out
    report = json.loads(report_file.read_text())
    assert report["fatal"] is False and report["images_per_split"] == {"train": 2, "val": 1, "test": 1}


def test_check_json_switch_prints_json_and_old_json_path_still_writes(tmp_path, capsys):
    """`--json` is a switch (JSON on stdout) as on every command; `--json PATH` works one more release."""
    path = _dataset(tmp_path)
    assert main(["data", "check", str(path), "--image-root", str(tmp_path / "imgs"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["images_per_split"] == {"train": 2, "val": 1, "test": 1}
    old = tmp_path / "old.json"
    assert main(["data", "check", str(path), "--image-root", str(tmp_path / "imgs"), "--json", str(old)]) == 0
    captured = capsys.readouterr()
    assert "--json PATH is deprecated" in captured.err and "--out PATH" in captured.err
    assert "train: 2 images, 3 captions" in captured.out
    assert json.loads(old.read_text())["images_per_split"] == printed["images_per_split"]


def test_check_header_only_misses_truncation_but_is_still_ok(tmp_path, capsys):
    path = _dataset(tmp_path)
    assert main(["data", "check", str(path), "--header-only", "--image-root", str(tmp_path / "imgs")]) == 0
    assert "unreadable images (header check only): 0" in capsys.readouterr().out


def test_check_exit_codes_for_fatal_problems(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "absent")]) == 1
    assert "absent: dataset path not found" in capsys.readouterr().err
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.jpg").write_text("not an image")
    (only_bad / "caps.jsonl").write_text('{"image": "x.jpg", "caption": "c"}\n')
    assert main(["data", "check", str(only_bad / "caps.jsonl")]) == 1
    captured = capsys.readouterr()
    assert "unreadable images: 1" in captured.out and "nothing loadable" in captured.out
    assert "no image with a caption could be loaded" in captured.err
