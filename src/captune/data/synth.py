"""A seeded synthetic benchmark for fine-grained image–text alignment, in the Flickr8K layout.

Each image holds 1–3 flat shapes (colour, shape, small/large) in distinct cells of a grid on a grey
background. Five captions per image come from varied templates, the way different annotators write
(word order, synonyms, articles, optional detail), so n-gram metrics behave as on human captions,
while `parse_caption` can read back exactly what a caption asserts and `alignment_scores` can
check it against the ground truth in `synth_objects.json`.

Cells are integer pixel boxes, and shapes stay strictly inside their cell, so with
`size = grid × patch` (e.g. 24 px, grid 3, ViT patch 8) one patch sees exactly one cell.
Output is byte-identical for the same settings: per-image RNGs seeded from (seed, index), PNGs
written with fixed settings and no metadata, files built in a temp folder and renamed into place.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import multiprocessing
import os
import random
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from captune.data.flickr8k import SPLIT_FILES, TEXT_DIR, TOKEN_FILE
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

# Words a caption may use for each attribute. Every synonym maps back to exactly one value.
COLOUR_WORDS = {**{c: c for c in COLOURS}, "violet": "purple"}
SHAPE_WORDS = {
    "circle": "circle", "circles": "circle", "disc": "circle", "discs": "circle", "disk": "circle",
    "disks": "circle", "square": "square", "squares": "square", "box": "square", "boxes": "square",
    "triangle": "triangle", "triangles": "triangle", "diamond": "diamond", "diamonds": "diamond",
    "rhombus": "diamond", "rhombuses": "diamond", "cross": "cross", "crosses": "cross",
    "star": "star", "stars": "star",
}
SHAPE_SYNONYMS = {
    "circle": (("circle", "circles"), ("disc", "discs")),
    "square": (("square", "squares"), ("box", "boxes")),
    "triangle": (("triangle", "triangles"),),
    "diamond": (("diamond", "diamonds"), ("rhombus", "rhombuses")),
    "cross": (("cross", "crosses"),),
    "star": (("star", "stars"),),
}
SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small", "large": "large", "big": "large"}
SIZE_SYNONYMS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
NUMBER_WORDS = {"one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9}
NUMBER_NAMES = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}
THING_WORDS = {"shape", "shapes", "object", "objects", "item", "items", "thing", "things"}
RELATION_WORDS = {"left": "left of", "right": "right of", "above": "above", "over": "above", "below": "below",
                  "under": "below", "beneath": "below", "underneath": "below"}
RELATION_PHRASES = {
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


@dataclass(frozen=True)
class SynthObject:
    """One drawn shape; `row`/`col` index the grid cell (row 0 at the top)."""

    colour: str
    shape: str
    size: str
    row: int
    col: int


Pair = tuple[str, str]


@dataclass(frozen=True)
class ParsedCaption:
    """What a caption asserts, in the benchmark's vocabulary (anything else is ignored).

    `counts` holds (colour, shape, n) for "two red circles" and (None, None, n) for "three shapes".
    """

    pairs: frozenset[Pair] = frozenset()
    sizes: frozenset[tuple[str, str, str]] = frozenset()
    relations: frozenset[tuple[Pair, str, Pair]] = frozenset()
    counts: frozenset[tuple[str | None, str | None, int]] = frozenset()

    @property
    def empty(self) -> bool:
        return not (self.pairs or self.sizes or self.relations or self.counts)


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


# ----------------------------------------------------------------------------- captions


@dataclass
class _Group:
    colour: str
    shape: str
    objects: list[SynthObject] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.objects)

    @property
    def size(self) -> str | None:
        sizes = {o.size for o in self.objects}
        return sizes.pop() if len(sizes) == 1 else None


def _groups(objects: list[SynthObject]) -> list[_Group]:
    groups: dict[Pair, _Group] = {}
    for obj in objects:
        groups.setdefault((obj.colour, obj.shape), _Group(obj.colour, obj.shape)).objects.append(obj)
    return list(groups.values())


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _noun_phrase(group: _Group, rng: random.Random, article: str, size_prob: float) -> str:
    """`a small red circle`, `the blue box`, `two big green stars`, `red disc` (article "" = terse)."""
    singular, plural = rng.choice(SHAPE_SYNONYMS[group.shape])
    colour = "violet" if group.colour == "purple" and rng.random() < 0.2 else group.colour
    words = []
    if group.size is not None and rng.random() < size_prob:
        words.append(rng.choice(SIZE_SYNONYMS[group.size]))
    words.append(colour)
    if group.count == 1:
        words.append(singular)
        if article == "a":
            return f"{_article(words[0])} {' '.join(words)}"
        return f"{article} {' '.join(words)}".strip()
    words.append(plural)
    number = "a pair of" if group.count == 2 and rng.random() < 0.25 else NUMBER_NAMES[group.count]
    return f"{number} {' '.join(words)}"


def _join(phrases: list[str], rng: random.Random) -> str:
    if len(phrases) == 1:
        return phrases[0]
    comma = "," if len(phrases) > 2 and rng.random() < 0.5 else ""
    return f"{', '.join(phrases[:-1])}{comma} and {phrases[-1]}"


def _finish_sentence(text: str, rng: random.Random) -> str:
    text = text[0].upper() + text[1:]
    return text + rng.choice([".", ".", " .", ""])


def _background(rng: random.Random) -> str:
    return rng.choice(["on a gray background", "on a grey background", "against a grey backdrop",
                       "on a plain gray background"])


def _true_relations(groups: list[_Group]) -> list[tuple[_Group, str, _Group]]:
    """Relations between shapes that are the only one of their kind, so 'the red circle' is unambiguous."""
    unique = [g for g in groups if g.count == 1]
    found = []
    for a in unique:
        for b in unique:
            if a is b:
                continue
            oa, ob = a.objects[0], b.objects[0]
            if oa.col < ob.col:
                found.append((a, "left of", b))
            if oa.row < ob.row:
                found.append((a, "above", b))
    return found


def _caption_list(groups: list[_Group], rng: random.Random) -> str:
    phrases = [_noun_phrase(g, rng, "a", 0.5) for g in rng.sample(groups, len(groups))]
    text = _join(phrases, rng)
    if rng.random() < 0.3:
        text += " " + _background(rng)
    return _finish_sentence(text, rng)


def _caption_existential(groups: list[_Group], rng: random.Random) -> str:
    ordered = rng.sample(groups, len(groups))
    phrases = [_noun_phrase(g, rng, "a", 0.4) for g in ordered]
    opener = rng.choice(["there {be}", "this image shows", "a picture of", "an image with", "we can see"])
    opener = opener.format(be="is" if ordered[0].count == 1 else "are")
    return _finish_sentence(f"{opener} {_join(phrases, rng)}", rng)


def _caption_count(groups: list[_Group], rng: random.Random, objects: list[SynthObject]) -> str:
    total = len(objects)
    noun = rng.choice(["shape", "object", "item"]) + ("s" if total > 1 else "")
    phrases = [_noun_phrase(g, rng, "a", 0.5) for g in rng.sample(groups, len(groups))]
    lead = f"{NUMBER_NAMES[total]} {noun}"
    if rng.random() < 0.4:
        lead += " " + _background(rng)
    return _finish_sentence(f"{lead}: {_join(phrases, rng)}", rng)


def _caption_relation(groups: list[_Group], rng: random.Random) -> str | None:
    relations = _true_relations(groups)
    if not relations:
        return None
    a, relation, b = rng.choice(relations)
    if rng.random() < 0.5:
        a, relation, b = b, INVERSE[relation], a
    phrase = rng.choice(RELATION_PHRASES[relation])
    style = rng.randrange(3)
    if style == 0:
        text = f"{_noun_phrase(a, rng, 'a', 0.4)} {phrase} {_noun_phrase(b, rng, 'a', 0.4)}"
    elif style == 1:
        text = f"{_noun_phrase(a, rng, 'the', 0.4)} is {phrase} {_noun_phrase(b, rng, 'the', 0.4)}"
    else:
        text = f"there is {_noun_phrase(a, rng, 'a', 0.4)} {phrase} {_noun_phrase(b, rng, 'a', 0.4)}"
    text = _finish_sentence(text, rng)
    others = [g for g in groups if g is not a and g is not b]
    if others and rng.random() < 0.5:
        extra = _join([_noun_phrase(g, rng, "a", 0.4) for g in others], rng)
        text = text.rstrip(" .") + f". There {'is' if others[0].count == 1 else 'are'} also {extra}."
    return text


def _caption_terse(groups: list[_Group], rng: random.Random) -> str:
    phrases = [_noun_phrase(g, rng, "", 0.6) for g in rng.sample(groups, len(groups))]
    return ", ".join(phrases)


def _caption_background_first(groups: list[_Group], rng: random.Random) -> str:
    phrases = [_noun_phrase(g, rng, "a", 0.3) for g in rng.sample(groups, len(groups))]
    lead = rng.choice(["a gray background with", "a grey background with", "a plain grey backdrop with"])
    return _finish_sentence(f"{lead} {_join(phrases, rng)}", rng)


def write_captions(objects: list[SynthObject], rng: random.Random, count: int = 5) -> list[str]:
    """`count` captions in different styles (like five annotators), each true of the scene."""
    groups = _groups(objects)
    writers = [
        lambda: _caption_list(groups, rng),
        lambda: _caption_existential(groups, rng),
        lambda: _caption_count(groups, rng, objects),
        lambda: _caption_relation(groups, rng),
        lambda: _caption_relation(groups, rng),
        lambda: _caption_terse(groups, rng),
        lambda: _caption_background_first(groups, rng),
    ]
    order = rng.sample(range(len(writers)), len(writers))
    captions: list[str] = []
    for index in order:
        text = writers[index]()
        if text is not None and text not in captions:
            captions.append(text)
        if len(captions) == count:
            break
    while len(captions) < count:  # scenes with few options: vary the plain styles until distinct enough
        text = _caption_list(groups, rng) if rng.random() < 0.5 else _caption_existential(groups, rng)
        captions.append(text)
    return captions


# ----------------------------------------------------------------------------- parsing and scoring


def parse_caption(text: str) -> ParsedCaption:
    """Read back the (colour, shape) pairs, sizes, relations and counts a caption asserts.

    Grammar: `[number | "a pair of"] [size] colour shape`; a relation word between two such phrases in
    the same sentence relates them; `number shapes|objects|items|things` states the total. Words
    outside the vocabulary are ignored, so free-form model captions parse to what they say about it.
    """
    pairs: set[Pair] = set()
    sizes: set[tuple[str, str, str]] = set()
    relations: set[tuple[Pair, str, Pair]] = set()
    counts: set[tuple[str | None, str | None, int]] = set()
    for clause in re.split(r"[.;!?:]", text.lower()):
        tokens = re.findall(r"[a-z]+", clause)
        phrases: list[tuple[int, int, Pair]] = []  # (first token, last token, pair)
        for i, token in enumerate(tokens):
            if token in THING_WORDS and i > 0 and tokens[i - 1] in NUMBER_WORDS:
                counts.add((None, None, NUMBER_WORDS[tokens[i - 1]]))
                continue
            shape = SHAPE_WORDS.get(token)
            if shape is None or i == 0 or tokens[i - 1] not in COLOUR_WORDS:
                continue
            colour = COLOUR_WORDS[tokens[i - 1]]
            start = i - 1
            pairs.add((colour, shape))
            if start > 0 and tokens[start - 1] in SIZE_WORDS:
                start -= 1
                sizes.add((colour, shape, SIZE_WORDS[tokens[start]]))
            if start > 0 and tokens[start - 1] in NUMBER_WORDS:
                start -= 1
                counts.add((colour, shape, NUMBER_WORDS[tokens[start]]))
            elif start >= 2 and tokens[start - 1] == "of" and tokens[start - 2] == "pair":
                start -= 2
                if start > 0 and tokens[start - 1] == "a":
                    start -= 1
                counts.add((colour, shape, 2))
            phrases.append((start, i, (colour, shape)))
        for (_, end_a, pair_a), (start_b, _, pair_b) in itertools.pairwise(phrases):
            found = {RELATION_WORDS[t] for t in tokens[end_a + 1:start_b] if t in RELATION_WORDS}
            if len(found) == 1:
                relations.add((pair_a, found.pop(), pair_b))
    return ParsedCaption(frozenset(pairs), frozenset(sizes), frozenset(relations), frozenset(counts))


def _canonical(relation: tuple[Pair, str, Pair]) -> tuple[Pair, str, Pair]:
    """`B right of A` is the same fact as `A left of B`; below likewise becomes above."""
    a, rel, b = relation
    return (b, INVERSE[rel], a) if rel in ("right of", "below") else relation


def true_facts(objects: list[SynthObject]) -> dict[str, set[Any]]:
    """The facts recall is measured against: distinct pairs, (pair, size) triples, relations between
    differently described shapes (canonical left-of / above), counts of repeated kinds and the total."""
    pairs = {(o.colour, o.shape) for o in objects}
    sizes = {(o.colour, o.shape, o.size) for o in objects}
    relations: set[tuple[Pair, str, Pair]] = set()
    for a in objects:
        for b in objects:
            if (a.colour, a.shape) == (b.colour, b.shape):
                continue
            if a.col < b.col:
                relations.add(((a.colour, a.shape), "left of", (b.colour, b.shape)))
            if a.row < b.row:
                relations.add(((a.colour, a.shape), "above", (b.colour, b.shape)))
    kinds = Counter((o.colour, o.shape) for o in objects)
    counts: set[tuple[str | None, str | None, int]] = {(c, s, n) for (c, s), n in kinds.items() if n > 1}
    counts.add((None, None, len(objects)))
    return {"pairs": pairs, "sizes": sizes, "relations": relations, "counts": counts}


def _count_is_true(claim: tuple[str | None, str | None, int], objects: list[SynthObject]) -> bool:
    colour, shape, n = claim
    if colour is None:
        return n == len(objects)
    return n == sum(1 for o in objects if (o.colour, o.shape) == (colour, shape))


def judge(parsed: ParsedCaption, objects: list[SynthObject]) -> dict[str, tuple[int, int, int, int]]:
    """Per category: (asserted, correct, true facts, true facts asserted)."""
    facts = true_facts(objects)
    relations = {_canonical(r) for r in parsed.relations}
    correct_counts = sum(_count_is_true(c, objects) for c in parsed.counts)
    return {
        "pairs": (len(parsed.pairs), len(parsed.pairs & facts["pairs"]), len(facts["pairs"]),
                  len(parsed.pairs & facts["pairs"])),
        "sizes": (len(parsed.sizes), len(parsed.sizes & facts["sizes"]), len(facts["sizes"]),
                  len(parsed.sizes & facts["sizes"])),
        "relations": (len(relations), len(relations & facts["relations"]), len(facts["relations"]),
                      len(relations & facts["relations"])),
        "counts": (len(parsed.counts), correct_counts, len(facts["counts"]), len(parsed.counts & facts["counts"])),
    }


def alignment_scores(captions: dict[str, str], truth: dict[str, list[SynthObject]]) -> dict[str, Any]:
    """Precision and recall (micro-averaged over images) of what the captions assert, per category.

    precision = correct assertions / assertions; recall = true facts asserted / true facts (see
    `true_facts`). A category with no assertions has precision None. Existence semantics: "a red
    circle is left of a blue square" is true if some red circle is left of some blue square.
    """
    unknown = [name for name in captions if name not in truth]
    if unknown:
        raise DataError(f"alignment_scores: {len(unknown)} captioned images are not in the ground truth "
                        f"(e.g. {unknown[0]!r}); score predictions for the synthetic dataset they came from")
    totals = {k: [0, 0, 0, 0] for k in ("pairs", "sizes", "relations", "counts")}
    empty = 0
    for name, caption in captions.items():
        parsed = parse_caption(caption)
        empty += parsed.empty
        for category, values in judge(parsed, truth[name]).items():
            for i, v in enumerate(values):
                totals[category][i] += v
    result: dict[str, Any] = {"images": len(captions), "captions_without_assertions": empty}
    for category, (asserted, correct, facts, found) in totals.items():
        result[category] = {
            "precision": correct / asserted if asserted else None,
            "recall": found / facts if facts else None,
            "asserted": asserted,
            "correct": correct,
            "facts": facts,
            "found": found,
        }
    return result


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
