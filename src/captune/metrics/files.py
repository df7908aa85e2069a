"""Score prediction files against a reference set: what `captune score` and `captune.score()` run.

Predictions are COCO results files (or {image id: caption} mappings already in memory); references are a
dataset path, a COCO captions annotations JSON or an {image_id: [refs]} JSON. METEOR's JVM, the longest
part, starts before the scoring code loads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from captune.errors import DataError
from captune.metrics import FAMILIES

PathLike = str | os.PathLike[str]


def score_predictions(
    predictions: Mapping[str, PathLike | Mapping[int, str]],
    references: PathLike,
    *,
    split: str = "eval",
    metrics: Iterable[str] = FAMILIES,
    baseline: str | None = None,
    bootstrap: int = 1000,
    trials: int = 1000,
    seed: int = 0,
    spice: bool | None = None,
    self_bleu: bool = False,
    per_image: bool = True,
    human_baseline: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """The scores.json document for systems (name -> results file, or name -> {image_id: caption}); with
    `human_baseline`, the references scored against each other instead (no predictions)."""
    from captune.metrics.io import check_coverage, load_predictions, load_reference_set
    from captune.metrics.meteor_pipeline import remember_references, start_meteor

    families = list(metrics)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise DataError(f"--metrics: unknown family {unknown[0] if unknown else '(none)'!r}; "
                        f"choose from {','.join(FAMILIES)}")
    if human_baseline == bool(predictions):
        raise DataError("give predictions, or ask for the human baseline of the references, not both or neither")
    found = load_reference_set(references, split)
    refs, train, described = found.refs, found.train, found.described
    systems: dict[str, dict[int, str]] = {}
    sources: dict[str, str] = {}
    for name, given in predictions.items():
        if isinstance(given, Mapping):
            captions, source = {int(k): str(v) for k, v in given.items()}, "(in memory)"
        else:
            captions, source = load_predictions(Path(given), found.names, described), str(given)
        check_coverage(source, captions, refs)
        systems[name], sources[name] = captions, source
    tokens: dict[str, str] = {}
    meteor, vocab = None, None
    if "coco" in families:
        # Started before scoring so the JVM loads while the other metrics are prepared; the captions are
        # PTB-tokenised in the references' tokenizer call, so METEOR can start on them at once.
        texts = (c for caps in systems.values() for c in caps.values())
        meteor, vocab = start_meteor(refs, tokens, captions=texts)
    if human_baseline:
        from captune.metrics.human import human_report

        report = human_report(refs, metrics=families, bootstrap_samples=bootstrap, seed=seed, meteor=meteor,
                              progress=progress, token_cache=tokens)
    else:
        from captune.metrics.suite import score_systems

        report = score_systems(
            systems, refs, metrics=families, baseline=baseline, bootstrap_samples=bootstrap, seed=seed,
            paired_trials=trials, spice=spice, train_captions=train, self_bleu=self_bleu, per_image=per_image,
            meteor=meteor, token_cache=tokens, progress=progress,
        )
        report["predictions"] = sources
    report["references"] = described
    if meteor is not None:
        report["settings"]["meteor_paraphrase_table"] = str(meteor.paraphrase or "pycocoevalcap full table")
        note = remember_references(vocab, len(refs), meteor)
        if note:
            report["notes"].append(note)
    return report
