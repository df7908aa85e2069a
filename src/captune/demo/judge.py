"""The benchmark's caption judge: what a caption asserts (`parse_caption`), checked against the ground
truth (`judge`, `alignment_scores`). Free-form model captions parse to what they say about the scene."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from captune.demo.captions import INVERSE, Pair
from captune.demo.synth import COLOURS, SynthObject
from captune.errors import DataError

# Words a caption may use for each attribute. Every synonym maps back to exactly one value.
COLOUR_WORDS = {**{c: c for c in COLOURS}, "violet": "purple"}
SHAPE_WORDS = {
    "circle": "circle", "circles": "circle", "disc": "circle", "discs": "circle", "disk": "circle",
    "disks": "circle", "square": "square", "squares": "square", "box": "square", "boxes": "square",
    "triangle": "triangle", "triangles": "triangle", "diamond": "diamond", "diamonds": "diamond",
    "rhombus": "diamond", "rhombuses": "diamond", "cross": "cross", "crosses": "cross",
    "star": "star", "stars": "star",
}
SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small", "large": "large", "big": "large"}
NUMBER_WORDS = {"one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9}
THING_WORDS = {"shape", "shapes", "object", "objects", "item", "items", "thing", "things"}
RELATION_WORDS = {"left": "left of", "right": "right of", "above": "above", "over": "above", "below": "below",
                  "under": "below", "beneath": "below", "underneath": "below"}


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
    # A pair, size or relation is correct exactly when it is a true fact; a count may be true without
    # being one of the counted facts (a single shape's "one red circle").
    claims = {"pairs": parsed.pairs, "sizes": parsed.sizes, "relations": {_canonical(r) for r in parsed.relations}}
    out = {k: (len(c), len(c & facts[k]), len(facts[k]), len(c & facts[k])) for k, c in claims.items()}
    correct_counts = sum(_count_is_true(c, objects) for c in parsed.counts)
    out["counts"] = (len(parsed.counts), correct_counts, len(facts["counts"]), len(parsed.counts & facts["counts"]))
    return out


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


