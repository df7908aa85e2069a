"""Diversity and mode-collapse measures for one system's captions (one caption per image).

Tokens here are lower-cased word runs (`[^\\W_]+` with inner apostrophes kept, so "man's" is one
token); punctuation is ignored. Each measure says where it comes from:

- `div/TTR` — type-token ratio over all captions' tokens together. It falls as the corpus grows,
  so compare it only at equal size; van Miltenburg et al. (2018, "Measuring the Diversity of
  Automatic Image Descriptions", COLING) discuss it and its length-independent variants:
- `div/MATTR` — moving-average TTR (Covington & McFall 2010): mean TTR over every window of
  `window` consecutive tokens (captions concatenated in image order); TTR if fewer tokens.
- `div/MSTTR` — mean segmental (chunked) TTR: mean TTR of consecutive non-overlapping chunks of
  `window` tokens, a trailing partial chunk dropped; TTR if fewer tokens than one chunk.
- `div/seq-rep-n` (n = 1..4) — Welleck et al. (2019, "Neural Text Generation with Unlikelihood
  Training"): per caption 1 - |unique n-grams| / |n-grams| (0 for captions with no n-gram), averaged
  over captions. **The report's "Repetition Rate" is `div/seq-rep-4`** (`REPETITION_RATE`), the
  measure Welleck et al. report; it is non-zero only when a caption repeats a 4-gram, i.e. loops.
- `div/Duplicate Rate` — 1 - unique captions / images (captions compared after tokenisation):
  the share of images that received a caption already given to another image.
- `div/distinct-1`, `div/distinct-2` — Li et al. (2016, "A Diversity-Promoting Objective Function
  for Neural Conversation Models"): distinct n-grams / total n-grams over all captions.
- `div/Vocabulary` — number of distinct tokens; `div/Mean Length` — mean tokens per caption.
- `div/Novelty` — share of captions not found among the training captions (compared after
  tokenisation; van Miltenburg et al. 2018's "% novel"); only when training captions are given.
- `div/Self-BLEU` (optional) — Zhu et al. (2018, Texygen): mean over captions of NLTK sentence
  BLEU-4 (smoothing method1) of a caption against all *other* captions; high means samey output.
- `top_captions` — the most frequent captions with their counts.

Mean-type measures (Mean Length, seq-rep-n, Novelty) have per-image values and bootstrap CIs.
The set-based ones (TTR, MATTR, MSTTR, distinct-n, Vocabulary, Duplicate Rate, Self-BLEU) get no
CI: resampling images with replacement duplicates captions, which biases them downward by itself.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from captune.metrics.nltk_style import brevity_penalty

REPETITION_RATE = "div/seq-rep-4"
TTR_NOTE = ("TTR (types / tokens over all captions together) falls as the number of captions grows, so compare it "
            "only between systems scored on the same images ({images} here), never across runs of another size.")
REPETITION_NOTE = ("Repetition Rate is div/seq-rep-4 (Welleck et al. 2019): per caption, 1 − unique 4-grams / "
                   "4-grams, averaged over captions; it is above 0 only when a caption repeats a 4-gram (loops).")
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens used by every diversity measure."""
    return _TOKEN.findall(text.lower())


def normalise(text: str) -> str:
    """The form in which captions are compared for duplicates and novelty."""
    return " ".join(tokens(text))


def _ngrams(toks: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def ttr(flat: Sequence[str]) -> float:
    return len(set(flat)) / len(flat) if flat else 0.0


def mattr(flat: Sequence[str], window: int = 1000) -> float:
    """Moving-average type-token ratio with a sliding window (O(tokens))."""
    if len(flat) <= window:
        return ttr(flat)
    counts = Counter(flat[:window])
    total = len(counts)
    for i in range(window, len(flat)):
        out, new = flat[i - window], flat[i]
        counts[out] -= 1
        if counts[out] == 0:
            del counts[out]
        counts[new] += 1
        total += len(counts)
    return total / ((len(flat) - window + 1) * window)


def msttr(flat: Sequence[str], window: int = 1000) -> float:
    """Mean segmental TTR over full chunks of `window` tokens."""
    chunks = len(flat) // window
    if chunks == 0:
        return ttr(flat)
    return float(np.mean([ttr(flat[i * window : (i + 1) * window]) for i in range(chunks)]))


def seq_rep(toks: Sequence[str], n: int) -> float:
    """1 - unique n-grams / n-grams within one caption (0 when it has no n-gram)."""
    grams = _ngrams(toks, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_n(captions: Sequence[Sequence[str]], n: int) -> float:
    grams = [g for toks in captions for g in _ngrams(toks, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(captions: Sequence[Sequence[str]], n: int = 4, epsilon: float = 0.1) -> float | None:
    """Mean NLTK `sentence_bleu` (weights 1/n, SmoothingFunction().method1) of each caption against
    all others, in O(total n-grams) via the top-two count of every n-gram."""
    m = len(captions)
    if m < 2:
        return None
    per_order = []
    for k in range(1, n + 1):
        grams = [Counter(_ngrams(t, k)) for t in captions]
        top1: dict[tuple[str, ...], int] = {}
        n_top1: Counter[tuple[str, ...]] = Counter()
        top2: dict[tuple[str, ...], int] = {}
        for c in grams:
            for g, v in c.items():
                best = top1.get(g, 0)
                if v > best:
                    top2[g] = best
                    top1[g], n_top1[g] = v, 1
                elif v == best:
                    n_top1[g] += 1
                    top2[g] = v
                elif v > top2.get(g, 0):
                    top2[g] = v
        per_order.append((grams, top1, n_top1, top2))
    lengths = Counter(len(t) for t in captions)
    scores = []
    for i, toks in enumerate(captions):
        hyp_len = len(toks)
        others = lengths.copy()
        others[hyp_len] -= 1
        ref_len = min((ln for ln, c in others.items() if c > 0), key=lambda ln: (abs(ln - hyp_len), ln))
        logs, first_num = [], 0
        for k, (grams, top1, n_top1, top2) in enumerate(per_order, start=1):
            num = 0
            for g, v in grams[i].items():
                other_max = top2.get(g, 0) if (v == top1[g] and n_top1[g] == 1) else top1[g]
                num += min(v, other_max)
            den = max(1, sum(grams[i].values()))
            if k == 1:
                first_num = num
            logs.append(math.log(num / den) if num else math.log((num + epsilon) / den))
        if first_num == 0:
            scores.append(0.0)
            continue
        scores.append(brevity_penalty(hyp_len, ref_len) * math.exp(math.fsum((1 / n) * lg for lg in logs)))
    return float(np.mean(scores))


@dataclass
class DiversityResult:
    """Corpus values, per-image values for the mean-type measures, and the top captions."""

    values: dict[str, float | None]
    per_image: dict[str, np.ndarray] = field(default_factory=dict)
    top_captions: list[tuple[str, int]] = field(default_factory=list)


def diversity(captions: Sequence[str], train_captions: Iterable[str] | None = None, *, window: int = 1000,
              with_self_bleu: bool = False, top_k: int = 10) -> DiversityResult:
    """All diversity measures for one caption per image, in image order."""
    toks = [tokens(c) for c in captions]
    flat = [t for ts in toks for t in ts]
    norm = [" ".join(ts) for ts in toks]
    values: dict[str, float | None] = {
        "div/TTR": ttr(flat),
        "div/MATTR": mattr(flat, window),
        "div/MSTTR": msttr(flat, window),
        "div/distinct-1": distinct_n(toks, 1),
        "div/distinct-2": distinct_n(toks, 2),
        "div/Vocabulary": float(len(set(flat))),
        "div/Duplicate Rate": 1.0 - len(set(norm)) / len(norm) if norm else 0.0,
    }
    per_image = {"div/Mean Length": np.array([len(ts) for ts in toks], dtype=np.float64)}
    for n in range(1, 5):
        per_image[f"div/seq-rep-{n}"] = np.array([seq_rep(ts, n) for ts in toks])
    if train_captions is not None:
        train = {normalise(c) for c in train_captions}
        per_image["div/Novelty"] = np.array([0.0 if c in train else 1.0 for c in norm])
    if with_self_bleu:
        values["div/Self-BLEU"] = self_bleu(toks)
    for name, arr in per_image.items():
        values[name] = float(arr.mean()) if len(arr) else 0.0
    top = Counter(norm).most_common(top_k)
    return DiversityResult(values=values, per_image=per_image, top_captions=top)
