"""Bootstrap CIs cover the truth in simulation; resampling stats equals recomputing; paired test behaves."""

from __future__ import annotations

import random

import numpy as np
import pytest

from captune.metrics.coco import Bleu, CocoReferences, bleu_from_stats
from captune.metrics.stats import (
    Statistic,
    bootstrap_ci,
    bootstrap_weights,
    mean_statistic,
    paired_test,
    swap_masks,
)


def _bleu4(sums: np.ndarray, _n: int) -> np.ndarray:
    return bleu_from_stats(sums)[:, 3]


def _bleu_population(rng: np.random.Generator, size: int) -> np.ndarray:
    """Per-image BLEU statistics of a synthetic captioner: lengths and clipped n-gram matches."""
    testlen = rng.poisson(10, size) + 1
    reflen = np.maximum(1, testlen + rng.integers(-3, 4, size))
    guess = np.stack([np.maximum(testlen - k, 0) for k in range(4)], axis=1)
    p = rng.beta(2, 3, size)[:, None] ** np.arange(1, 5)
    correct = rng.binomial(guess, p)
    return np.column_stack([testlen, reflen, guess, correct]).astype(float)


def test_ci_covers_the_mean_in_simulation() -> None:
    rng = np.random.default_rng(0)
    truth = 2 / 7  # mean of Beta(2, 5)
    hits = 0
    for rep in range(200):
        sample = rng.beta(2, 5, 150)
        lo, hi = bootstrap_ci(mean_statistic("m", sample), samples=1000, seed=rep)
        hits += lo <= truth <= hi
    assert 0.90 <= hits / 200 <= 0.99


def test_ci_covers_corpus_bleu_in_simulation() -> None:
    rng = np.random.default_rng(1)
    population = _bleu_population(rng, 100_000)
    truth = float(bleu_from_stats(population.sum(0))[3])
    hits = 0
    for rep in range(150):
        sample = population[rng.choice(len(population), 300, replace=False)]
        lo, hi = bootstrap_ci(Statistic("bleu4", sample, _bleu4, "test"), samples=1000, seed=rep)
        hits += lo <= truth <= hi
    assert 0.88 <= hits / 150 <= 0.99


def test_a_replicate_is_the_metric_of_the_resampled_images() -> None:
    rng = random.Random(2)
    vocab = ["a", "the", "dog", "man", "runs", "on", "grass", "red", "ball", "in", "water"]
    refs = {i: [" ".join(rng.choices(vocab, k=rng.randint(3, 12))) for _ in range(3)] for i in range(60)}
    hyps = {i: " ".join(rng.choices(vocab, k=rng.randint(1, 12))) for i in range(60)}
    coco_refs = CocoReferences(refs)
    stats = np.array([coco_refs.bleu_stats(i, hyps[i]) for i in refs])
    weights = bootstrap_weights(len(refs), samples=5, seed=3)
    replicates = Statistic("bleu", stats, lambda s, n: bleu_from_stats(s), "test").replicates(weights)
    ids = list(refs)
    for b in range(5):
        drawn = [ids[k] for k in range(len(ids)) for _ in range(int(weights[b, k]))]
        gts = {j: refs[i] for j, i in enumerate(drawn)}
        res = {j: [hyps[i]] for j, i in enumerate(drawn)}
        corpus, _ = Bleu(4).compute_score(gts, res)
        np.testing.assert_allclose(replicates[b], corpus, rtol=0, atol=1e-12)


def test_paired_test_identical_different_and_null() -> None:
    rng = np.random.default_rng(4)
    a = mean_statistic("m", rng.normal(0.5, 0.1, 400))
    assert paired_test(a, a).p_value == 1.0
    b = mean_statistic("m", a.per_image - 0.05 + rng.normal(0, 0.02, 400))
    result = paired_test(a, b, trials=2000)
    assert result.delta == pytest.approx(0.05, abs=0.01) and result.p_value < 0.01
    masks = swap_masks(300, trials=500, seed=0)
    small = 0
    for _ in range(100):  # under the null, p < 0.05 about 5% of the time
        x, y = rng.normal(0.5, 0.1, 300), rng.normal(0.5, 0.1, 300)
        small += paired_test(mean_statistic("m", x), mean_statistic("m", y), masks=masks).p_value < 0.05
    assert small <= 12


def test_paired_test_on_a_ratio_metric() -> None:
    rng = np.random.default_rng(6)
    good = _bleu_population(rng, 500)
    worse = good.copy()
    worse[:, 6:] = np.floor(worse[:, 6:] * 0.8)
    result = paired_test(Statistic("b", good, _bleu4, "t"), Statistic("b", worse, _bleu4, "t"), trials=1000)
    assert result.delta > 0 and result.p_value < 0.01
    with pytest.raises(ValueError):
        paired_test(Statistic("b", good, _bleu4, "t"), Statistic("b", good[:10], _bleu4, "t"))
