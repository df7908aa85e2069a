"""What scoring returns: per-metric results, per-system results, and the scores.json document.

The schema is described in `captune.metrics`; `build_report` writes it from a `Scorer`'s settings
and records plus the systems' results and paired comparisons.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from captune.metrics.diversity import REPETITION_RATE
from captune.metrics.stats import PairedResult, Statistic

if TYPE_CHECKING:
    from captune.metrics.suite import Scorer

SCHEMA = "captune.scores/1"
CI_NONE = "none: set-based statistic, biased by resampling images with replacement"


@dataclass
class MetricResult:
    name: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_method: str = CI_NONE
    per_image: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        return {"value": _num(self.value), "ci_low": _num(self.ci_low), "ci_high": _num(self.ci_high),
                "ci_method": self.ci_method}


@dataclass
class SystemResult:
    """One system's scores: values with CIs, per-image arrays, and what paired tests need."""

    name: str
    image_ids: list[Any]
    metrics: dict[str, MetricResult]
    statistics: dict[str, Statistic] = field(default_factory=dict)
    replicates: dict[str, np.ndarray] = field(default_factory=dict)
    top_captions: list[tuple[str, int]] = field(default_factory=list)

    def values(self) -> dict[str, float | None]:
        return {k: m.value for k, m in self.metrics.items()}

    def to_json(self, per_image: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"metrics": {k: m.to_json() for k, m in self.metrics.items()}}
        if per_image:
            out["per_image"] = {
                k: [_num(x) for x in m.per_image.tolist()] for k, m in self.metrics.items() if m.per_image is not None
            }
        out["top_captions"] = [[c, n] for c, n in self.top_captions]
        return out


def _num(x: Any) -> float | None:
    """JSON's number: None for a missing or non-finite value."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


_ORDER = [
    "coco/BLEU-1", "coco/BLEU-2", "coco/BLEU-3", "coco/BLEU-4", "coco/METEOR", "coco/ROUGE-L", "coco/CIDEr",
    "coco/SPICE", "rouge/ROUGE-1", "rouge/ROUGE-2", "rouge/ROUGE-L", "nltk/BLEU-1", "nltk/BLEU-2",
    "nltk/BLEU-3", "nltk/BLEU-4", "nltk/METEOR", "div/Mean Length", "div/Vocabulary", "div/TTR", "div/MATTR",
    "div/MSTTR", "div/distinct-1", "div/distinct-2", "div/seq-rep-1", "div/seq-rep-2", "div/seq-rep-3",
    "div/seq-rep-4", "div/Duplicate Rate", "div/Novelty", "div/Self-BLEU",
]


def metric_order(name: str) -> tuple[int, str]:
    return (_ORDER.index(name) if name in _ORDER else len(_ORDER), name)


def build_report(scorer: Scorer, results: Mapping[str, SystemResult],
                 comparisons: Sequence[tuple[str, str, Sequence[PairedResult]]] = (), *, per_image: bool = True,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The scores.json document (see `captune.metrics` for the schema)."""
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "images": len(scorer.image_ids),
        "image_ids": list(scorer.image_ids) if per_image else None,
        "settings": scorer.settings(),
        "unavailable": dict(sorted(scorer.unavailable.items())),
        "notes": list(dict.fromkeys(scorer.notes)),
        "aliases": {"Repetition Rate": REPETITION_RATE},
        "systems": {name: r.to_json(per_image) for name, r in results.items()},
        "timings": {k: round(v, 3) for k, v in scorer.timings.items()},
        "comparisons": [
            {"a": a, "b": b, "metric": p.metric, "value_a": _num(p.value_a), "value_b": _num(p.value_b),
             "delta": _num(p.delta), "p_value": p.p_value, "trials": p.trials, "method": p.method}
            for a, b, tests in comparisons
            for p in tests
        ],
    }
    if extra:
        report.update(extra)
    return report


def value_with_ci(entry: dict[str, Any], digits: int = 3) -> str:
    """A scores.json metric entry as `value [low, high]` (`–` when it has no value), for Markdown tables."""
    v, lo, hi = entry.get("value"), entry.get("ci_low"), entry.get("ci_high")
    if v is None:
        return "–"
    if lo is None or hi is None:
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
