"""ROUGE-1/2/L equal Google's rouge-score (best F1 over references per image, then the mean)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from rouge_score import rouge_scorer

from captune.metrics.coco import lcs_length
from captune.metrics.rouge import ROUGE_TYPES, compute_score

VOCAB = [
    "a", "the", "dog", "dogs", "man", "runs", "running", "on", "in", "red", "ball", "grass", "water", "Dog",
    "RUNS,", "ball!", "café", "3", "12",
]


def _expected(refs: dict[int, list[str]], hyps: dict[int, list[str]], stem: bool = False) -> dict[str, np.ndarray]:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=stem)
    rows = [scorer.score_multi(refs[i], hyps[i][0]) for i in refs]
    keys = ("rouge1", "rouge2", "rougeL")
    return {name: np.array([r[key].fmeasure for r in rows]) for name, key in zip(ROUGE_TYPES, keys, strict=True)}


def _check(refs: dict[int, list[str]], hyps: dict[int, list[str]], stem: bool = False) -> None:
    means, per_image = compute_score(refs, hyps, use_stemmer=stem)
    expected = _expected(refs, hyps, stem)
    for name in ROUGE_TYPES:
        np.testing.assert_allclose(per_image[name], expected[name], rtol=0, atol=1e-12)
        assert means[name] == pytest.approx(float(expected[name].mean()), abs=1e-12)


def test_equal_rouge_score_on_generated_data() -> None:
    rng = random.Random(3)
    refs = {
        i: [" ".join(rng.choices(VOCAB, k=rng.randint(0, 15))) for _ in range(rng.randint(1, 5))] for i in range(300)
    }
    hyps = {i: [" ".join(rng.choices(VOCAB, k=rng.randint(0, 15)))] for i in range(300)}
    hyps[0], hyps[1], hyps[2] = [""], ["!!! ..."], [refs[2][0]]
    _check(refs, hyps)
    _check(refs, hyps, stem=True)


def test_equal_rouge_score_on_flickr8k(flickr8k_dir: Path) -> None:
    data = json.loads((flickr8k_dir / "dataset_flickr8k.json").read_text(encoding="utf-8"))
    images = [im for im in data["images"] if im["split"] == "val"][:400]
    refs = {k: [s["raw"] for s in im["sentences"]] for k, im in enumerate(images)}
    hyps = {k: [refs[(k + 1) % len(refs)][k % 5] if k % 3 else refs[k][0][::-1]] for k in refs}
    _check(refs, hyps)


def test_bit_parallel_lcs_equals_dynamic_programming() -> None:
    def dp(a: list[str], b: list[str]) -> int:
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
        return table[-1][-1]

    rng = random.Random(0)
    for _ in range(500):
        a = rng.choices("abcde", k=rng.randint(0, 90))
        b = rng.choices("abcdef", k=rng.randint(0, 40))
        assert lcs_length(a, b) == dp(a, b)
