"""The benchmark's caption grammar: five captions per scene in different styles, like five annotators
(word order, synonyms, articles, optional detail), each true of the scene."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from captune.demo.synth import SynthObject

Pair = tuple[str, str]
"""(colour, shape)"""

SHAPE_SYNONYMS = {
    "circle": (("circle", "circles"), ("disc", "discs")),
    "square": (("square", "squares"), ("box", "boxes")),
    "triangle": (("triangle", "triangles"),),
    "diamond": (("diamond", "diamonds"), ("rhombus", "rhombuses")),
    "cross": (("cross", "crosses"),),
    "star": (("star", "stars"),),
}
SIZE_SYNONYMS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
NUMBER_NAMES = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}
RELATION_PHRASES = {
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


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


