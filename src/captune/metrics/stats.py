"""Uncertainty from per-image sufficient statistics: bootstrap CIs and a paired significance test.

Every corpus metric is written as `value = f(sum over images of s_i)`, where `s_i` is a small
vector per image: BLEU's lengths and clipped n-gram counts, METEOR's 23 alignment statistics, or
simply the per-image score for metrics that are means (CIDEr-D, ROUGE, NLTK METEOR, ...). A
bootstrap replicate is then one matrix product — resample counts (B x n) @ stats (n x k) — and
`f` applied to each row, so 1,000 replicates of every metric cost milliseconds, and resampling
is *exactly* recomputing the corpus metric on the resampled image set (CIDEr-D's document
frequencies are held at their full-set values, as the per-image scores define them).

- CI: percentile bootstrap over images (Efron & Tibshirani 1993), `samples` >= 1,000, seeded; the
  same resampled image sets are used for every metric and system, so CIs are comparable.
- Paired test: approximate randomisation (Noreen 1989; Riezler & Maxwell 2005): under the null
  the two systems' outputs for an image are exchangeable, so each trial swaps the two systems'
  statistics on a random half of the images and recomputes the difference; the two-sided p-value
  is (1 + #{|diff*| >= |diff|}) / (1 + trials). Its floor, 1 / (1 + trials), is printed "p ≤ 0.001"
  (`format_p`), and tables with several tests offer Holm-adjusted p-values (`holm`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Aggregate = Callable[[np.ndarray, int], np.ndarray]  # (B, k) summed stats, n images -> (B,)


def mean_aggregate(sums: np.ndarray, n: int) -> np.ndarray:
    """f for metrics that are a mean of per-image scores."""
    return sums[:, 0] / n


@dataclass
class Statistic:
    """One metric of one system: per-image stats (n, k) and how to turn their sum into the value."""

    name: str
    stats: np.ndarray
    aggregate: Aggregate
    ci_method: str
    per_image: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.stats.shape[0])

    def value(self) -> float:
        return float(self.aggregate(self.stats.sum(0, keepdims=True), self.n)[0])

    def replicates(self, weights: np.ndarray) -> np.ndarray:
        return self.aggregate(weights @ self.stats, self.n)


def mean_statistic(name: str, per_image: np.ndarray, ci_method: str = "percentile bootstrap of the mean") -> Statistic:
    arr = np.asarray(per_image, dtype=np.float64)
    return Statistic(name, arr.reshape(-1, 1), mean_aggregate, ci_method, per_image=arr)


def bootstrap_weights(n: int, samples: int = 1000, seed: int = 0) -> np.ndarray:
    """(samples, n) resample counts: row b says how often each image is drawn in replicate b."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=samples).astype(np.float64)


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap_ci(stat: Statistic, samples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI over images for one statistic."""
    return percentile_ci(stat.replicates(bootstrap_weights(stat.n, samples, seed)), level)


@dataclass
class PairedResult:
    metric: str
    value_a: float
    value_b: float
    delta: float  # a - b
    p_value: float
    trials: int
    method: str = "approximate randomisation (paired, two-sided)"


def swap_masks(n: int, trials: int = 1000, seed: int = 0) -> np.ndarray:
    """(trials, n) 0/1 matrix: 1 where the two systems' outputs for an image are swapped."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, size=(trials, n)).astype(np.float64)


def paired_test(a: Statistic, b: Statistic, trials: int = 1000, seed: int = 0,
                masks: np.ndarray | None = None) -> PairedResult:
    """Is metric(a) - metric(b) larger than swapping outputs per image would give by chance?"""
    if a.stats.shape != b.stats.shape:
        raise ValueError(f"{a.name}: systems must be scored on the same images to be compared")
    n = a.n
    m = swap_masks(n, trials, seed) if masks is None else masks
    sum_a, sum_b = a.stats.sum(0), b.stats.sum(0)
    moved = m @ (b.stats - a.stats)  # what swapping adds to a's sum (and removes from b's)
    diff = a.aggregate(sum_a[None, :] + moved, n) - b.aggregate(sum_b[None, :] - moved, n)
    va, vb = a.value(), b.value()
    observed = va - vb
    # A tolerance so ties (e.g. identical systems) count as "at least as extreme".
    extreme = np.abs(diff) >= abs(observed) - 1e-12 * max(1.0, abs(observed))
    p = (1 + int(np.count_nonzero(extreme))) / (1 + m.shape[0])
    return PairedResult(a.name, va, vb, observed, float(p), int(m.shape[0]))


# ----------------------------------------------------------------------------- wording of p-values


def p_floor(trials: int) -> float:
    """The smallest p approximate randomisation can give with `trials` trials: 1 / (trials + 1)."""
    return 1.0 / (trials + 1)


def at_floor(p: float, trials: int | None) -> bool:
    """True where p is the test's floor: the true p may be anywhere below it."""
    return trials is not None and trials > 0 and p <= p_floor(trials) * (1 + 1e-9)


def _round_up(x: float, significant: int = 2) -> float:
    """x rounded *up* to `significant` digits, so that "p ≤ bound" stays true after rounding."""
    if x <= 0:
        return 0.0
    scale = 10.0 ** (significant - 1 - math.floor(math.log10(x)))
    return math.ceil(x * scale - 1e-9) / scale


def format_p(p: float | None, trials: int | None = None, *, bound: bool | None = None, prefix: bool = True) -> str:
    """`p = 0.0123`, or `p ≤ 0.001` where p sits at the floor 1/(trials + 1): printing "p = 0.0010" there
    would claim a precision more trials could overturn. `bound` forces (or stops) the "≤" form, e.g. for a
    Holm-adjusted p whose raw p was at the floor; `prefix=False` drops "p " for table columns."""
    if p is None or not math.isfinite(p):
        return "–"
    upper = at_floor(p, trials) if bound is None else bound
    if upper:
        text = f"≤ {_round_up(min(p, 1.0)):g}"
    else:
        text = f"{p:.4f}" if p >= 1e-3 else f"{p:.1e}"
        text = text if not prefix else f"= {text}"
    return f"p {text}" if prefix else text


def holm_texts(tests: Sequence[tuple[float, int | None]]) -> list[tuple[float, str]]:
    """(Holm-adjusted p, its text for a table column) for (raw p, trials) pairs taken as one family. An
    adjusted p whose raw p sat at the floor is an upper bound too (every smaller raw p is then at the floor)."""
    adjusted = holm([p for p, _ in tests])
    return [(a, format_p(a, bound=at_floor(p, t), prefix=False)) for a, (p, t) in zip(adjusted, tests, strict=True)]


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (Holm 1979), in the input order: sorted ascending, the i-th
    smallest (from 0) becomes max over j <= i of min(1, (m - j) p_(j)). Rejecting where the adjusted
    p < alpha controls the family-wise error rate over the m comparisons at alpha."""
    m = len(p_values)
    order = sorted(range(m), key=lambda k: p_values[k])
    out = [0.0] * m
    running = 0.0
    for rank, k in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[k]))
        out[k] = running
    return out
