"""`captune data check`: survey a dataset before spending GPU hours on it.

One read per image gives its size (header), a content hash (duplicates) and, by default, a
reduced-scale decode that catches truncated downloads; threads overlap the I/O and Pillow's decode,
which releases the GIL. The full 8,091-image Flickr8K takes a few seconds.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from captune.data.images import ImageProbe, probe_image
from captune.data.load import default_threads, load_dataset
from captune.data.records import LoadedDataset, normalize_caption

SHOWN_PER_KIND = 5


@dataclass
class CheckReport:
    """Everything `captune data check` prints, also writable as JSON."""

    path: str
    format: str
    image_root: str | None
    images_on_disk: int | None
    images_per_split: dict[str, int]
    captions_per_split: dict[str, int]
    captions_per_image: dict[int, int]
    unsplit_images: int
    missing_images: list[str]
    unreadable_images: list[str]
    duplicate_image_groups: list[list[str]]
    empty_captions: int
    duplicate_captions: list[str]
    ids_without_image: list[str]
    width: dict[str, float] | None
    height: dict[str, float] | None
    image_formats: dict[str, int]
    problem_counts: dict[str, int]
    problems_by_kind: dict[str, list[str]]
    notes: list[str]
    seconds: float = 0.0
    decoded: bool = True

    @property
    def fatal(self) -> bool:
        """Nothing usable: no image with a caption could be loaded and read."""
        return sum(self.images_per_split.values()) - len(self.unreadable_images) <= 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["captions_per_image"] = {str(k): v for k, v in self.captions_per_image.items()}
        data["fatal"] = self.fatal
        return data


def _stats(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _duplicate_captions(dataset: LoadedDataset) -> list[str]:
    """Captions repeated within one image's references (after normalisation): they inflate consensus metrics."""
    found = []
    for record in [*dataset.records, *dataset.unsplit]:
        counts = Counter(normalize_caption(c) for c in record.refs)
        for text, n in counts.items():
            if n > 1:
                found.append(f"{record.name}: {n}x {text!r}")
    return found


def check_dataset(
    path: str | os.PathLike[str],
    format: str = "auto",
    image_root: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    decode: bool = True,
) -> CheckReport:
    """Load (missing files reported, not fatal) and probe every captioned image once."""
    start = time.perf_counter()
    dataset = load_dataset(path, format=format, image_root=image_root, on_bad_image="skip")
    records = [*dataset.records, *dataset.unsplit]
    with ThreadPoolExecutor(max_workers=threads or default_threads()) as pool:
        probes: list[ImageProbe] = list(pool.map(lambda r: probe_image(r.path, decode=decode), records))

    by_hash: dict[str, list[str]] = {}
    for probe in probes:
        if probe.sha1 is not None and probe.error is None:
            by_hash.setdefault(probe.sha1, []).append(probe.path.name)
    good = [p for p in probes if p.error is None]
    images_per_split = dataset.split_counts()
    captions_per_split: Counter[str] = Counter()
    for record in dataset.records:
        captions_per_split[record.split] += len(record.refs)
    report = CheckReport(
        path=str(path),
        format=dataset.format,
        image_root=str(dataset.image_root) if dataset.image_root else None,
        images_on_disk=dataset.images_on_disk,
        images_per_split=images_per_split,
        captions_per_split={s: captions_per_split[s] for s in images_per_split},
        captions_per_image=dict(sorted(Counter(len(r.refs) for r in dataset.records).items())),
        unsplit_images=len(dataset.unsplit),
        missing_images=dataset.problems_by_kind.get("missing_image", []),
        unreadable_images=[p.error for p in probes if p.error is not None],
        duplicate_image_groups=sorted(sorted(g) for g in by_hash.values() if len(g) > 1),
        empty_captions=dataset.problem_counts.get("empty_caption", 0),
        duplicate_captions=_duplicate_captions(dataset),
        ids_without_image=dataset.problems_by_kind.get("no_image", []),
        width=_stats([p.width for p in good if p.width is not None]),
        height=_stats([p.height for p in good if p.height is not None]),
        image_formats=dict(Counter(p.format or "?" for p in good).most_common()),
        problem_counts=dataset.problem_counts,
        problems_by_kind=dataset.problems_by_kind,
        notes=dataset.notes,
        decoded=decode,
    )
    report.seconds = time.perf_counter() - start
    return report


def _listing(title: str, items: list[str], total: int | None = None) -> list[str]:
    count = len(items) if total is None else total
    lines = [f"{title}: {count}"]
    lines += [f"  {item}" for item in items[:SHOWN_PER_KIND]]
    if len(items) > SHOWN_PER_KIND:
        lines.append(f"  ... and {len(items) - SHOWN_PER_KIND} more")
    return lines


def _fmt_stats(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "n/a"
    return f"min {stats['min']:g} / median {stats['median']:g} / max {stats['max']:g}"


def format_report(report: CheckReport) -> str:
    """Plain text, one fact per line, stable enough to grep in CI logs."""
    total_images = sum(report.images_per_split.values())
    total_captions = sum(report.captions_per_split.values())
    lines = [f"dataset: {report.path} (format {report.format})"]
    if report.image_root:
        lines.append(f"image folder: {report.image_root}")
    if report.images_on_disk is not None:
        lines.append(f"images on disk: {report.images_on_disk}")
    lines.append(f"images in splits: {total_images} ({total_captions} captions)")
    for split, n in report.images_per_split.items():
        lines.append(f"  {split}: {n} images, {report.captions_per_split.get(split, 0)} captions")
    if report.unsplit_images:
        lines.append(f"captioned images in no split: {report.unsplit_images}")
    per_image = ", ".join(f"{k} captions: {v} images" for k, v in report.captions_per_image.items())
    lines.append(f"captions per image: {per_image or 'n/a'}")
    lines += _listing("missing images", report.missing_images)
    lines += _listing("unreadable images" + ("" if report.decoded else " (header check only)"),
                      report.unreadable_images)
    dup_lines = [", ".join(g) for g in report.duplicate_image_groups]
    lines += _listing("duplicate images (identical files)", dup_lines)
    lines.append(f"empty captions (dropped): {report.empty_captions}")
    lines += _listing("duplicate captions within an image", report.duplicate_captions)
    lines += _listing("ids with no image", report.ids_without_image)
    lines.append(f"image width: {_fmt_stats(report.width)}")
    lines.append(f"image height: {_fmt_stats(report.height)}")
    if report.image_formats:
        lines.append("image formats: " + ", ".join(f"{k} {v}" for k, v in report.image_formats.items()))
    shown = {"missing_image", "no_image", "empty_caption"}
    other = {k: v for k, v in report.problems_by_kind.items() if k not in shown}
    if other:
        lines.append("other problems: " + ", ".join(f"{k} {len(v)}" for k, v in sorted(other.items())))
        listed = [line for lines_of_kind in other.values() for line in lines_of_kind]
        lines += [f"  {p}" for p in listed[:SHOWN_PER_KIND]]
        if len(listed) > SHOWN_PER_KIND:
            lines.append(f"  ... and {len(listed) - SHOWN_PER_KIND} more")
    lines += [f"note: {n}" for n in report.notes]
    lines.append(f"checked in {report.seconds:.1f} s")
    lines.append("status: FATAL, nothing loadable" if report.fatal else "status: ok (problems above are not fatal)")
    return "\n".join(lines)
