"""COCO caption metrics (BLEU-1..4, ROUGE-L, CIDEr-D, METEOR) equal to pycocoevalcap's numbers.

pycocoevalcap recomputes everything about the references for every system it scores. Here the
reference side — BLEU's clipped max-counts and lengths, CIDEr's document frequencies and tf-idf
vectors, ROUGE-L's token lists — is computed once in `CocoReferences` and then reused for every
hypothesis, so an evaluation grid pays for its references once. The arithmetic follows
pycocoevalcap step by step (including BLEU's tiny/small guards and its per-image BLEU, CIDEr-D's
clipping, Gaussian length penalty and x10, ROUGE-L's beta=1.2 and split on single spaces);
tests compare against pycocoevalcap itself. All inputs here are PTB-tokenised strings.

The `Bleu`, `Cider`, `RougeL` and `Meteor` classes keep pycocoevalcap's `compute_score(gts, res)`
shape for drop-in use.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from captune.metrics.meteor import MeteorProcess, meteor_scores

TINY, SMALL = 1e-15, 1e-9
BLEU_STATS = 10  # testlen, reflen (closest), guess_1..4, correct_1..4
CIDER_SIGMA = 6.0
ROUGE_BETA = 1.2


def ngram_counts(words: Sequence[str], n: int = 4) -> Counter[tuple[str, ...]]:
    """All 1..n-grams of a token list with their counts (in pycocoevalcap's order)."""
    counts: Counter[tuple[str, ...]] = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def lcs_masks(a: Sequence[str]) -> dict[str, int]:
    """Per-symbol bit masks of `a`'s positions, reusable for every LCS against `a`."""
    masks: dict[str, int] = {}
    for i, x in enumerate(a):
        masks[x] = masks.get(x, 0) | (1 << i)
    return masks


def lcs_from_masks(masks: dict[str, int], n: int, b: Sequence[str]) -> int:
    """LCS length of a (given as `lcs_masks(a)`, `len(a)`) and b, bit-parallel (Hyyrö 2004)."""
    if not n or not b:
        return 0
    full = (1 << n) - 1
    v = full
    get = masks.get
    for y in b:
        u = v & get(y, 0)
        v = ((v + u) | (v - u)) & full
    return n - v.bit_count()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence: O(len(b)) big-int steps."""
    return lcs_from_masks(lcs_masks(a), len(a), b)


def bleu_from_stats(sums: np.ndarray, n: int = 4) -> np.ndarray:
    """pycocoevalcap's corpus BLEU-1..n from summed stats (..., 10) -> (..., n)."""
    s = np.asarray(sums, dtype=np.float64)
    testlen, reflen = s[..., 0], s[..., 1]
    guess, correct = s[..., 2 : 2 + n], s[..., 6 : 6 + n]
    # A running product, as pycocoevalcap multiplies, so results agree to the last bit or so.
    bleus = np.cumprod((correct + TINY) / (guess + SMALL), axis=-1) ** (1.0 / np.arange(1, n + 1))
    ratio = (testlen + TINY) / (reflen + SMALL)
    with np.errstate(divide="ignore", over="ignore"):
        penalty = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return bleus * penalty[..., None]


class CocoReferences:
    """Reference-side state for BLEU, CIDEr-D and ROUGE-L over one fixed set of images.

    `refs` maps image id -> PTB-tokenised references. CIDEr-D's document frequencies and the
    log corpus size are those of this image set, as in pycocoevalcap (which computes them over the
    images scored together), so a system is comparable only over the same image set.
    """

    def __init__(self, refs: Mapping[Any, Sequence[str]], n: int = 4, sigma: float = CIDER_SIGMA) -> None:
        if not refs:
            raise ValueError("no references")
        self.n, self.sigma = n, sigma
        self.image_ids = list(refs)
        self._bleu: dict[Any, tuple[list[int], dict[tuple[str, ...], int]]] = {}
        self._rouge: dict[Any, list[tuple[dict[str, int], int]]] = {}
        cooked: dict[Any, list[Counter[tuple[str, ...]]]] = {}
        df: defaultdict[tuple[str, ...], float] = defaultdict(float)
        for image_id, texts in refs.items():
            if not texts:
                raise ValueError(f"image {image_id!r} has no references")
            counts = [ngram_counts(t.split(), n) for t in texts]
            cooked[image_id] = counts
            maxcounts: dict[tuple[str, ...], int] = {}
            for c in counts:
                for gram, k in c.items():
                    if k > maxcounts.get(gram, 0):
                        maxcounts[gram] = k
            self._bleu[image_id] = ([len(t.split()) for t in texts], maxcounts)
            self._rouge[image_id] = [(lcs_masks(w), len(w)) for w in (t.split(" ") for t in texts)]
            for gram in {g for c in counts for g in c}:
                df[gram] += 1
        self.df = dict(df)
        # Hypothesis-side work depends only on the text; collapsed systems repeat texts a lot.
        self._hyp_counts: dict[str, Counter[tuple[str, ...]]] = {}
        self._hyp_vec: dict[str, Any] = {}
        self.log_n = math.log(float(len(refs)))
        self._idf: dict[tuple[str, ...], float] = {}
        self._cider = {i: [self._vec(c) for c in cs] for i, cs in cooked.items()}

    # ----------------------------------------------------------------- BLEU
    def bleu_stats(self, image_id: Any, hyp: str) -> np.ndarray:
        """[testlen, closest reflen, guess_1..4, correct_1..4] for one hypothesis."""
        reflens, maxcounts = self._bleu[image_id]
        words = hyp.split()
        counts = self._hyp_counts.get(hyp)
        if counts is None:
            counts = self._hyp_counts[hyp] = ngram_counts(words, self.n)
        testlen = len(words)
        out = np.zeros(BLEU_STATS)
        out[0] = testlen
        out[1] = min((abs(rl - testlen), rl) for rl in reflens)[1]
        for k in range(1, self.n + 1):
            out[1 + k] = max(testlen - k + 1, 0)
        for gram, count in counts.items():
            out[5 + len(gram)] += min(maxcounts.get(gram, 0), count)
        return out

    # ----------------------------------------------------------------- CIDEr-D
    def _vec(self, counts: Counter[tuple[str, ...]]) -> tuple[list[dict[tuple[str, ...], float]], list[float], int]:
        """tf-idf vectors per n, their norms and the length, exactly as pycocoevalcap's counts2vec
        (plain floats: the same IEEE operations in the same order, without numpy scalar overhead)."""
        vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(self.n)]
        norm = [0.0] * self.n
        length = 0
        idf = self._idf
        for gram, tf in counts.items():
            k = len(gram) - 1
            weight = idf.get(gram)
            if weight is None:
                weight = idf[gram] = self.log_n - math.log(max(1.0, self.df.get(gram, 0.0)))
            value = float(tf) * weight
            vec[k][gram] = value
            norm[k] += pow(value, 2)
            if k == 1:
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    def cider(self, image_id: Any, hyp: str) -> float:
        """CIDEr-D of one hypothesis against this image's references (pycocoevalcap's value)."""
        cached = self._hyp_vec.get(hyp)
        if cached is None:
            counts = self._hyp_counts.get(hyp)
            if counts is None:
                counts = self._hyp_counts[hyp] = ngram_counts(hyp.split(), self.n)
            cached = self._hyp_vec[hyp] = self._vec(counts)
        vec, norm, length = cached
        refs = self._cider[image_id]
        score = [0.0] * self.n
        two_sigma_sq = 2 * self.sigma**2
        for vec_r, norm_r, length_r in refs:
            delta = float(length - length_r)
            penalty = np.e ** (-(delta**2) / two_sigma_sq)
            for k in range(self.n):
                ref_k = vec_r[k]
                val = 0.0
                # Only shared n-grams add anything; summed in hypothesis order as pycocoevalcap does.
                for gram, value in vec[k].items():
                    r = ref_k.get(gram)
                    if r is not None:
                        val += min(value, r) * r
                if norm[k] != 0 and norm_r[k] != 0:
                    val /= norm[k] * norm_r[k]
                score[k] += val * penalty
        total = 0.0
        for x in score:
            total += x
        return total / self.n / len(refs) * 10.0

    # ----------------------------------------------------------------- ROUGE-L
    def rouge_l(self, image_id: Any, hyp: str) -> float:
        """pycocoevalcap's ROUGE-L (beta 1.2, max precision and max recall over references)."""
        cand = hyp.split(" ")
        prec, rec = [], []
        for masks, ref_len in self._rouge[image_id]:
            lcs = lcs_from_masks(masks, ref_len, cand)
            prec.append(lcs / float(len(cand)))
            rec.append(lcs / float(ref_len))
        p, r = max(prec), max(rec)
        if p != 0 and r != 0:
            return ((1 + ROUGE_BETA**2) * p * r) / float(r + ROUGE_BETA**2 * p)
        return 0.0


# --------------------------------------------------------------------------- compute_score shape


def _check(gts: Mapping[Any, Sequence[str]], res: Mapping[Any, Sequence[str]]) -> list[Any]:
    if set(gts) != set(res):
        raise ValueError("gts and res must have the same image ids")
    for i in res:
        if len(res[i]) != 1:
            raise ValueError(f"image {i!r}: exactly one hypothesis expected, got {len(res[i])}")
    return list(gts)


class Bleu:
    """pycocoevalcap-compatible BLEU-1..n: `compute_score` -> ([corpus BLEU-k], [[per-image BLEU-k]])."""

    def __init__(self, n: int = 4) -> None:
        self.n = n

    def compute_score(self, gts: Mapping[Any, Sequence[str]], res: Mapping[Any, Sequence[str]]) -> Any:
        ids = _check(gts, res)
        refs = CocoReferences({i: gts[i] for i in ids}, n=self.n)
        stats = np.array([refs.bleu_stats(i, res[i][0]) for i in ids])
        corpus = bleu_from_stats(stats.sum(0), self.n)
        per_image = bleu_from_stats(stats, self.n)
        return [float(x) for x in corpus], [list(map(float, per_image[:, k])) for k in range(self.n)]

    def method(self) -> str:
        return "Bleu"


class _PerImage:
    """pycocoevalcap-compatible mean of one per-image `CocoReferences` score: -> (mean, per-image array)."""

    score = ""  # the CocoReferences method
    name = ""

    def compute_score(self, gts: Mapping[Any, Sequence[str]], res: Mapping[Any, Sequence[str]]) -> Any:
        ids = _check(gts, res)
        score = getattr(CocoReferences({i: gts[i] for i in ids}), self.score)
        scores = np.array([score(i, res[i][0]) for i in ids])
        return float(np.mean(scores)), scores

    def method(self) -> str:
        return self.name


class Cider(_PerImage):
    """CIDEr-D."""

    score, name = "cider", "CIDEr"


class RougeL(_PerImage):
    """ROUGE-L."""

    score, name = "rouge_l", "Rouge"


class Meteor:
    """pycocoevalcap-compatible METEOR on a shared `MeteorProcess`: -> (corpus, per-image list)."""

    def __init__(self, process: MeteorProcess | None = None) -> None:
        self.process = process or MeteorProcess()

    def compute_score(self, gts: Mapping[Any, Sequence[str]], res: Mapping[Any, Sequence[str]]) -> Any:
        ids = _check(gts, res)
        corpus, per_image, _ = meteor_scores(self.process, [(res[i][0], gts[i]) for i in ids])
        return corpus, [float(x) for x in per_image]

    def method(self) -> str:
        return "METEOR"
