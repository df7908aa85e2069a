"""Caption metrics: COCO (pycocoevalcap-equal), rouge-score, NLTK paper-style, diversity, statistics.

Every number carries its implementation in its name: `coco/BLEU-1..4`, `coco/METEOR`,
`coco/ROUGE-L`, `coco/CIDEr`, `coco/SPICE`, `rouge/ROUGE-1|2|L`, `nltk/BLEU-1..4`, `nltk/METEOR`,
`div/...` (see `captune.metrics.diversity`; the report's "Repetition Rate" is `div/seq-rep-4`).

Entry points: `Scorer` (create once, score many systems), `score_systems` (one call, returns the
scores.json document), `human_report` / `human_baseline` (references scored against each other).

scores.json (schema "captune.scores/1"):
    {"schema", "created", "images": n, "image_ids": [...],
     "settings": {families, bootstrap_samples, seed, ci_level, paired_test, coco_tokenizer, java},
     "unavailable": {metric: "<Metric> unavailable: <why>"}, "notes": [...], "aliases": {...},
     "systems": {name: {"metrics": {metric: {value, ci_low, ci_high, ci_method}},
                        "per_image": {metric: [value per image, in image_ids order]},
                        "top_captions": [[caption, count], ...]}},
     "comparisons": [{a, b, metric, value_a, value_b, delta, p_value, trials, method}]}
Values that are undefined are null.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imported on first use (PEP 562): `captune score` starts METEOR's JVM from `captune.metrics.meteor_pipeline`
# before the rest loads (rouge-score pulls in NLTK and SciPy, ~1.5 s).
FAMILIES = ("coco", "rouge", "nltk", "diversity")  # the metric families, in report order

_EXPORTS = {
    "SCHEMA": "results", "MetricResult": "results", "Scorer": "suite", "SystemResult": "results",
    "build_report": "results", "score_systems": "suite", "MeteorError": "meteor", "MeteorProcess": "meteor",
    "PairedResult": "stats", "Statistic": "stats", "bootstrap_ci": "stats", "paired_test": "stats",
    "human_baseline": "human", "human_report": "human",
}

if TYPE_CHECKING:
    from captune.metrics.human import human_baseline, human_report
    from captune.metrics.meteor import MeteorError, MeteorProcess
    from captune.metrics.results import SCHEMA, MetricResult, SystemResult, build_report
    from captune.metrics.stats import PairedResult, Statistic, bootstrap_ci, paired_test
    from captune.metrics.suite import Scorer, score_systems

__all__ = [
    "FAMILIES", "SCHEMA", "MeteorError", "MeteorProcess", "MetricResult", "PairedResult", "Scorer", "Statistic",
    "SystemResult", "bootstrap_ci", "build_report", "human_baseline", "human_report", "paired_test", "score_systems",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
