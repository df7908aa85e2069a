"""Generic captions files (JSONL, JSON list, CSV/TSV) and Hugging Face imagefolder (`metadata.jsonl`).

Rows name an image (`file_name`, `image`, `filename`, `path`, ...) and either one caption per row
(`caption` / `text`) or a list per image (`captions`, `refs`, `sentences`). Rows for the same image
are merged in file order. Without a `split` column every image is put in `train`, as Hugging Face
`datasets` does, and a note says so.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captune.data.records import (
    SPLIT_ALIASES,
    Entry,
    LoadedDataset,
    ProblemLog,
    canonical_split,
    clean_captions,
    finish_dataset,
    read_text_lines,
)
from captune.errors import DataError

IMAGE_KEYS = ("file_name", "image", "filename", "image_path", "path", "file", "img", "image_file")
CAPTION_KEYS = ("caption", "text", "captions", "refs", "references", "sentences", "raw", "sentence")
METADATA_NAMES = ("metadata.jsonl", "metadata.csv")


@dataclass
class _Image:
    file: str
    where: str
    split: str | None
    captions: list[str] = field(default_factory=list)
    image_id: int | None = None


def _image_value(row: dict[str, Any]) -> str | None:
    for key in IMAGE_KEYS:
        value = row.get(key)
        if isinstance(value, dict):  # datasets' Image feature: {"path": ..., "bytes": ...}
            value = value.get("path")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _caption_values(row: dict[str, Any], from_csv: bool) -> list[Any] | None:
    for key in CAPTION_KEYS:
        if key not in row:
            continue
        value = row[key]
        if from_csv and isinstance(value, str) and value.lstrip().startswith("["):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        if isinstance(value, list):
            return [v.get("raw") if isinstance(v, dict) else v for v in value]
        return [value]
    return None


def _int_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


class _Collector:
    """Merges rows into images in first-appearance order and reports row-level defects."""

    def __init__(self, log: ProblemLog, restval_to_train: bool) -> None:
        self.log = log
        self.restval_to_train = restval_to_train
        self.images: dict[str, _Image] = {}
        self.any_split = False

    def add(self, row: Any, where: str, prefix: str = "", folder_split: str | None = None,
            from_csv: bool = False) -> None:
        if not isinstance(row, dict):
            self.log.add("malformed_line", f"{where}: expected an object with image and caption; skipped")
            return
        file = _image_value(row)
        if file is None:
            self.log.add("malformed_line", f"{where}: no image column ({', '.join(IMAGE_KEYS[:4])}, ...); skipped")
            return
        captions = _caption_values(row, from_csv)
        if captions is None:
            self.log.add("malformed_line", f"{where}: no caption column (caption, text, captions); skipped")
            return
        split = folder_split
        raw_split = row.get("split")
        if split is None and raw_split not in (None, ""):
            split = canonical_split(raw_split, self.restval_to_train)
            if split is None:
                self.log.add("unknown_split", f"{where}: unknown split {raw_split!r}; skipped")
                return
        if split is None and prefix == "":
            first = file.replace("\\", "/").split("/", 1)[0].lower()
            if "/" in file.replace("\\", "/") and first in SPLIT_ALIASES:
                split = canonical_split(first, self.restval_to_train)
        self.any_split = self.any_split or split is not None
        key = f"{prefix}{file}"
        image = self.images.get(key)
        if image is None:
            image = self.images[key] = _Image(file=key, where=where, split=split, image_id=_int_id(row.get("image_id")))
        elif split is not None and image.split is not None and split != image.split:
            self.log.add("split_conflict", f"{where}: '{file}' already in split {image.split!r} "
                                           f"({image.where}); kept there")
        for k, caption in enumerate(captions):
            if caption is not None and not isinstance(caption, str):
                self.log.add("malformed_line", f"{where}: caption {k} is not text; skipped")
                continue
            if caption is None or not caption.strip():
                self.log.add("empty_caption", f"{where}: empty caption for '{file}'; dropped")
                continue
            image.captions.append(caption)

    def entries(self, default_split: str) -> list[Entry]:
        result = []
        for image in self.images.values():
            refs = clean_captions(image.captions, self.log, image.where)
            result.append(Entry(file=image.file, split=image.split or default_split, refs=refs,
                                where=image.where, image_id=image.image_id))
        return result


def _read_jsonl(path: Path, collector: _Collector, log: ProblemLog, prefix: str = "",
                folder_split: str | None = None) -> None:
    label = path.name if not prefix else f"{prefix}{path.name}"
    for number, line in enumerate(read_text_lines(path, log, label), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            log.add("malformed_line", f"{label} line {number}: not valid JSON ({exc.msg}); skipped")
            continue
        collector.add(row, f"{label} line {number}", prefix, folder_split)


def _read_csv(path: Path, collector: _Collector, log: ProblemLog, prefix: str = "",
              folder_split: str | None = None) -> None:
    label = path.name if not prefix else f"{prefix}{path.name}"
    lines = read_text_lines(path, log, label)
    if not lines:
        raise DataError(f"{path}: empty file; it needs a header row such as 'image,caption'")
    header_line = lines[0]
    delimiter = "\t" if path.suffix.lower() == ".tsv" or ("\t" in header_line and "," not in header_line) else ","
    reader = csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except (StopIteration, csv.Error) as exc:
        raise DataError(f"{path}: unreadable CSV header ({exc}); the first row must name the columns") from None
    if not any(h in IMAGE_KEYS for h in header) or not any(h in CAPTION_KEYS for h in header):
        raise DataError(f"{path}: header {header} needs an image column (e.g. 'image') and a caption column "
                        "(e.g. 'caption'); rename the columns")
    caption_last = header[-1] in CAPTION_KEYS
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            log.add("malformed_line", f"{label} line {reader.line_num}: {exc}; skipped")
            continue
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) > len(header) and caption_last:
            # Unquoted commas inside the last (caption) column, as in Kaggle's Flickr8K captions.txt.
            row = [*row[: len(header) - 1], delimiter.join(row[len(header) - 1:])]
        if len(row) != len(header):
            log.add("malformed_line", f"{label} line {reader.line_num}: {len(row)} fields, header has "
                                      f"{len(header)}; skipped")
            continue
        collector.add(dict(zip(header, row, strict=True)), f"{label} line {reader.line_num}", prefix, folder_split,
                      from_csv=True)


def looks_like_captions_csv(path: Path) -> bool:
    """A `.txt`/`.csv` whose first line names an image and a caption column (Kaggle's captions.txt)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            first = fh.readline()
    except OSError:
        return False
    columns = {c.strip().lower() for c in first.replace("\t", ",").split(",")}
    return bool(columns & set(IMAGE_KEYS)) and bool(columns & set(CAPTION_KEYS))


def _finish(path: Path, fmt: str, collector: _Collector, log: ProblemLog, image_root: str | os.PathLike[str] | None,
            candidates: list[Path]) -> LoadedDataset:
    if not collector.any_split:
        log.note(f"{path.name}: no split column; every image is put in 'train' (add a 'split' column to change)")
    return finish_dataset(collector.entries("train"), image_root, candidates, log, path, fmt)


def load_captions_file(
    path: str | os.PathLike[str],
    fmt: str,
    image_root: str | os.PathLike[str] | None = None,
    restval_to_train: bool = False,
    data: Any = None,
) -> LoadedDataset:
    """Read a JSONL/JSON-list (`fmt="jsonl"`) or CSV/TSV (`fmt="csv"`) captions file."""
    path = Path(os.path.abspath(path))
    if not path.is_file():
        raise DataError(f"{path}: captions file not found; check data.path")
    log = ProblemLog()
    collector = _Collector(log, restval_to_train)
    if fmt == "csv":
        _read_csv(path, collector, log)
    elif isinstance(data, list):
        for position, row in enumerate(data):
            collector.add(row, f"{path.name}[{position}]")
    else:
        _read_jsonl(path, collector, log)
    base = path.parent
    return _finish(path, fmt, collector, log, image_root, [base, base / "images", base / "Images"])


def find_metadata(root: Path) -> list[tuple[Path, str]]:
    """Imagefolder metadata files with the folder prefix their `file_name`s are relative to."""
    found = []
    for name in METADATA_NAMES:
        if (root / name).is_file():
            found.append((root / name, ""))
            break
    if root.is_dir():
        rank = {"train": 0, "val": 1, "test": 2}

        def split_order(folder: Path) -> tuple[int, str]:
            return rank.get(SPLIT_ALIASES.get(folder.name.lower(), ""), 3), folder.name

        children = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        for child in sorted(children, key=split_order):
            for name in METADATA_NAMES:
                if (child / name).is_file():
                    found.append((child / name, f"{child.name}/"))
                    break
    return found


def load_imagefolder(
    root: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    restval_to_train: bool = False,
) -> LoadedDataset:
    """Read a Hugging Face imagefolder: `metadata.jsonl` at the root and/or in `train/`, `test/`, ..."""
    root = Path(os.path.abspath(root))
    if root.is_file() and root.name in METADATA_NAMES:
        root = root.parent
    if not root.is_dir():
        raise DataError(f"{root}: imagefolder not found; check data.path")
    metadata = find_metadata(root)
    if not metadata:
        raise DataError(f"{root}: no metadata.jsonl found (at the top or in split folders); add one with "
                        "'file_name' and 'text' columns")
    log = ProblemLog()
    collector = _Collector(log, restval_to_train)
    for meta_path, prefix in metadata:
        folder_split = canonical_split(prefix.rstrip("/"), restval_to_train) if prefix else None
        if prefix and folder_split is None:
            log.note(f"{prefix}{meta_path.name}: folder name is not a split name; using the rows' 'split'")
        if meta_path.suffix == ".csv":
            _read_csv(meta_path, collector, log, prefix, folder_split)
        else:
            _read_jsonl(meta_path, collector, log, prefix, folder_split)
    return _finish(root, "imagefolder", collector, log, image_root, [root])
