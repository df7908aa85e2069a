"""`load_dataset`: detect the format, call its loader, then apply the shared policies
(bad images, restval, stable subsets) so every format gets them the same way."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from captune.config import DataConfig
from captune.data.coco import is_coco, load_coco
from captune.data.flickr8k import load_flickr8k, looks_like_flickr8k
from captune.data.generic import find_metadata, load_captions_file, load_imagefolder, looks_like_captions_csv
from captune.data.images import open_image
from captune.data.karpathy import is_karpathy, load_karpathy, read_json
from captune.data.records import LoadedDataset, take_subset
from captune.errors import DataError

FORMATS = ("auto", "flickr8k", "karpathy", "coco", "jsonl", "csv", "imagefolder")
VERIFY_DRAFT_SIZE = (64, 64)
"""Verification decodes JPEGs at reduced scale: all the entropy-coded data is still read, so truncation
and corruption are caught at a fraction of the cost of a full decode."""


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def detect_format(path: Path) -> tuple[str, Any]:
    """(format, parsed JSON or None). JSON files are parsed once here and handed to the loader."""
    if not path.exists():
        raise DataError(f"{path}: dataset path not found; check data.path / the PATH argument")
    if path.is_dir():
        if looks_like_flickr8k(path):
            return "flickr8k", None
        if find_metadata(path):
            return "imagefolder", None
        karpathy = sorted(path.glob("dataset_*.json"))
        if len(karpathy) == 1:
            return detect_format(karpathy[0])
        if (path / "captions.txt").is_file() and looks_like_captions_csv(path / "captions.txt"):
            return "csv", None
        raise DataError(
            f"{path}: cannot tell the dataset format (expected Flickr8k_text/Flickr8k.token.txt, metadata.jsonl, "
            "or one dataset_*.json); pass the captions file itself or set data.format (--data-format)"
        )
    suffix = path.suffix.lower()
    if path.name in ("metadata.jsonl", "metadata.csv"):
        return "imagefolder", None
    if path.name == "Flickr8k.token.txt":
        return "flickr8k", None
    if suffix == ".json":
        data = read_json(path)
        if is_karpathy(data):
            return "karpathy", data
        if is_coco(data):
            return "coco", data
        if isinstance(data, list):
            return "jsonl", data
        raise DataError(f"{path}: JSON is neither a Karpathy split file, a COCO captions file, nor a list of rows; "
                        "check the file or set data.format (--data-format)")
    if suffix == ".jsonl":
        return "jsonl", None
    if suffix in (".csv", ".tsv"):
        return "csv", None
    if suffix == ".txt" and looks_like_captions_csv(path):
        return "csv", None
    raise DataError(f"{path}: unknown captions file type {suffix or '(none)'!r}; set data.format (--data-format) "
                    f"({', '.join(FORMATS[1:])})")


def _load_format(fmt: str, path: Path, image_root: str | os.PathLike[str] | None, restval_to_train: bool,
                 data: Any) -> LoadedDataset:
    if fmt == "flickr8k":
        root = path.parent if path.is_file() else path
        return load_flickr8k(root, image_root)
    if fmt == "karpathy":
        return load_karpathy(path, image_root, restval_to_train, data)
    if fmt == "coco":
        return load_coco(path, image_root, data)
    if fmt in ("jsonl", "csv"):
        if path.is_dir() and fmt == "csv" and (path / "captions.txt").is_file():
            path = path / "captions.txt"
        return load_captions_file(path, fmt, image_root, restval_to_train, data)
    if fmt == "imagefolder":
        return load_imagefolder(path, image_root, restval_to_train)
    raise DataError(f"unknown data format {fmt!r}; use one of {', '.join(FORMATS)}")


def verify_dataset_images(dataset: LoadedDataset, on_bad_image: str, threads: int | None = None) -> LoadedDataset:
    """Decode every image (reduced scale); drop unreadable ones (`skip`) or raise on the first (`error`)."""
    paths = [r.path for r in dataset.records]

    def check(path: Path) -> str | None:
        try:
            open_image(path, draft_size=VERIFY_DRAFT_SIZE)
        except DataError as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(max_workers=threads or default_threads()) as pool:
        errors = list(pool.map(check, paths))
    bad = [(record, error) for record, error in zip(dataset.records, errors, strict=True) if error is not None]
    if bad and on_bad_image == "error":
        raise DataError(f"{bad[0][1]} ({len(bad)} unreadable images in all; set data.on_bad_image=skip to drop them)")
    for record, error in bad:
        dataset.skipped_images.append(str(record.path))
        dataset.add_problem("unreadable_image", f"{error}; skipped")
    if bad:
        skipped = {id(record) for record, _ in bad}
        dataset.records = [r for r in dataset.records if id(r) not in skipped]
    return dataset


def load_dataset(
    path: str | os.PathLike[str],
    format: str = "auto",
    image_root: str | os.PathLike[str] | None = None,
    max_images: int | None = None,
    subset_seed: int = 0,
    on_bad_image: str = "skip",
    restval_to_train: bool = False,
    verify_images: bool = False,
) -> LoadedDataset:
    """Load any supported captions dataset into ImageRecords.

    Missing image files are always dropped and reported (or fatal with `on_bad_image="error"`);
    `verify_images` also decodes every image. `max_images` keeps a stable seeded subset per split.
    """
    if format not in FORMATS:
        raise DataError(f"unknown data format {format!r}; use one of {', '.join(FORMATS)}")
    if on_bad_image not in ("skip", "error"):
        raise DataError(f"on_bad_image must be 'skip' or 'error', got {on_bad_image!r}")
    source = Path(path).expanduser()
    data = None
    if format == "auto":
        format, data = detect_format(source)
    elif not source.exists():
        raise DataError(f"{source}: dataset path not found; check data.path / the PATH argument")
    elif format in ("karpathy", "coco") and source.is_dir():
        found = sorted(source.glob("dataset_*.json" if format == "karpathy" else "captions_*.json"))
        if len(found) != 1:
            raise DataError(f"{source}: is a folder; pass the {format} JSON file itself")
        source = found[0]
    if image_root is not None:
        image_root = Path(image_root).expanduser()
    dataset = _load_format(format, source, image_root, restval_to_train, data)
    missing = dataset.problem_counts.get("missing_image", 0)
    if missing and on_bad_image == "error":
        first = dataset.problems_by_kind["missing_image"][0]
        raise DataError(f"{first} ({missing} missing in all; set data.on_bad_image=skip to drop them)")
    if max_images is not None:
        dataset.records = take_subset(dataset.records, max_images, subset_seed)
    if verify_images:
        verify_dataset_images(dataset, on_bad_image)
    return dataset


def load_dataset_from_config(cfg: DataConfig) -> LoadedDataset:
    """Load what a `DataConfig` describes (relative paths are relative to the working directory)."""
    return load_dataset(
        cfg.path,
        format=cfg.format,
        image_root=cfg.image_root,
        max_images=cfg.max_images,
        subset_seed=cfg.subset_seed,
        on_bad_image=cfg.on_bad_image,
        restval_to_train=cfg.restval_to_train,
        verify_images=cfg.verify_images,
    )
