"""Human reference point: how well do the references score against each other?

Rotating leave-one-out: in rotation j every image's reference j (cycling, j mod k, for an image
with k references) is the "caption" and its other k-1 references are the references; rotations
j = 0 .. max k - 1 are scored like systems and averaged. Images with a single reference are
skipped (no one to compare with). Note that humans are scored against one reference fewer than
systems are, which lowers BLEU/CIDEr a little; papers report it this way (e.g. COCO's human
baseline), and the report should say so. CIs: each rotation is bootstrapped with the same
resampled image sets, the replicates are averaged across rotations, and the percentile interval
of that average is reported. Tokenisation and the METEOR JVM are shared across rotations.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from captune.cache import cache_path
from captune.errors import DataError
from captune.io import atomic_write_json
from captune.metrics.meteor import MeteorProcess
from captune.metrics.meteor_pipeline import start_meteor
from captune.metrics.results import CI_NONE, MetricResult, SystemResult, build_report
from captune.metrics.stats import percentile_ci
from captune.metrics.suite import FAMILIES, Scorer, _normalise_refs
from captune.progress import Bar


def rotations(refs: Mapping[Any, Sequence[str]]) -> list[tuple[dict[Any, list[str]], dict[Any, str]]]:
    """[(references without j, caption j)] for j = 0 .. max refs - 1 over images with >= 2 refs."""
    usable = {i: list(r) for i, r in refs.items() if len(r) >= 2}
    if not usable:
        raise DataError("human baseline: no image has two or more references")
    rounds = max(len(r) for r in usable.values())
    out = []
    for j in range(rounds):
        held = {i: r[j % len(r)] for i, r in usable.items()}
        rest = {i: r[: j % len(r)] + r[j % len(r) + 1 :] for i, r in usable.items()}
        out.append((rest, held))
    return out


def human_baseline(refs: Mapping[Any, Sequence[str]], *, metrics: Iterable[str] = FAMILIES,
                   bootstrap_samples: int = 1000, seed: int = 0, meteor: MeteorProcess | None = None,
                   name: str = "human", token_cache: dict[str, str] | None = None, progress: bool = False,
                   ) -> tuple[SystemResult, list[SystemResult], Scorer]:
    """Rotation-averaged human scores, the per-rotation results, and the last rotation's scorer
    (for its settings and unavailable-metric record)."""
    families = tuple(metrics)
    own = meteor is None and "coco" in families
    process = MeteorProcess() if own else meteor
    cache: dict[str, str] = token_cache if token_cache is not None else {}
    per_rotation: list[SystemResult] = []
    scorer: Scorer | None = None
    rounds = rotations(refs)
    bar = Bar("human baseline rotations", len(rounds), progress)
    try:
        for j, (rest, held) in enumerate(rounds):
            scorer = Scorer(rest, metrics=families, bootstrap_samples=bootstrap_samples, seed=seed,
                            meteor=process, token_cache=cache, spice=False)
            per_rotation.append(scorer.score({f"{name}-{j}": held})[f"{name}-{j}"])
            bar.advance()
    finally:
        bar.close()
        if own and process is not None:
            process.close()
    assert scorer is not None
    return _average(name, per_rotation, scorer.level), per_rotation, scorer


def _average(name: str, runs: list[SystemResult], level: float) -> SystemResult:
    first = runs[0]
    metrics = {}
    replicates = {}
    for key, m in first.metrics.items():
        values = [r.metrics[key].value for r in runs if key in r.metrics and r.metrics[key].value is not None]
        value = float(np.mean(values)) if values else None
        per_image = None
        if all(r.metrics.get(key) is not None and r.metrics[key].per_image is not None for r in runs):
            per_image = np.mean([r.metrics[key].per_image for r in runs], axis=0)
        if all(key in r.replicates for r in runs):
            reps = np.mean([r.replicates[key] for r in runs], axis=0)
            replicates[key] = reps
            lo, hi = percentile_ci(reps, level)
            metrics[key] = MetricResult(key, value, lo, hi, m.ci_method + "; replicates averaged over rotations",
                                        per_image)
        else:
            metrics[key] = MetricResult(key, value, ci_method=CI_NONE, per_image=per_image)
    return SystemResult(name, first.image_ids, metrics, {}, replicates, first.top_captions)


def human_report(refs: Mapping[Any, Sequence[str]], **kwargs: Any) -> dict[str, Any]:
    """scores.json document with the averaged human baseline as system "human" plus each rotation."""
    avg, runs, scorer = human_baseline(refs, **kwargs)
    report = build_report(scorer, {avg.name: avg}, per_image=True)
    report["human_baseline"] = {
        "method": "rotating leave-one-out: reference j vs the other references, averaged over rotations",
        "rotations": [{k: m.value for k, m in r.metrics.items()} for r in runs],
    }
    return report


HUMAN_CACHE_VERSION = 1


def human_cache_path(refs: Mapping[Any, Sequence[str]], metrics: Iterable[str], bootstrap_samples: int, seed: int,
                     cache: Path | None = None) -> Path:
    """Where the human report for exactly these references and settings is kept (keyed by their digest)."""
    key = json.dumps({"v": HUMAN_CACHE_VERSION, "metrics": sorted(metrics), "bootstrap_samples": bootstrap_samples,
                      "seed": seed, "refs": sorted((str(i), list(r)) for i, r in refs.items())}, ensure_ascii=False)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return (cache or cache_path("human")) / f"human-{digest}.json"


def cached_human_report(refs: Mapping[Any, Sequence[str]], *, metrics: Iterable[str] = FAMILIES,
                        bootstrap_samples: int = 1000, seed: int = 0, cache: Path | None = None,
                        **kwargs: Any) -> dict[str, Any]:
    """`human_report`, computed once per reference set and settings: the references of an evaluation
    split do not change between runs, and five rotations cost more than scoring eight systems."""
    families = tuple(metrics)
    path = human_cache_path(refs, families, bootstrap_samples, seed, cache)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        if report.get("schema") and report.get("systems"):
            return report
    except (OSError, ValueError):
        pass
    report = human_report(refs, metrics=families, bootstrap_samples=bootstrap_samples, seed=seed, **kwargs)
    if "coco/METEOR" not in (report.get("unavailable") or {}):  # without Java, a later run may do better
        with contextlib.suppress(OSError):  # a read-only cache only costs the recomputation
            atomic_write_json(path, report)
    return report


def human_families(metrics: Iterable[str], coco_meteor: bool) -> list[str]:
    """The metric families of a grid's human row: what the main table shows. NLTK's only stand in for
    METEOR without Java; skipping them otherwise halves the cost of the rotations."""
    return [m for m in metrics if m != "nltk" or not coco_meteor]


def split_references(data_dir: str, split: str, data_format: str = "auto") -> dict[Any, list[str]]:
    """A dataset split's references as a grid's Scorer holds them (what the human cache is keyed by)."""
    from captune.data import load_dataset

    records = load_dataset(data_dir, format=data_format).select(split)
    return _normalise_refs({r.image_id: list(r.refs) for r in records})


def precompute_for_split(data_dir: str, split: str, metrics: list[str], bootstrap_samples: int, seed: int,
                         data_format: str = "auto") -> None:
    """Fill the human cache for one split of a dataset, as a grid on it will look it up; builds METEOR's
    paraphrase table reduced to the split's vocabulary first (the grid's JVM then starts in ~4 s instead
    of ~11 and holds a fraction of the memory). Torch-free: runs in a light child process (the demo
    starts one on the other core while it trains)."""
    refs = split_references(data_dir, split, data_format)
    tokens: dict[str, str] = {}
    meteor, _ = start_meteor(refs, tokens, build=True)
    cached_human_report(refs, metrics=metrics, bootstrap_samples=bootstrap_samples, seed=seed, meteor=meteor,
                        token_cache=tokens)
