"""Diversity measures on hand-worked examples; Self-BLEU equals NLTK's sentence_bleu."""

from __future__ import annotations

import random
import warnings

import pytest
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from captune.metrics.diversity import (
    REPETITION_RATE,
    diversity,
    mattr,
    msttr,
    self_bleu,
    seq_rep,
    tokens,
)

CAPTIONS = ["A dog runs.", "a dog runs", "The cat the cat sat"]
# tokens: [a dog runs] [a dog runs] [the cat the cat sat] -> 11 tokens, 6 types


def test_hand_worked_corpus_measures() -> None:
    d = diversity(CAPTIONS, train_captions=["A dog runs!"], window=4)
    v = d.values
    assert v["div/TTR"] == pytest.approx(6 / 11)
    assert v["div/Vocabulary"] == 6
    assert v["div/Mean Length"] == pytest.approx(11 / 3)
    assert v["div/distinct-1"] == pytest.approx(6 / 11)
    assert v["div/distinct-2"] == pytest.approx(5 / 8)  # bigrams: 4 + 4, distinct 5
    assert v["div/seq-rep-1"] == pytest.approx((1 - 3 / 5) / 3)  # only the third caption repeats
    assert v["div/seq-rep-2"] == pytest.approx((1 - 3 / 4) / 3)
    assert v["div/seq-rep-4"] == 0.0 and REPETITION_RATE == "div/seq-rep-4"
    assert v["div/Duplicate Rate"] == pytest.approx(1 - 2 / 3)
    assert v["div/Novelty"] == pytest.approx(1 / 3)
    assert d.top_captions == [("a dog runs", 2), ("the cat the cat sat", 1)]
    assert v["div/MATTR"] == pytest.approx(25 / 32)  # windows of 4: 3,3,3,4,4,3,2,3 types
    assert v["div/MSTTR"] == pytest.approx((3 / 4 + 4 / 4) / 2)  # two full chunks, 3 tokens dropped


def test_small_pieces() -> None:
    assert tokens("Man's hat, (red)!") == ["man's", "hat", "red"]
    assert seq_rep(["a", "b", "a", "b", "a", "b"], 2) == pytest.approx(1 - 2 / 5)
    assert seq_rep(["a"], 2) == 0.0
    assert mattr(["a", "b"], window=10) == 1.0  # fewer tokens than a window: plain TTR
    assert msttr(["a", "a", "b", "b"], window=2) == pytest.approx(0.5)


def test_collapsed_system_looks_collapsed() -> None:
    d = diversity(["a man standing"] * 99 + ["a dog"])
    assert d.values["div/Duplicate Rate"] == pytest.approx(0.98)
    assert d.top_captions[0] == ("a man standing", 99)
    assert "div/Novelty" not in d.values and "div/Self-BLEU" not in d.values


def test_self_bleu_equals_nltk_sentence_bleu() -> None:
    rng = random.Random(5)
    vocab = ["a", "the", "dog", "man", "runs", "on", "grass", "red", "ball", "in", "water"]
    caps = [rng.choices(vocab, k=rng.randint(1, 12)) for _ in range(40)] + [["a", "dog"], ["a", "dog"], []]
    smooth = SmoothingFunction().method1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = [sentence_bleu(caps[:i] + caps[i + 1 :], c, smoothing_function=smooth) for i, c in enumerate(caps)]
    assert self_bleu(caps) == pytest.approx(sum(expected) / len(expected), abs=1e-12)
    assert self_bleu([["one"]]) is None
