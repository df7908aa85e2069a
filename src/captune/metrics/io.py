"""Reading predictions (COCO results JSON) and references (dataset, COCO annotations, or a plain
mapping) with one-line `DataError`s that name the file and count what is wrong."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from captune.errors import DataError


def _read_json(path: Path, what: str) -> Any:
    if not path.exists():
        raise DataError(f"{path}: {what} file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; pass the {what} JSON file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; {what} must be a UTF-8 JSON file") from None
    if not text.strip():
        raise DataError(f"{path}: empty file; expected {what} JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_predictions(path: str | Path) -> dict[int, str]:
    """COCO results JSON `[{"image_id": int, "caption": str}, ...]` -> {image_id: caption}."""
    p = Path(path)
    data = _read_json(p, "predictions")
    shape = 'a JSON list of {"image_id": int, "caption": str} objects (COCO results format)'
    if not isinstance(data, list):
        raise DataError(f"{p}: expected {shape}, got a JSON {type(data).__name__}")
    if not data:
        raise DataError(f"{p}: no predictions (empty list); expected {shape}")
    malformed = [k for k, e in enumerate(data) if not isinstance(e, dict) or "image_id" not in e or "caption" not in e]
    if malformed:
        raise DataError(
            f"{p}: {len(malformed)} of {len(data)} entries are not objects with \"image_id\" and \"caption\" "
            f"(first: entry #{malformed[0]}); expected {shape}"
        )
    bad_ids = [k for k, e in enumerate(data) if not _is_int(e["image_id"])]
    if bad_ids:
        first = data[bad_ids[0]]["image_id"]
        raise DataError(
            f"{p}: {len(bad_ids)} of {len(data)} image_ids are not integers (first: {first!r} at entry #{bad_ids[0]})"
        )
    bad_caps = [k for k, e in enumerate(data) if not isinstance(e["caption"], str)]
    if bad_caps:
        first = data[bad_caps[0]]["caption"]
        raise DataError(
            f"{p}: {len(bad_caps)} of {len(data)} captions are not strings (first: {first!r} at entry #{bad_caps[0]})"
        )
    counts = Counter(e["image_id"] for e in data)
    dups = [i for i, c in counts.items() if c > 1]
    if dups:
        raise DataError(
            f"{p}: {len(dups)} image_ids appear more than once ({sum(counts[i] for i in dups)} entries; "
            f"first: {dups[0]}); give one caption per image"
        )
    return {e["image_id"]: e["caption"] for e in data}


def check_coverage(path: str | Path, predictions: dict[int, str], refs: dict[int, list[str]]) -> None:
    """Predictions must cover exactly the reference images."""
    missing = [i for i in refs if i not in predictions]
    extra = [i for i in predictions if i not in refs]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of {len(refs)} reference images have no prediction (first: {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} predicted image_ids are not in the references (first: {extra[0]})")
        raise DataError(f"{path}: " + "; ".join(parts) + "; check --refs/--split match the predictions")


def _refs_from_mapping(p: Path, data: dict[str, Any]) -> dict[int, list[str]]:
    refs: dict[int, list[str]] = {}
    bad_keys = []
    for key, value in data.items():
        try:
            image_id = int(key)
        except (TypeError, ValueError):
            bad_keys.append(key)
            continue
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DataError(f"{p}: references for image {key!r} must be a list of strings")
        if not value:
            raise DataError(f"{p}: image {key!r} has an empty reference list")
        refs[image_id] = value
    if bad_keys:
        raise DataError(f"{p}: {len(bad_keys)} keys are not integer image ids (first: {bad_keys[0]!r})")
    return refs


def _refs_from_coco(p: Path, data: dict[str, Any]) -> dict[int, list[str]]:
    anns = data.get("annotations")
    if not isinstance(anns, list) or not anns:
        raise DataError(f"{p}: COCO annotations file has no \"annotations\" list")
    refs: dict[int, list[str]] = {}
    bad = 0
    for a in anns:
        if not isinstance(a, dict) or not _is_int(a.get("image_id")) or not isinstance(a.get("caption"), str):
            bad += 1
            continue
        refs.setdefault(a["image_id"], []).append(a["caption"])
    if bad:
        raise DataError(f"{p}: {bad} of {len(anns)} annotations lack an integer image_id and a string caption")
    return refs


def load_references(spec: str | Path, split: str = "eval") -> tuple[dict[int, list[str]], list[str] | None, str]:
    """References from a dataset (via `captune.data`), a COCO captions annotations JSON, or a plain
    `{image_id: [captions]}` JSON. Returns (refs, training captions if known, a description)."""
    p = Path(spec).expanduser()
    if p.suffix.lower() == ".json" and p.is_file():
        data = _read_json(p, "references")
        if isinstance(data, dict) and "annotations" in data:
            return _refs_from_coco(p, data), None, f"{p} (COCO annotations)"
        if isinstance(data, dict) and not ({"images", "dataset"} & set(data)):
            return _refs_from_mapping(p, data), None, f"{p} (image id -> references)"
    if not p.exists():
        raise DataError(f"{p}: references not found (a dataset folder, COCO annotations JSON or {{id: [refs]}} JSON)")
    from captune.data import load_dataset

    dataset = load_dataset(p)
    records = dataset.select(split)
    if not records:
        raise DataError(f"{p}: split {split!r} has no images")
    refs = {r.image_id: list(r.refs) for r in records if r.refs}
    train = None
    if split not in ("train", "all") and "train" in dataset.available_splits():
        train = [c for r in dataset.select("train") for c in r.refs]
    return refs, train, f"{p} ({dataset.format}, split {split})"
