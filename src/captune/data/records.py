"""The one record type every loader produces, and helpers all loaders share.

Loaders differ only in how they read their index files; everything after that (split names,
safe image paths, tolerant text decoding, stable subsets, problem bookkeeping) lives here so that
every format behaves the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from captune.errors import DataError

SPLITS = ("train", "val", "test")
"""The canonical split names; `restval` (Karpathy COCO) is kept apart unless folded into train."""

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    "restval": "restval",
}

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)


@dataclass(frozen=True)
class ImageRecord:
    """One image and its raw reference captions, whatever format it came from."""

    image_id: int
    name: str
    path: Path
    split: str
    refs: tuple[str, ...]


@dataclass
class LoadedDataset:
    """Records plus everything a loader noticed on the way (nothing is dropped silently).

    `problems` are human-readable lines; `problems_by_kind` groups the same lines by kind (e.g.
    `empty_caption`, `no_image`) so that `captune data check` can summarise without parsing text. `unsplit` holds
    captioned images that no split file names (Flickr8K has 91): they keep ids but are not in
    `records`, so `select("all")` matches the Karpathy JSON.
    """

    records: list[ImageRecord]
    format: str
    root: Path
    problems: list[str] = field(default_factory=list)
    skipped_images: list[str] = field(default_factory=list)
    problems_by_kind: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unsplit: list[ImageRecord] = field(default_factory=list)
    image_root: Path | None = None
    images_on_disk: int | None = None

    @property
    def problem_counts(self) -> dict[str, int]:
        return {kind: len(lines) for kind, lines in self.problems_by_kind.items()}

    def add_problem(self, kind: str, message: str) -> None:
        self.problems.append(message)
        self.problems_by_kind.setdefault(kind, []).append(message)

    def available_splits(self) -> list[str]:
        present = {r.split for r in self.records}
        ordered = [s for s in (*SPLITS, "restval") if s in present]
        return ordered + sorted(present - set(ordered))

    def select(self, split: str) -> list[ImageRecord]:
        """Records of one split; `eval` is val+test (the 2,000-image Flickr8K set), `all` is everything."""
        if split == "all":
            return list(self.records)
        if split == "eval":
            return [r for r in self.records if r.split in ("val", "test")]
        wanted = SPLIT_ALIASES.get(split, split)
        if wanted not in SPLITS and wanted not in self.available_splits():
            options = ", ".join([*self.available_splits(), "eval", "all"])
            raise DataError(f"{self.root}: unknown split {split!r}; use one of: {options}")
        return [r for r in self.records if r.split == wanted]

    def split_counts(self) -> dict[str, int]:
        counts = Counter(r.split for r in self.records)
        return {s: counts[s] for s in self.available_splits()}


class ProblemLog:
    """Collects a loader's problems (kind, text) in the order found, and notes that are not problems."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.notes: list[str] = []

    def add(self, kind: str, message: str) -> None:
        self.items.append((kind, message))

    def note(self, message: str) -> None:
        self.notes.append(message)

    def fill(self, dataset: LoadedDataset) -> LoadedDataset:
        for kind, message in self.items:
            dataset.add_problem(kind, message)
        dataset.notes.extend(self.notes)
        return dataset


def normalize_caption(text: str) -> str:
    """Lowercase, punctuation to spaces, whitespace collapsed.

    Kept separate from loading (records hold raw captions) because metrics tokenise on their own.
    On Flickr8K this reproduces the Karpathy JSON's `tokens` exactly for all 40,000 captions.
    """
    return " ".join(re.sub(r"[^\w\s]", " ", str(text).lower()).split())


def canonical_split(value: object, restval_to_train: bool) -> str | None:
    """Map a split label to train/val/test/restval; None when it is not one we know."""
    split = SPLIT_ALIASES.get(str(value).strip().lower())
    if split == "restval" and restval_to_train:
        return "train"
    return split


def read_text_lines(path: Path, log: ProblemLog, label: str) -> list[str]:
    """Lines of a text file, tolerant of BOM, CRLF and stray latin-1 bytes (each reported).

    Decoding line by line means one bad byte costs one reported line, not the whole file.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc}); check the file's permissions") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        raw = raw.rstrip(b"\r")
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(raw.decode("latin-1"))
            log.add("latin1_line", f"{label} line {number}: not valid UTF-8; decoded as latin-1")
    return lines


def safe_relative(name: str, root: Path, where: str) -> Path:
    """`root / name`, refusing names that point outside `root` (e.g. `../../etc/passwd`).

    The check is lexical (no symlink resolution), so symlinked image folders keep working; only the
    names written in index files are distrusted.
    """
    cleaned = str(name).strip().replace("\\", "/")
    if not cleaned or "\x00" in cleaned:
        raise DataError(f"{where}: image name {name!r} is empty or invalid; fix the entry")
    root_abs = os.path.normpath(os.path.abspath(root))
    candidate = os.path.normpath(os.path.join(root_abs, cleaned))
    if candidate != root_abs and not candidate.startswith(root_abs.rstrip(os.sep) + os.sep):
        raise DataError(
            f"{where}: image name {name!r} points outside the image root {root_abs}; "
            "fix the entry (names must be relative paths inside the image folder)"
        )
    if candidate == root_abs:
        raise DataError(f"{where}: image name {name!r} names the image folder itself; fix the entry")
    return Path(candidate)


class DirectoryIndex:
    """Caches directory listings so that checking thousands of image paths costs one listdir per folder."""

    def __init__(self) -> None:
        self._listings: dict[str, frozenset[str]] = {}

    def exists(self, path: Path) -> bool:
        folder, name = os.path.split(os.fspath(path))
        listing = self._listings.get(folder)
        if listing is None:
            try:
                listing = frozenset(os.listdir(folder))
            except OSError:
                listing = frozenset()
            self._listings[folder] = listing
        return name in listing and os.path.isfile(path)


def name_of(relative: str) -> str:
    """The record name: the path without its image extension, in POSIX form (`train/0001`, `1000_ab`)."""
    path = Path(str(relative).replace("\\", "/"))
    stem = path.with_suffix("") if path.suffix.lower() in IMAGE_SUFFIXES else path
    return stem.as_posix()


def subset_key(seed: int, name: str) -> str:
    return hashlib.sha256(f"{seed}\x00{name}".encode()).hexdigest()


def take_subset(records: list[ImageRecord], max_images: int | None, seed: int) -> list[ImageRecord]:
    """At most `max_images` per split, chosen by a seeded hash of the name: stable across runs and
    machines, and a larger subset contains the smaller one. Original order is kept."""
    if max_images is None:
        return records
    if max_images <= 0:
        raise DataError(f"max_images must be > 0, got {max_images}; use null for all images")
    keep: set[int] = set()
    by_split: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        by_split.setdefault(record.split, []).append(index)
    for indices in by_split.values():
        ranked = sorted(indices, key=lambda i: subset_key(seed, records[i].name))
        keep.update(ranked[:max_images])
    return [r for i, r in enumerate(records) if i in keep]


def clean_captions(
    captions: list[str], log: ProblemLog, where: str
) -> tuple[str, ...]:
    """Drop empty captions (reported); keep the rest raw, surrounding whitespace aside."""
    kept = []
    for caption in captions:
        text = str(caption).strip() if caption is not None else ""
        if not text:
            log.add("empty_caption", f"{where}: empty caption; dropped")
            continue
        kept.append(text)
    return tuple(kept)


@dataclass
class Entry:
    """One image as a loader read it, before its file is located: what `build_records` turns into records."""

    file: str
    split: str
    refs: tuple[str, ...]
    where: str
    image_id: int | None = None
    name: str | None = None  # defaults to the file's path without extension


def guess_image_root(candidates: list[Path], entries: list[Entry]) -> Path:
    """The first candidate folder that holds the first few images; the first candidate if none does."""
    sample = entries[:5]
    for folder in candidates:
        if folder.is_dir() and sample:
            hits = 0
            for entry in sample:
                try:
                    if safe_relative(entry.file, folder, entry.where).is_file():
                        hits += 1
                except DataError:
                    continue
            if hits:
                return folder
    return candidates[0]


def build_records(entries: list[Entry], image_root: Path, log: ProblemLog, source: Path) -> list[ImageRecord]:
    """Resolve files safely under `image_root`, drop (and report) missing files and duplicates, assign ids.

    Ids come from the entries when every entry has a distinct one (COCO ids, Karpathy cocoid),
    otherwise from the entries' order, so they are stable for an unchanged file.
    """
    index = DirectoryIndex()
    given = [e.image_id for e in entries]
    use_given = bool(entries) and all(i is not None for i in given) and len(set(given)) == len(given)
    seen: dict[Path, str] = {}
    records: list[ImageRecord] = []
    missing = 0
    for position, entry in enumerate(entries):
        path = safe_relative(entry.file, image_root, entry.where)
        if path in seen:
            log.add("duplicate_id",
                    f"{entry.where}: image '{entry.file}' already listed at {seen[path]}; kept the first")
            continue
        seen[path] = entry.where
        if not entry.refs:
            log.add("no_captions", f"{entry.where}: image '{entry.file}' has no non-empty caption; skipped")
            continue
        if not index.exists(path):
            missing += 1
            log.add("missing_image", f"{entry.where}: image file {path} not found; skipped")
            continue
        image_id = entry.image_id if use_given else position
        records.append(ImageRecord(image_id=int(image_id), name=entry.name or name_of(entry.file), path=path,
                                   split=entry.split, refs=entry.refs))
    if entries and missing and not records:
        example = safe_relative(entries[0].file, image_root, entries[0].where)
        raise DataError(
            f"{source}: none of its {len(entries)} images exist (e.g. {example}); "
            "pass --image-root / data.image_root pointing at the image folder"
        )
    return records


def finish_dataset(entries: list[Entry], image_root: str | os.PathLike[str] | None, candidates: list[Path],
                   log: ProblemLog, source: Path, fmt: str) -> LoadedDataset:
    """What every index-file loader ends with: the image folder (the given one, else the first candidate
    holding the first images), the records built under it, the log's problems and notes attached."""
    if image_root is not None:
        root_dir = Path(os.path.abspath(image_root))
        if not root_dir.is_dir():
            raise DataError(f"{root_dir}: image folder not found; fix --image-root / data.image_root")
    else:
        root_dir = guess_image_root(candidates, entries)
    records = build_records(entries, root_dir, log, source)
    return log.fill(LoadedDataset(records=records, format=fmt, root=source, image_root=root_dir))
