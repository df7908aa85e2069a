"""COCO captions JSON (`images[].{id, file_name}` + `annotations[].{image_id, caption}`) with an image root.

The file carries no split, so it comes from the file name (`captions_train2014.json` -> train,
`captions_val2014.json` -> val); any other name is treated as a test set, the usual reason to
hand over a COCO-format file. Image ids are COCO's own, so results JSONs match the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from captune.data.karpathy import read_json
from captune.data.records import Entry, LoadedDataset, ProblemLog, clean_captions, finish_dataset
from captune.errors import DataError


def is_coco(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("images"), list) and isinstance(
        data.get("annotations"), list
    )


def split_from_file_name(path: Path) -> str | None:
    """`captions_val2014` -> val: whole words first, then substrings (`mytrainset` -> train)."""
    stem = path.stem.lower()
    words = set(re.split(r"[^a-z]+", stem))
    pairs = (("train", "train"), ("val", "val"), ("dev", "val"), ("test", "test"))
    for word, split in pairs:
        if word in words:
            return split
    for word, split in pairs:
        if word in stem:
            return split
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_coco(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    data: Any = None,
) -> LoadedDataset:
    """Read a COCO captions file; annotations naming unknown images and empty captions are reported."""
    path = Path(os.path.abspath(path))
    if data is None:
        data = read_json(path)
    if not is_coco(data):
        raise DataError(f"{path}: not a COCO captions JSON (needs 'images' and 'annotations'); "
                        "check data.format (--data-format)")
    log = ProblemLog()
    label = path.name
    split = split_from_file_name(path)
    if split is None:
        split = "test"
        log.note(f"{label}: split not in the file name; all images treated as 'test'")

    files: dict[int, tuple[str, str]] = {}
    order: list[int] = []
    for position, image in enumerate(data["images"]):
        where = f"{label} images[{position}]"
        if not isinstance(image, dict) or not _is_int(image.get("id")) or not isinstance(image.get("file_name"), str):
            log.add("malformed_entry", f"{where}: needs an integer 'id' and a 'file_name'; skipped")
            continue
        if image["id"] in files:
            log.add("duplicate_id", f"{where}: duplicate image id {image['id']}; kept the first")
            continue
        files[image["id"]] = (image["file_name"], where)
        order.append(image["id"])

    captions: dict[int, list[str]] = {i: [] for i in order}
    orphans: dict[Any, int] = {}
    for position, annotation in enumerate(data["annotations"]):
        where = f"{label} annotations[{position}]"
        if not isinstance(annotation, dict) or "image_id" not in annotation:
            log.add("malformed_line", f"{where}: needs 'image_id' and 'caption'; skipped")
            continue
        image_id = annotation["image_id"]
        caption = annotation.get("caption")
        if not isinstance(caption, str):
            log.add("malformed_line", f"{where}: 'caption' is not text; skipped")
            continue
        if not _is_int(image_id) or image_id not in captions:
            key = image_id if isinstance(image_id, (int, str)) else repr(image_id)
            if key not in orphans:
                orphans[key] = position
            continue
        captions[image_id].append(caption)
    for key, position in orphans.items():
        log.add("no_image", f"{label} annotations[{position}]: image_id {key!r} names no image; its captions ignored")

    entries = [
        Entry(file=files[i][0], split=split, refs=clean_captions(captions[i], log, files[i][1]),
              where=files[i][1], image_id=i)
        for i in order
    ]
    base = path.parent
    # captions_val2014.json usually sits in annotations/ beside val2014/.
    year_dir = path.stem.split("_", 1)[-1]
    candidates = [base, base / year_dir, base.parent / year_dir, base / "images", base.parent / "images", base.parent]
    return finish_dataset(entries, image_root, candidates, log, path, "coco")
