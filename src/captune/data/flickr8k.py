"""Flickr8K in its original layout: `Flicker8k_Dataset/` + `Flickr8k_text/` token and split files.

Ids follow the Karpathy JSON's `imgid`, which is the order of the train, dev and test split files
concatenated (checked on the real data), so this loader and the Karpathy loader agree. Captioned
images that no split file names (91 in the real data) get the ids after those and go to `unsplit`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from captune.data.records import (
    IMAGE_SUFFIXES,
    ImageRecord,
    LoadedDataset,
    ProblemLog,
    name_of,
    read_text_lines,
    safe_relative,
)
from captune.errors import DataError

TEXT_DIR = "Flickr8k_text"
TOKEN_FILE = "Flickr8k.token.txt"
IMAGE_DIR_NAMES = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images", "images")
SPLIT_FILES = (
    ("train", "Flickr_8k.trainImages.txt"),
    ("val", "Flickr_8k.devImages.txt"),
    ("test", "Flickr_8k.testImages.txt"),
)

_CAPTION_ID = re.compile(r"^(?P<name>.+?)#(?P<index>\d+)$")


def find_text_dir(root: Path) -> Path | None:
    """The folder holding the token file: `ROOT/Flickr8k_text/` or ROOT itself."""
    for candidate in (root / TEXT_DIR, root):
        if (candidate / TOKEN_FILE).is_file():
            return candidate
    return None


def looks_like_flickr8k(root: Path) -> bool:
    return root.is_dir() and find_text_dir(root) is not None


def _find_image_dir(root: Path, image_root: Path | None) -> Path:
    if image_root is not None:
        if not image_root.is_dir():
            raise DataError(f"{image_root}: image folder not found; fix --image-root / data.image_root")
        return Path(os.path.abspath(image_root))
    for name in IMAGE_DIR_NAMES:
        if (root / name).is_dir():
            return root / name
    expected = " or ".join(IMAGE_DIR_NAMES[:2])
    raise DataError(
        f"{root}: no image folder ({expected}) found; unpack Flickr8k_Dataset.zip there or pass --image-root"
    )


def _parse_token_line(line: str) -> tuple[str, int | None, str] | None:
    """`NAME.jpg#N<TAB>caption` -> (name, N, caption); tolerates spaces instead of the tab."""
    if "\t" in line:
        key, caption = line.split("\t", 1)
    else:
        parts = line.split(None, 1)
        if len(parts) != 2 or "#" not in parts[0]:
            return None
        key, caption = parts
    key = key.strip()
    match = _CAPTION_ID.match(key)
    if match:
        return match["name"], int(match["index"]), caption
    if not key:
        return None
    return key, None, caption


def load_flickr8k(root: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None) -> LoadedDataset:
    """Read the native layout; every defect is reported in `problems`, never fatal unless nothing loads."""
    root = Path(os.path.abspath(root))
    if not root.exists():
        raise DataError(f"{root}: dataset folder not found; check data.path (e.g. ../shared/data/flickr8k)")
    text_dir = find_text_dir(root)
    if text_dir is None:
        raise DataError(f"{root}: no {TEXT_DIR}/{TOKEN_FILE} found; point data.path at the Flickr8K folder")
    if text_dir == root and root.name == TEXT_DIR:
        root = root.parent
    image_dir = _find_image_dir(root, Path(image_root) if image_root is not None else None)
    log = ProblemLog()

    on_disk = sorted(
        entry.name
        for entry in os.scandir(image_dir)
        if entry.is_file() and not entry.name.startswith(".") and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES
    )
    on_disk_set = set(on_disk)

    # Captions, in token-file order; first occurrence of each caption id wins.
    captions: dict[str, list[str]] = {}
    seen_ids: dict[tuple[str, int], int] = {}
    orphan_ids: dict[str, tuple[int, int]] = {}  # id naming no image -> (first line, caption count)
    token_label = f"{TEXT_DIR}/{TOKEN_FILE}" if text_dir != root else TOKEN_FILE
    for number, line in enumerate(read_text_lines(text_dir / TOKEN_FILE, log, token_label), start=1):
        if not line.strip():
            continue
        parsed = _parse_token_line(line)
        if parsed is None:
            log.add("malformed_line", f"token file line {number}: expected 'IMAGE.jpg#N<TAB>caption'; skipped")
            continue
        name, index, caption = parsed
        if name not in on_disk_set:
            safe_relative(name, image_dir, f"token file line {number}")
            first, count = orphan_ids.get(name, (number, 0))
            orphan_ids[name] = (first, count + 1)
            continue
        if index is not None:
            previous = seen_ids.get((name, index))
            if previous is not None:
                log.add("duplicate_id",
                        f"token file line {number}: duplicate caption id '{name}#{index}' (first on line "
                        f"{previous}); kept the first")
                continue
            seen_ids[(name, index)] = number
        text = caption.strip()
        if not text:
            log.add("empty_caption", f"token file line {number}: empty caption for '{name}#{index}'; dropped")
            continue
        captions.setdefault(name, []).append(text)
    for name, (first, count) in orphan_ids.items():
        log.add("no_image", f"token file line {first}: id '{name}' names no image ({count} captions ignored)")

    # Splits: the files' order defines the ids (= Karpathy imgid).
    split_of: dict[str, str] = {}
    ordered: list[str] = []
    split_files_found = 0
    for split, file_name in SPLIT_FILES:
        split_path = text_dir / file_name
        if not split_path.is_file():
            log.add("missing_split_file", f"{file_name}: split file not found; its images are unsplit")
            continue
        split_files_found += 1
        for number, line in enumerate(read_text_lines(split_path, log, file_name), start=1):
            name = line.strip()
            if not name:
                continue
            if name not in on_disk_set:
                safe_relative(name, image_dir, f"{file_name} line {number}")
                log.add("split_unknown_image", f"{file_name} line {number}: '{name}' names no image; skipped")
                continue
            if name not in captions:
                log.add("split_uncaptioned", f"{file_name} line {number}: '{name}' has no captions; skipped")
                continue
            if name in split_of:
                log.add("split_duplicate",
                        f"{file_name} line {number}: '{name}' already in {split_of[name]}; kept there")
                continue
            split_of[name] = split
            ordered.append(name)
    if split_files_found == 0:
        log.note("no split files found: every captioned image is put in 'train'")
        ordered = sorted(captions)
        split_of = dict.fromkeys(ordered, "train")

    records = [
        ImageRecord(image_id=i, name=name_of(name), path=image_dir / name, split=split_of[name],
                    refs=tuple(captions[name]))
        for i, name in enumerate(ordered)
    ]
    leftover = sorted(n for n in captions if n not in split_of)
    unsplit = [
        ImageRecord(image_id=len(ordered) + i, name=name_of(name), path=image_dir / name, split="unsplit",
                    refs=tuple(captions[name]))
        for i, name in enumerate(leftover)
    ]
    if leftover:
        log.note(f"{len(leftover)} captioned images are in no split file (kept out of the splits)")
    uncaptioned = [n for n in on_disk if n not in captions]
    for name in uncaptioned:
        log.add("uncaptioned_image", f"{image_dir.name}/{name}: image has no captions in the token file")

    dataset = LoadedDataset(
        records=records, format="flickr8k", root=root, unsplit=unsplit, image_root=image_dir,
        images_on_disk=len(on_disk),
    )
    return log.fill(dataset)
