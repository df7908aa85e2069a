"""A seeded synthetic benchmark for fine-grained image–text alignment, in the Flickr8K layout.

Each image holds 1–3 flat shapes (colour, shape, small/large) in distinct cells of a grid on a grey
background. Five captions per image come from varied templates (captions.py), the way different
annotators write, so n-gram metrics behave as on human captions, while judge.py can read back exactly
what a caption asserts and check it against the ground truth in `synth_objects.json`.

Cells are integer pixel boxes, and shapes stay strictly inside their cell, so with
`size = grid × patch` (e.g. 24 px, grid 3, ViT patch 8) one patch sees exactly one cell.
Output is byte-identical for the same settings: per-image RNGs seeded from (seed, index), PNGs
written with fixed settings and no metadata, files built in a temp folder and renamed into place.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from captune.data.flickr8k import SPLIT_FILES, TEXT_DIR, TOKEN_FILE
from captune.demo.captions import Pair, write_captions
from captune.errors import DataError
from captune.io import atomic_directory
from captune.progress import Bar

IMAGE_DIR = "Flicker8k_Dataset"
TRUTH_FILE = "synth_objects.json"
FLICKR8K_SPLIT_SIZES = {"train": 6000, "val": 1000, "test": 1000}
BACKGROUND = (128, 128, 128)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 160, 60),
    "blue": (40, 90, 220),
    "purple": (130, 60, 180),
    "pink": (245, 135, 200),
    "brown": (120, 75, 35),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star")
SIZES = ("small", "large")


@dataclass(frozen=True)
class SynthObject:
    """One drawn shape; `row`/`col` index the grid cell (row 0 at the top)."""

    colour: str
    shape: str
    size: str
    row: int
    col: int



# ----------------------------------------------------------------------------- scenes


def _cell_box(row: int, col: int, size: int, grid: int) -> tuple[int, int, int, int]:
    """Integer pixel bounds [x0, x1) × [y0, y1) of a cell; cells tile the image exactly."""
    x0, x1 = round(col * size / grid), round((col + 1) * size / grid)
    y0, y1 = round(row * size / grid), round((row + 1) * size / grid)
    return x0, y0, x1, y1


def shape_box(obj: SynthObject, size: int, grid: int) -> tuple[int, int, int, int]:
    """Inclusive pixel box a shape is drawn in: inset from its cell so it never touches a neighbour."""
    x0, y0, x1, y1 = _cell_box(obj.row, obj.col, size, grid)
    side = min(x1 - x0, y1 - y0)
    margin = max(1, round(side * 0.1))
    full = side - 2 * margin
    extent = full if obj.size == "large" else max(2, round(full * 0.55))
    left = x0 + (x1 - x0 - extent) // 2
    top = y0 + (y1 - y0 - extent) // 2
    return left, top, left + extent - 1, top + extent - 1


def _draw(draw: ImageDraw.ImageDraw, obj: SynthObject, size: int, grid: int) -> None:
    left, top, right, bottom = shape_box(obj, size, grid)
    fill = COLOURS[obj.colour]
    cx, cy = (left + right) / 2, (top + bottom) / 2
    if obj.shape == "circle":
        draw.ellipse((left, top, right, bottom), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((left, top, right, bottom), fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([(cx, top), (right, bottom), (left, bottom)], fill=fill)
    elif obj.shape == "diamond":
        draw.polygon([(cx, top), (right, cy), (cx, bottom), (left, cy)], fill=fill)
    elif obj.shape == "cross":
        bar = max(1, round((right - left + 1) / 3))
        h0 = round(cy - bar / 2 + 0.5)
        v0 = round(cx - bar / 2 + 0.5)
        draw.rectangle((left, h0, right, h0 + bar - 1), fill=fill)
        draw.rectangle((v0, top, v0 + bar - 1, bottom), fill=fill)
    elif obj.shape == "star":
        outer = (right - left) / 2
        points = []
        for k in range(10):
            radius = outer if k % 2 == 0 else outer * 0.45
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        points = [(min(max(x, left), right), min(max(y, top), bottom)) for x, y in points]
        draw.polygon(points, fill=fill)
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(obj.shape)


def render_scene(objects: list[SynthObject], size: int, grid: int) -> Image.Image:
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        _draw(draw, obj, size, grid)
    return image


def make_scene(rng: random.Random, grid: int, max_objects: int) -> list[SynthObject]:
    """1..max_objects shapes in distinct cells; sometimes a group of identical ones, so counts matter."""
    n = rng.randint(1, max_objects)
    cells = rng.sample(range(grid * grid), n)
    kinds: list[Pair] = []
    if n >= 2 and rng.random() < 0.3:
        group = n if n == 3 and rng.random() < 0.3 else 2
        kinds = [(rng.choice(list(COLOURS)), rng.choice(SHAPES))] * group
    while len(kinds) < n:
        kind = (rng.choice(list(COLOURS)), rng.choice(SHAPES))
        if kind not in kinds:
            kinds.append(kind)
    group_size = rng.choice(SIZES)
    uniform = rng.random() < 0.7
    objects = []
    for (colour, shape), cell in zip(kinds, cells, strict=True):
        repeated = kinds.count((colour, shape)) > 1
        size = group_size if repeated and uniform else rng.choice(SIZES)
        objects.append(SynthObject(colour, shape, size, cell // grid, cell % grid))
    rng.shuffle(objects)
    return objects


# ----------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class SynthSettings:
    seed: int = 0
    size: int = 64
    grid: int = 3
    max_objects: int = 3
    captions_per_image: int = 5


def _render_one(job: tuple[SynthSettings, int, str]) -> tuple[str, bytes, list[SynthObject], list[str]]:
    """One image from its own RNG: the result depends only on (settings, index), not on the worker."""
    settings, index, name = job
    rng = random.Random(f"captune-synth:{settings.seed}:{index}")
    objects = make_scene(rng, settings.grid, settings.max_objects)
    captions = write_captions(objects, rng, settings.captions_per_image)
    buffer = io.BytesIO()
    render_scene(objects, settings.size, settings.grid).save(buffer, format="PNG", compress_level=6)
    return name, buffer.getvalue(), objects, captions


def split_sizes_for(scale: float) -> dict[str, int]:
    if scale <= 0:
        raise DataError(f"--scale must be > 0, got {scale}; 1.0 gives Flickr8K's 6,000/1,000/1,000")
    return {split: max(1, round(n * scale)) for split, n in FLICKR8K_SPLIT_SIZES.items()}


@dataclass
class SynthSummary:
    out: Path
    split_sizes: dict[str, int]
    images: int
    seconds: float


def _check_output(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier synthetic dataset: the write renames over it."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another output path")
    if out.is_dir() and any(out.iterdir()) and not (out / TRUTH_FILE).is_file():
        raise DataError(f"{out}: folder exists and is not a captune synthetic dataset; choose a new or empty folder")


def generate_synth(
    out: str | os.PathLike[str],
    *,
    scale: float = 1.0,
    seed: int = 0,
    size: int = 64,
    grid: int = 3,
    max_objects: int = 3,
    split_sizes: dict[str, int] | None = None,
    workers: int = 1,
    progress: bool = False,
) -> SynthSummary:
    """Write the benchmark to `out` in the Flickr8K layout, plus `synth_objects.json` (the ground truth).

    `split_sizes` overrides `scale`. `workers` > 1 renders in a process pool; output is identical either way
    (on a 2-core machine the pool rarely pays: rendering is ~2.5 s of the total, file creation the rest).
    """
    start = time.perf_counter()
    out = Path(out)
    if seed < 0:
        raise DataError(f"--seed must be >= 0, got {seed}")
    if grid < 1 or size < 4 * grid:
        raise DataError(f"--size {size} with --grid {grid} leaves cells under 4 px; use --size >= {4 * max(grid, 1)}")
    if not 1 <= max_objects <= grid * grid:
        raise DataError(f"--max-objects must be in 1..{grid * grid} for a {grid}x{grid} grid, got {max_objects}")
    sizes = dict(split_sizes) if split_sizes is not None else split_sizes_for(scale)
    if set(sizes) != set(FLICKR8K_SPLIT_SIZES) or any(n < 0 for n in sizes.values()):
        raise DataError(f"split sizes must give train, val and test counts >= 0, got {sizes}")
    _check_output(out)
    settings = SynthSettings(seed=seed, size=size, grid=grid, max_objects=max_objects)
    total = sum(sizes.values())
    width = max(5, len(str(total - 1)))
    names = [f"synth_{i:0{width}d}" for i in range(total)]
    jobs = [(settings, i, name) for i, name in enumerate(names)]
    workers = max(1, min(workers, total or 1))

    truth: dict[str, list[dict[str, Any]]] = {}
    token_lines: list[str] = []
    with atomic_directory(out) as tmp:
        image_dir = tmp / IMAGE_DIR
        image_dir.mkdir()
        if workers > 1 and total >= 200:
            context = multiprocessing.get_context("spawn" if os.name == "nt" else "fork")
            with context.Pool(workers) as pool:
                results = pool.imap(_render_one, jobs, chunksize=max(1, min(250, total // (4 * workers))))
                _collect(results, image_dir, truth, token_lines, progress, total)
        else:
            _collect(map(_render_one, jobs), image_dir, truth, token_lines, progress, total)
        text_dir = tmp / TEXT_DIR
        text_dir.mkdir()
        (text_dir / TOKEN_FILE).write_text("".join(token_lines), encoding="utf-8")
        offset = 0
        for split, file_name in SPLIT_FILES:
            chosen = names[offset:offset + sizes[split]]
            offset += sizes[split]
            (text_dir / file_name).write_text("".join(f"{n}.png\n" for n in chosen), encoding="utf-8")
        meta = {
            "format": "captune-synth",
            "version": 1,
            "settings": asdict(settings),
            "split_sizes": sizes,
            "colours": {k: list(v) for k, v in COLOURS.items()},
            "background": list(BACKGROUND),
            "shapes": list(SHAPES),
            "images": truth,
        }
        (tmp / TRUTH_FILE).write_text(json.dumps(meta, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return SynthSummary(out=out, split_sizes=sizes, images=total, seconds=time.perf_counter() - start)


def _collect(results: Any, image_dir: Path, truth: dict[str, list[dict[str, Any]]], token_lines: list[str],
             progress: bool = False, total: int | None = None) -> None:
    with Bar("synthetic images", total, progress) as bar:
        for item in results:
            _write_one(item, image_dir, truth, token_lines)
            bar.advance()


def _write_one(item: Any, image_dir: Path, truth: dict[str, list[dict[str, Any]]], token_lines: list[str]) -> None:
    name, png, objects, captions = item
    (image_dir / f"{name}.png").write_bytes(png)
    truth[name] = [{"colour": o.colour, "shape": o.shape, "size": o.size, "row": o.row, "col": o.col} for o in objects]
    token_lines.extend(f"{name}.png#{k}\t{caption}\n" for k, caption in enumerate(captions))


def load_truth(path: str | os.PathLike[str]) -> dict[str, list[SynthObject]]:
    """Ground truth by image name, from `synth_objects.json` or the dataset folder holding it."""
    file = Path(path)
    if file.is_dir():
        file = file / TRUTH_FILE
    if not file.is_file():
        raise DataError(f"{file}: synthetic ground truth not found; generate it with `captune data synth --out OUT`")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        return {name: [SynthObject(**o) for o in objects] for name, objects in data["images"].items()}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{file}: not a captune synthetic ground-truth file ({exc}); regenerate it") from None
