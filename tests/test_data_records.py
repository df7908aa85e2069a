"""Shared record helpers: caption normalisation, safe paths, tolerant text, stable subsets, split names."""

from __future__ import annotations

from pathlib import Path

import pytest

from captune.data import ImageRecord, LoadedDataset, normalize_caption
from captune.data.records import ProblemLog, read_text_lines, safe_relative, take_subset
from captune.errors import DataError


def test_normalize_caption_matches_karpathy_tokens():
    assert normalize_caption("A boy wearing a red t-shirt is running .") == "a boy wearing a red t shirt is running"
    assert normalize_caption("  Two  DOGS,\tplaying!  ") == "two dogs playing"
    assert normalize_caption("") == ""


def test_safe_relative_rejects_escapes(tmp_path):
    assert safe_relative("a/b.jpg", tmp_path, "x") == tmp_path / "a" / "b.jpg"
    assert safe_relative("a/../b.jpg", tmp_path, "x") == tmp_path / "b.jpg"
    for bad in ["../../etc/passwd", "/etc/passwd", "..\\..\\secret.jpg", "a/../../b.jpg", "", "."]:
        with pytest.raises(DataError) as info:
            safe_relative(bad, tmp_path, "captions.jsonl line 3")
        assert "captions.jsonl line 3" in str(info.value)


def test_read_text_lines_handles_bom_crlf_and_latin1(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbffirst\r\nsecond caf\xe9\r\nthird\n")
    log = ProblemLog()
    assert read_text_lines(path, log, "t.txt") == ["first", "second café", "third"]
    assert log.items == [("latin1_line", "t.txt line 2: not valid UTF-8; decoded as latin-1")]


def _records(n: int, split: str) -> list[ImageRecord]:
    return [ImageRecord(i, f"img{i:04d}", Path(f"/x/img{i:04d}.jpg"), split, ("c",)) for i in range(n)]


def test_subset_is_stable_nested_and_per_split():
    records = _records(50, "train") + [ImageRecord(100 + i, f"v{i}", Path("/v"), "val", ("c",)) for i in range(9)]
    small = take_subset(records, 5, seed=0)
    assert take_subset(list(reversed(records)), 5, seed=0) == list(reversed(small))  # order-independent choice
    assert [r.split for r in small].count("train") == 5 and [r.split for r in small].count("val") == 5
    assert set(small) <= set(take_subset(records, 10, seed=0))  # a larger subset contains the smaller
    assert take_subset(records, 5, seed=1) != small
    assert [r.image_id for r in small] == sorted(r.image_id for r in small)  # original order kept
    with pytest.raises(DataError):
        take_subset(records, 0, seed=0)


def test_select_splits_and_unknown_split_message():
    records = [*_records(3, "train"), ImageRecord(9, "v", Path("/v"), "val", ("c",)),
               ImageRecord(10, "t", Path("/t"), "test", ("c",))]
    dataset = LoadedDataset(records=records, format="jsonl", root=Path("/data"))
    assert len(dataset.select("train")) == 3
    assert [r.name for r in dataset.select("eval")] == ["v", "t"]
    assert dataset.select("dev") == dataset.select("val")
    assert len(dataset.select("all")) == 5
    with pytest.raises(DataError, match="train, val, test, eval, all"):
        dataset.select("tset")
