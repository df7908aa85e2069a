"""The Scorer's Java side (metrics/meteor_pipeline.py): the METEOR bar while score() waits, and its records."""

from __future__ import annotations

import threading
from typing import ClassVar

import numpy as np
import pytest

import captune.metrics.meteor_pipeline as pipeline
from captune.metrics import Scorer
from captune.metrics.java import JavaRuntime

REFS = {1: ["a dog runs on the grass", "a brown dog"], 2: ["two kids play in water", "kids in a pool"],
        3: ["a man rides a bike", "a cyclist"]}
SYSTEMS = {"a": {1: "a dog runs", 2: "kids play", 3: "a man on a bike"},
           "b": {1: "a dog runs", 2: "a man", 3: "a man"}}  # 5 distinct (image, caption) pairs
NO_JAVA = JavaRuntime(None, "not needed in this test")  # PTB falls back to NLTK's tokenizer: no JVM here


class _Bar:
    """Records what the Scorer's METEOR bar was told."""

    made: ClassVar[list[_Bar]] = []
    shown = threading.Event()

    def __init__(self, label: str, total: int | None, enabled: bool = True, completed: int = 0) -> None:
        self.label, self.total, self.done, self.closed = label, total, completed, False
        _Bar.made.append(self)
        _Bar.shown.set()

    def set_total(self, total: int) -> None:
        self.total = total

    def advance(self, n: int = 1) -> None:
        self.done += n

    def close(self) -> None:
        self.closed = True


class _SlowMeteor:
    """A METEOR stand-in whose segments wait (at most 10 s) until the bar is up, then report one by one."""

    available, unavailable_reason, paraphrase = True, None, None

    def warm_up(self) -> None:
        pass

    def segment_stats(self, pairs, progress=None):
        _Bar.shown.wait(timeout=10)
        for _ in pairs:
            progress(1)
        return np.ones((len(pairs), 23))

    def close(self) -> None:
        pass


@pytest.fixture
def bars(monkeypatch) -> list[_Bar]:
    _Bar.made, _Bar.shown = [], threading.Event()
    monkeypatch.setattr(pipeline, "Bar", _Bar)
    return _Bar.made


def test_score_shows_a_meteor_bar_while_it_waits(bars) -> None:
    with Scorer(REFS, metrics=["coco"], bootstrap_samples=20, java=NO_JAVA, meteor=_SlowMeteor(),
                progress=True) as scorer:
        result = scorer.score(SYSTEMS)
    assert [(b.label, b.total, b.done, b.closed) for b in bars] == [("METEOR segments", 5, 5, True)]
    assert "coco/METEOR" in result["a"].metrics and scorer.timings["meteor thread: segments scored"] == 5


def test_no_bar_without_progress_and_a_failed_jvm_is_recorded(bars) -> None:
    class Broken(_SlowMeteor):
        def segment_stats(self, pairs, progress=None):
            raise RuntimeError("the JVM fell over")

    with Scorer(REFS, metrics=["coco"], bootstrap_samples=20, java=NO_JAVA, meteor=Broken()) as scorer:
        result = scorer.score(SYSTEMS)
    assert bars == []
    assert scorer.unavailable["coco/METEOR"] == "METEOR unavailable: RuntimeError: the JVM fell over"
    assert "coco/METEOR" not in result["a"].metrics and "coco/BLEU-4" in result["a"].metrics
