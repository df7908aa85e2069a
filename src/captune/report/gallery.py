"""The qualitative gallery: which images to show (a seeded sample plus the LoRA system's largest per-image
gains and losses over the reference) and small JPEG thumbnails of them.

Picking extremes as well as a random sample keeps the gallery honest: a sample alone shows typical
output, the extremes show where the adapter helps and where it hurts.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from pathlib import Path

from captune.errors import DataError
from captune.report.load import RunData

PER_IMAGE_METRICS = ("coco/CIDEr", "rouge/ROUGE-L", "coco/BLEU-4", "nltk/METEOR", "rouge/ROUGE-1")


@dataclass
class GalleryItem:
    image_id: int
    name: str
    refs: tuple[str, ...]
    captions: dict[str, str]
    scores: dict[str, float | None]
    reasons: list[str] = field(default_factory=list)
    delta: float | None = None
    thumbnail: bytes | None = None


@dataclass
class Gallery:
    items: list[GalleryItem]
    metric: str | None
    lora: str | None
    reference: str
    seed: int
    notes: list[str] = field(default_factory=list)


def per_image_metric(run: RunData) -> str | None:
    """The per-image score used to rank gains and losses (CIDEr when the run has it)."""
    return next((m for m in PER_IMAGE_METRICS if run.per_image(run.reference, m) is not None), None)


def thumbnail_jpeg(path: Path, size: int = 160) -> bytes:
    """A JPEG whose longer side is `size` px; tiny images are enlarged without blurring (nearest neighbour)."""
    from PIL import Image

    from captune.data import open_image

    img = open_image(path, draft_size=(size, size))
    w, h = img.size
    scale = size / max(w, h)
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def build_gallery(run: RunData, sample: int = 6, extremes: int = 3, seed: int = 0, thumb: int = 160) -> Gallery:
    ids = run.image_ids
    metric = per_image_metric(run)
    lora = run.lora_system
    gallery = Gallery([], metric, lora, run.reference, seed)
    if not ids:
        gallery.notes.append("scores.json lists no image ids, so there is no per-image gallery.")
        return gallery
    chosen: dict[int, list[str]] = {}
    deltas: dict[int, float] = {}
    if lora is None:
        gallery.notes.append("no LoRA system in this grid: the gallery shows a seeded sample only.")
    elif metric is None:
        gallery.notes.append("no per-image metric in scores.json: the gallery shows a seeded sample only.")
    else:
        ref_scores, lora_scores = run.per_image(run.reference, metric), run.per_image(lora, metric)
        if ref_scores is not None and lora_scores is not None:
            for i, a, b in zip(ids, lora_scores, ref_scores, strict=True):
                if a is not None and b is not None:
                    deltas[i] = a - b
        ranked = sorted(deltas, key=lambda i: (-deltas[i], i))
        gains = [i for i in ranked if deltas[i] > 0][:extremes]
        losses = [i for i in reversed(ranked) if deltas[i] < 0][:extremes]
        for i in gains:
            chosen.setdefault(i, []).append(f"largest gain of {lora}")
        for i in losses:
            chosen.setdefault(i, []).append(f"largest loss of {lora}")
        if not gains and not losses:
            gallery.notes.append(f"{lora} and {run.reference} score every image the same on {metric}.")
    for i in sorted(random.Random(seed).sample(ids, min(sample, len(ids))), key=ids.index):
        chosen.setdefault(i, []).append(f"random sample (seed {seed})")

    position = {i: k for k, i in enumerate(ids)}
    failed = 0
    for image_id, reasons in chosen.items():
        info = run.images.get(image_id)
        item = GalleryItem(
            image_id=image_id,
            name=info.name if info else str(image_id),
            refs=info.refs if info else (),
            captions={s: run.predictions[s].get(image_id, "") for s in run.systems if s in run.predictions},
            scores={},
            reasons=reasons,
            delta=deltas.get(image_id),
        )
        if metric is not None:
            for s in run.systems:
                values = run.per_image(s, metric)
                item.scores[s] = values[position[image_id]] if values is not None else None
        if info is not None and info.path is not None:
            try:
                item.thumbnail = thumbnail_jpeg(info.path, thumb)
            except (DataError, OSError):
                failed += 1
        gallery.items.append(item)
    if failed:
        gallery.notes.append(f"{failed} gallery images could not be opened; shown without a picture.")
    if not run.images:
        gallery.notes.append("images and references unavailable (dataset not loaded); captions only.")
    return gallery
