"""Karpathy, COCO, JSONL/CSV and imagefolder loaders, format detection and bad-image policies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from captune.config import DataConfig, config_from_dict
from captune.data import detect_format, load_dataset, load_dataset_from_config
from captune.errors import DataError


def _images(folder: Path, *names: str) -> None:
    for k, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8 + k, 8), (k * 20, 0, 0)).save(path)


def _karpathy(path: Path, images: list[dict]) -> Path:
    path.write_text(json.dumps({"dataset": "coco", "images": images}))
    return path


def _k(name: str, split: str, raws: list[str], imgid: int, **extra) -> dict:
    return {"filename": name, "split": split, "imgid": imgid,
            "sentences": [{"raw": r, "tokens": r.lower().split()} for r in raws], **extra}


def test_karpathy_coco_style_with_restval(tmp_path):
    _images(tmp_path, "train2014/t1.jpg", "val2014/v1.jpg", "val2014/v2.jpg", "val2014/r1.jpg")
    path = _karpathy(tmp_path / "dataset_coco.json", [
        _k("t1.jpg", "train", ["A cat .", ""], 0, filepath="train2014", cocoid=11),
        _k("v1.jpg", "val", ["A dog ."], 1, filepath="val2014", cocoid=22),
        _k("v2.jpg", "test", ["A cow ."], 2, filepath="val2014", cocoid=33),
        _k("r1.jpg", "restval", ["A hen ."], 3, filepath="val2014", cocoid=44),
        _k("gone.jpg", "test", ["Lost ."], 4, filepath="val2014", cocoid=55),
        {"split": "train", "sentences": []},
    ])
    data = load_dataset(path)
    assert data.format == "karpathy"
    assert [(r.image_id, r.name, r.split) for r in data.records] == [
        (11, "t1", "train"), (22, "v1", "val"), (33, "v2", "test"), (44, "r1", "restval")]
    assert data.records[0].refs == ("A cat .",)
    assert data.records[0].path == tmp_path / "train2014" / "t1.jpg"
    assert data.problem_counts == {"empty_caption": 1, "missing_image": 1, "malformed_entry": 1}
    assert data.available_splits() == ["train", "val", "test", "restval"]
    folded = load_dataset(path, restval_to_train=True)
    assert [r.split for r in folded.records] == ["train", "val", "test", "train"]
    with pytest.raises(DataError, match=r"gone\.jpg not found"):
        load_dataset(path, on_bad_image="error")


def test_karpathy_finds_flickr_image_folder_or_asks_for_it(tmp_path):
    _images(tmp_path / "Flicker8k_Dataset", "x.jpg")
    path = _karpathy(tmp_path / "dataset_flickr8k.json", [_k("x.jpg", "val", ["One ."], 7)])
    data = load_dataset(path)
    assert data.records[0].image_id == 7 and data.image_root == tmp_path / "Flicker8k_Dataset"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = _karpathy(elsewhere / "dataset_flickr8k.json", [_k("x.jpg", "val", ["One ."], 7)])
    with pytest.raises(DataError, match=r"none of its 1 images exist .* pass --image-root"):
        load_dataset(moved)
    assert load_dataset(moved, image_root=tmp_path / "Flicker8k_Dataset").records[0].name == "x"


def test_coco_captions_json(tmp_path):
    _images(tmp_path / "val2014", "COCO_val2014_1.jpg", "COCO_val2014_2.jpg")
    (tmp_path / "annotations").mkdir()
    path = tmp_path / "annotations" / "captions_val2014.json"
    path.write_text(json.dumps({
        "images": [{"id": 391, "file_name": "COCO_val2014_1.jpg"}, {"id": 5, "file_name": "COCO_val2014_2.jpg"},
                   {"id": 391, "file_name": "again.jpg"}],
        "annotations": [{"image_id": 391, "caption": "A man ."}, {"image_id": 5, "caption": "A bus ."},
                        {"image_id": 391, "caption": "A guy ."}, {"image_id": 999, "caption": "Orphan ."},
                        {"image_id": 5, "caption": " "}, {"caption": "no id"}],
    }))
    data = load_dataset(path)
    assert data.format == "coco" and data.image_root == tmp_path / "val2014"
    assert [(r.image_id, r.split, r.refs) for r in data.records] == [
        (391, "val", ("A man .", "A guy .")), (5, "val", ("A bus .",))]
    assert data.problem_counts == {"duplicate_id": 1, "no_image": 1, "empty_caption": 1, "malformed_line": 1}
    assert any("image_id 999 names no image" in p for p in data.problems)


def test_coco_rejects_escaping_file_name(tmp_path):
    path = tmp_path / "captions_test.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "../../etc/passwd"}],
                                "annotations": [{"image_id": 1, "caption": "x"}]}))
    with pytest.raises(DataError, match=r"images\[0\].*'../../etc/passwd' points outside"):
        load_dataset(path, image_root=tmp_path)


def test_jsonl_rows_per_caption_and_lists(tmp_path):
    _images(tmp_path / "imgs", "a.jpg", "b.png", "c.jpg")
    rows = [
        '{"image": "a.jpg", "caption": "First .", "split": "train", "image_id": 10}',
        '{"image": "a.jpg", "caption": "Second .", "split": "train", "image_id": 10}',
        '{"file_name": "b.png", "captions": ["One", "", "Two"], "split": "validation", "image_id": 20}',
        '{not json',
        '{"image": "c.jpg", "text": "Third", "split": "test", "image_id": 30}',
        '{"caption": "no image"}',
        '{"image": "a.jpg", "caption": "clash", "split": "test", "image_id": 10}',
    ]
    (tmp_path / "caps.jsonl").write_text("\n".join(rows) + "\n")
    data = load_dataset(tmp_path / "caps.jsonl", image_root=tmp_path / "imgs")
    assert data.format == "jsonl"
    assert [(r.image_id, r.name, r.split, r.refs) for r in data.records] == [
        (10, "a", "train", ("First .", "Second .", "clash")), (20, "b", "val", ("One", "Two")),
        (30, "c", "test", ("Third",))]
    assert data.problem_counts == {"empty_caption": 1, "malformed_line": 2, "split_conflict": 1}


def test_json_list_without_split_goes_to_train(tmp_path):
    _images(tmp_path / "images", "a.jpg")
    (tmp_path / "caps.json").write_text(json.dumps([{"file_name": "a.jpg", "caption": "x"}]))
    data = load_dataset(tmp_path / "caps.json")
    assert data.format == "jsonl" and data.records[0].split == "train" and data.records[0].image_id == 0
    assert data.notes and "no split column" in data.notes[0]


def test_csv_kaggle_captions_txt_and_tsv(tmp_path):
    _images(tmp_path / "Images", "a.jpg", "b.jpg")
    (tmp_path / "captions.txt").write_text(
        "image,caption\r\na.jpg,A dog , running in a field .\r\na.jpg,\"Quoted, fine\"\r\nb.jpg,A cat\r\nb.jpg\r\n",
        encoding="utf-8")
    data = load_dataset(tmp_path)  # folder with captions.txt + Images/ is detected
    assert data.format == "csv"
    assert data.records[0].refs == ("A dog , running in a field .", "Quoted, fine")
    assert data.problem_counts == {"malformed_line": 1}
    (tmp_path / "caps.tsv").write_text("file_name\tcaptions\tsplit\nb.jpg\t[\"x\", \"y\"]\ttest\n")
    tsv = load_dataset(tmp_path / "caps.tsv", image_root=tmp_path / "Images")
    assert tsv.records[0].refs == ("x", "y") and tsv.records[0].split == "test"
    (tmp_path / "bad.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(DataError, match="needs an image column"):
        load_dataset(tmp_path / "bad.csv")


def test_imagefolder_with_split_folders(tmp_path):
    root = tmp_path / "hf"
    _images(root, "train/a.png", "train/b.png", "test/c.png")
    (root / "train" / "metadata.jsonl").write_text(
        '{"file_name": "a.png", "text": "an a"}\n{"file_name": "b.png", "caption": "a b"}\n')
    (root / "test" / "metadata.jsonl").write_text('{"file_name": "c.png", "text": "a c"}\n')
    assert detect_format(root)[0] == "imagefolder"
    data = load_dataset(root)
    assert [(r.name, r.split, r.refs) for r in data.records] == [
        ("train/a", "train", ("an a",)), ("train/b", "train", ("a b",)), ("test/c", "test", ("a c",))]
    flat = tmp_path / "flat"
    _images(flat, "x.jpg", "validation/y.jpg")
    (flat / "metadata.jsonl").write_text('{"file_name": "x.jpg", "text": "x"}\n'
                                         '{"file_name": "validation/y.jpg", "text": "y"}\n'
                                         '{"file_name": "../../etc/passwd", "text": "z"}\n')
    with pytest.raises(DataError, match=r"metadata\.jsonl line 3: image name '\.\./\.\./etc/passwd' points outside"):
        load_dataset(flat)


def test_detection_errors_name_the_path(tmp_path):
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(DataError, match=r"unknown captions file type '\.md'"):
        load_dataset(tmp_path / "notes.md")
    (tmp_path / "odd.json").write_text('{"hello": 1}')
    with pytest.raises(DataError, match="neither a Karpathy"):
        load_dataset(tmp_path / "odd.json")
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(DataError, match="malformed JSON at line 1"):
        load_dataset(tmp_path / "broken.json")
    with pytest.raises(DataError, match="unknown data format"):
        load_dataset(tmp_path, format="parquet")


def test_verify_images_skip_or_error(tmp_path):
    _images(tmp_path, "good.jpg", "bad.jpg")
    (tmp_path / "bad.jpg").write_bytes((tmp_path / "bad.jpg").read_bytes()[:40])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "caps.jsonl").write_text(
        "".join(json.dumps({"image": n, "caption": "c", "split": "test"}) + "\n"
                for n in ["good.jpg", "bad.jpg", "empty.jpg"]))
    assert len(load_dataset(tmp_path / "caps.jsonl").records) == 3  # no decoding unless asked
    data = load_dataset(tmp_path / "caps.jsonl", verify_images=True)
    assert [r.name for r in data.records] == ["good"]
    assert data.skipped_images == [str(tmp_path / "bad.jpg"), str(tmp_path / "empty.jpg")]
    assert data.problem_counts == {"unreadable_image": 2}
    with pytest.raises(DataError, match=r"bad\.jpg: .*2 unreadable images"):
        load_dataset(tmp_path / "caps.jsonl", verify_images=True, on_bad_image="error")


def test_data_config_fields_reach_the_loader(tmp_path):
    _images(tmp_path, "a.jpg")
    (tmp_path / "caps.jsonl").write_text('{"image": "a.jpg", "caption": "c", "split": "val"}\n')
    cfg = config_from_dict({"data": {"path": str(tmp_path / "caps.jsonl"), "format": "jsonl",
                                     "verify_images": True, "on_bad_image": "error"}}).data
    assert isinstance(cfg, DataConfig)
    assert load_dataset_from_config(cfg).select("val")[0].name == "a"
