"""Flickr8K native layout: a defect-ridden fixture built here, and the real data in ../shared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from captune.cli import main
from captune.config import DataConfig
from captune.data import load_dataset, load_dataset_from_config
from captune.data.flickr8k import load_flickr8k
from captune.errors import DataError


def make_flickr8k(root: Path, token_lines: list[bytes], splits: dict[str, list[str]], images: list[str]) -> Path:
    (root / "Flicker8k_Dataset").mkdir(parents=True)
    (root / "Flickr8k_text").mkdir()
    for k, name in enumerate(images):
        Image.new("RGB", (16 + k, 12), (10 * k, 100, 50)).save(root / "Flicker8k_Dataset" / name)
    (root / "Flickr8k_text" / "Flickr8k.token.txt").write_bytes(b"".join(token_lines))
    files = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}
    for split, names in splits.items():
        (root / "Flickr8k_text" / files[split]).write_text("".join(f"{n}\n" for n in names))
    return root


@pytest.fixture
def messy_flickr8k(tmp_path) -> Path:
    lines = [
        b"\xef\xbb\xbfb.jpg#0\tA dog runs .\r\n",           # BOM + CRLF
        b"b.jpg#1\tA brown dog .\r\n",
        b"a.jpg#0\tA caf\xe9 by the sea .\n",              # latin-1 byte
        b"a.jpg#1\tA man sits .\n",
        b"this line is malformed\n",
        b"a.jpg#2\t   \n",                                # empty caption
        b"a.jpg#1\tA duplicate id .\n",                     # duplicate id
        b"ghost.jpg.1#0\tNo such image .\n",                # id with no image (like 2258277193_586949ec62.jpg.1)
        b"ghost.jpg.1#1\tStill none .\n",
        b"c.jpg#0\tA cat .\n",
        b"d.png#0 A bird .\n",                              # space instead of tab
        b"e.jpg#0\tIn no split .\n",
        b"\n",
    ]
    splits = {"train": ["a.jpg", "b.jpg", "unknown.jpg"], "val": ["c.jpg", "a.jpg"], "test": ["d.png"]}
    return make_flickr8k(tmp_path / "f8k", lines, splits, ["a.jpg", "b.jpg", "c.jpg", "d.png", "e.jpg", "f.jpg"])


def test_native_loader_reports_every_defect(messy_flickr8k):
    data = load_dataset(messy_flickr8k)
    assert data.format == "flickr8k"
    assert [(r.image_id, r.name, r.split) for r in data.records] == [
        (0, "a", "train"), (1, "b", "train"), (2, "c", "val"), (3, "d", "test")]
    assert data.records[0].refs == ("A café by the sea .", "A man sits .")
    assert data.records[1].refs == ("A dog runs .", "A brown dog .")
    assert data.records[0].path == messy_flickr8k.resolve() / "Flicker8k_Dataset" / "a.jpg"
    assert [(r.image_id, r.name, r.split) for r in data.unsplit] == [(4, "e", "unsplit")]
    assert data.images_on_disk == 6
    counts = data.problem_counts
    assert counts == {"latin1_line": 1, "malformed_line": 1, "empty_caption": 1, "duplicate_id": 1,
                      "no_image": 1, "split_unknown_image": 1, "split_duplicate": 1, "uncaptioned_image": 1}
    assert "token file line 8: id 'ghost.jpg.1' names no image (2 captions ignored)" in data.problems
    assert any("Flickr_8k.trainImages.txt line 3: 'unknown.jpg' names no image" in p for p in data.problems)


def test_native_loader_rejects_escaping_names(tmp_path):
    root = make_flickr8k(tmp_path / "evil", [b"../../etc/passwd#0\tgotcha\n"], {"train": []}, ["a.jpg"])
    with pytest.raises(DataError, match=r"token file line 1: image name '../../etc/passwd' points outside"):
        load_dataset(root)


def test_missing_folders_give_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "only_text" / "Flickr8k_text").mkdir(parents=True)
    (tmp_path / "only_text" / "Flickr8k_text" / "Flickr8k.token.txt").write_text("a.jpg#0\tx\n")
    with pytest.raises(DataError, match=r"no image folder .* pass --image-root"):
        load_flickr8k(tmp_path / "only_text")


def test_no_split_files_puts_everything_in_train(tmp_path):
    root = make_flickr8k(tmp_path / "nosplit", [b"a.jpg#0\tx\n", b"b.jpg#0\ty\n"], {}, ["a.jpg", "b.jpg"])
    data = load_dataset(root)
    assert [r.split for r in data.records] == ["train", "train"]
    assert data.problem_counts["missing_split_file"] == 3 and data.notes


def test_config_and_subset(messy_flickr8k):
    data = load_dataset_from_config(DataConfig(path=str(messy_flickr8k), max_images=1, subset_seed=3))
    assert sorted(data.split_counts().values()) == [1, 1, 1]
    assert data.records == load_dataset(messy_flickr8k, max_images=1, subset_seed=3).records


# ----------------------------------------------------------------------------- real data (../shared)


@pytest.fixture(scope="module")
def real_native(flickr8k_dir):
    return load_dataset(flickr8k_dir)


@pytest.mark.shared
def test_real_flickr8k_native(real_native, flickr8k_dir):
    data = real_native
    assert data.format == "flickr8k" and data.images_on_disk == 8091
    assert data.split_counts() == {"train": 6000, "val": 1000, "test": 1000}
    assert len(data.select("eval")) == 2000
    assert all(len(r.refs) == 5 for r in data.records)
    assert len(data.unsplit) == 91 and all(len(r.refs) == 5 for r in data.unsplit)
    assert data.problems_by_kind["no_image"] == [
        "token file line 6731: id '2258277193_586949ec62.jpg.1' names no image (5 captions ignored)"]
    assert data.problem_counts == {"no_image": 1}
    assert data.records[0].name == "2513260012_03d33305cf" and data.records[0].image_id == 0


@pytest.mark.shared
def test_real_karpathy_json_agrees_with_native(real_native, flickr8k_dir):
    karpathy = load_dataset(flickr8k_dir / "dataset_flickr8k.json")
    assert karpathy.format == "karpathy" and karpathy.problems == []
    assert karpathy.records == real_native.records  # same ids, names, paths, splits and raw captions
    raw = json.loads((flickr8k_dir / "dataset_flickr8k.json").read_text())
    by_id = {i["imgid"]: i for i in raw["images"]}
    for record in karpathy.records[::997]:
        assert record.path.name == by_id[record.image_id]["filename"]
        assert record.refs == tuple(s["raw"] for s in by_id[record.image_id]["sentences"])


@pytest.mark.shared
def test_real_flickr8k_check_command(flickr8k_dir, capsys):
    assert main(["data", "check", str(flickr8k_dir)]) == 0
    out = capsys.readouterr().out
    assert "images on disk: 8091" in out
    assert "train: 6000 images, 30000 captions" in out
    assert "val: 1000 images, 5000 captions" in out and "test: 1000 images, 5000 captions" in out
    assert "captions per image: 5 captions: 8000 images" in out
    assert "captioned images in no split: 91" in out
    assert "ids with no image: 1" in out and "2258277193_586949ec62.jpg.1" in out
    assert "missing images: 0" in out and "unreadable images: 0" in out
    assert "image width: min 224 / median 224 / max 224" in out
    assert "duplicate images (identical files): 1" in out
