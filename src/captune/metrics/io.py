"""Reading predictions (COCO results JSON) and references (dataset, COCO annotations, or a plain
mapping) with one-line `DataError`s that name the file and count what is wrong.

Predictions name each image by COCO `image_id` or by file (`file_name` or `image`: a name or path as
`captune caption --json`, LAVIS or a notebook writes it), so captions from other tools score against a
Flickr8K or Karpathy reference set without remapping. A file name is matched against the references'
image paths by its longest trailing path that names a reference image ("Flicker8k_Dataset/x.jpg",
"x.jpg" and "x" all find x.jpg), extension ignored; a name that matches two images is an error, not a guess.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
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


NAME_KEYS = ("file_name", "image")


def _name_key(entry: dict[str, Any]) -> str | None:
    return next((k for k in NAME_KEYS if k in entry), None)


def _name_parts(name: str) -> tuple[str, ...]:
    """A file name or path as comparable parts: POSIX separators, no leading ./ or /, no image extension."""
    from captune.data.records import name_of

    cleaned = str(name).strip().replace("\\", "/")
    return tuple(part for part in PurePosixPath(name_of(cleaned)).parts if part not in ("/", ".", ""))


class ImageNames:
    """Reference images by name: every trailing part of each image's path (relative to its image folder)
    points at the images it could mean, so the longest trailing part a prediction shares decides."""

    def __init__(self, names: Mapping[int, str]) -> None:
        self.index: dict[tuple[str, ...], list[int]] = {}
        for image_id, name in names.items():
            parts = _name_parts(name)
            for k in range(len(parts)):
                self.index.setdefault(parts[k:], []).append(image_id)
        self.names = dict(names)

    def resolve(self, name: str) -> list[int]:
        """The reference images `name` can mean: one, several (ambiguous) or none."""
        parts = _name_parts(name)
        for k in range(len(parts)):
            hits = self.index.get(parts[k:])
            if hits:
                return hits
        return []


def _by_names(p: Path, data: list[dict[str, Any]], names: Mapping[int, str] | None,
              described: str) -> list[int]:
    """Each name-keyed entry's reference image id, or a one-line error for the first bad name."""
    texts = [e[_name_key(e)] for e in data]  # type: ignore[index]
    bad = [k for k, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise DataError(f"{p}: {len(bad)} of {len(data)} file names are not non-empty strings "
                        f"(first: {texts[bad[0]]!r} at entry #{bad[0]}); give each image's file name")
    if names is None:
        raise DataError(f"{p}: predictions name images by file name, but the references ({described}) have no "
                        "file names; pass a dataset folder or COCO annotations JSON as --refs, or give image_ids")
    index = ImageNames(names)
    found = [index.resolve(t) for t in texts]
    unknown = [k for k, ids in enumerate(found) if not ids]
    if unknown:
        example = next(iter(names.values()), "?")
        raise DataError(f"{p}: {len(unknown)} of {len(data)} file names match no reference image (first: "
                        f"{texts[unknown[0]]!r} at entry #{unknown[0]}); check --refs/--split, or name images as "
                        f"the references do (e.g. {example!r})")
    ambiguous = [k for k, ids in enumerate(found) if len(ids) > 1]
    if ambiguous:
        k = ambiguous[0]
        which = ", ".join(repr(names[i]) for i in found[k][:3])
        raise DataError(f"{p}: {len(ambiguous)} file names match more than one reference image (first: "
                        f"{texts[k]!r} at entry #{k} matches {which}); give the path inside the image folder")
    return [ids[0] for ids in found]


def _refuse_bad(p: Path, data: list[dict[str, Any]], key: str, ok: Callable[[Any], bool], what: str) -> None:
    """A one-line error when any entry's `key` fails `ok`: how many, and the first."""
    bad = [k for k, e in enumerate(data) if not ok(e[key])]
    if bad:
        raise DataError(f"{p}: {len(bad)} of {len(data)} {what} (first: {data[bad[0]][key]!r} at entry #{bad[0]})")


def load_predictions(path: str | Path, names: Mapping[int, str] | None = None,
                     described: str = "the references") -> dict[int, str]:
    """Predictions JSON -> {image_id: caption}: a list of {"image_id": int, "caption": str} (COCO results
    format), or of {"file_name" or "image": str, "caption": str} resolved against `names` (reference
    image id -> its path inside the image folder), one key style for the whole file."""
    p = Path(path)
    data = _read_json(p, "predictions")
    shape = ('a JSON list of {"image_id": int, "caption": str} objects (COCO results format) or of '
             '{"file_name": str, "caption": str}')
    if not isinstance(data, list):
        raise DataError(f"{p}: expected {shape}, got a JSON {type(data).__name__}")
    if not data:
        raise DataError(f"{p}: no predictions (empty list); expected {shape}")
    malformed = [k for k, e in enumerate(data) if not isinstance(e, dict) or "caption" not in e
                 or ("image_id" not in e and _name_key(e) is None)]
    if malformed:
        raise DataError(
            f"{p}: {len(malformed)} of {len(data)} entries are not objects with \"image_id\" (or \"file_name\") "
            f"and \"caption\" (first: entry #{malformed[0]}); expected {shape}"
        )
    by_id = [k for k, e in enumerate(data) if "image_id" in e]
    if by_id and len(by_id) < len(data):
        first = next(k for k, e in enumerate(data) if "image_id" not in e)
        raise DataError(f"{p}: {len(by_id)} entries name images by \"image_id\" and {len(data) - len(by_id)} only "
                        f"by \"{_name_key(data[first])}\" (first: entry #{first}); use one key for every entry")
    if by_id:
        _refuse_bad(p, data, "image_id", _is_int, "image_ids are not integers")
    _refuse_bad(p, data, "caption", lambda c: isinstance(c, str), "captions are not strings")
    if not by_id:
        ids = _by_names(p, data, names, described)
        seen: dict[int, int] = {}
        for k, image_id in enumerate(ids):
            if image_id in seen:
                raise DataError(f"{p}: entries #{seen[image_id]} and #{k} name the same image "
                                f"({names[image_id]!r}); give one caption per image")  # type: ignore[index]
            seen[image_id] = k
        return {i: e["caption"] for i, e in zip(ids, data, strict=True)}
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


def _coco_names(data: dict[str, Any], refs: Mapping[int, Any]) -> dict[int, str] | None:
    """image id -> file_name from a COCO annotations file's `images` list (None when it has none)."""
    images = data.get("images")
    if not isinstance(images, list):
        return None
    names = {e["id"]: e["file_name"] for e in images if isinstance(e, dict) and _is_int(e.get("id"))
             and isinstance(e.get("file_name"), str) and e["id"] in refs}
    return names or None


@dataclass
class ReferenceSet:
    """References, training captions when known, a description, and image file names when the source has them."""

    refs: dict[int, list[str]]
    train: list[str] | None
    described: str
    names: dict[int, str] | None = None


def load_reference_set(spec: str | Path, split: str = "eval") -> ReferenceSet:
    """References from a dataset (via `captune.data`), a COCO captions annotations JSON, or a plain
    `{image_id: [captions]}` JSON, with training captions and image file names where the source has them."""
    p = Path(spec).expanduser()
    if p.suffix.lower() == ".json" and p.is_file():
        data = _read_json(p, "references")
        if isinstance(data, dict) and "annotations" in data:
            refs = _refs_from_coco(p, data)
            return ReferenceSet(refs, None, f"{p} (COCO annotations)", _coco_names(data, refs))
        if isinstance(data, dict) and not ({"images", "dataset"} & set(data)):
            return ReferenceSet(_refs_from_mapping(p, data), None, f"{p} (image id -> references)")
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
    names = {r.image_id: r.name if r.name.endswith(r.path.suffix) else r.name + r.path.suffix
             for r in records if r.refs}
    return ReferenceSet(refs, train, f"{p} ({dataset.format}, split {split})", names)
