"""captune from Python: each CLI stage as one function, on the code the CLI itself calls.

    import captune
    cfg = captune.load_config("configs/flickr8k-blip2-opt-2.7b.yaml", train={"epochs": 1})
    captune.run(cfg)                       # finetune -> grid -> report, resumable
    scores = captune.evaluate(cfg)         # the baseline grid alone: the scores.json document

Functions take a RunConfig (or a YAML path) and return plain results; progress bars are off unless asked
for (`progress=True`), since a notebook or a script is rarely a terminal.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captune.config import RunConfig, load_config

if TYPE_CHECKING:
    from captune.demo.synth import SynthSummary
    from captune.pipeline import PipelineResult
    from captune.report import ReportPaths
    from captune.train.loop import TrainResult

PathLike = str | os.PathLike[str]

# `finetune` and `write_report`, not `train` / `report`: those names are captune's subpackages, and an
# import of `captune.train.loop` would replace a function of that name on the package.
__all__ = ["caption", "evaluate", "finetune", "load_config", "run", "score", "synthesize",
           "write_report"]


def _config(config: RunConfig | PathLike) -> RunConfig:
    return config if isinstance(config, RunConfig) else load_config(config)


def finetune(config: RunConfig | PathLike, *, resume: bool = False, progress: bool = False) -> TrainResult:
    """Fine-tune the LoRA adapters; the adapter lands in `RUN_DIR/adapter` (PEFT layout)."""
    from captune.data import load_dataset_from_config
    from captune.train.loop import train as train_loop
    from captune.train.setup import check_enough_captions

    cfg = _config(config)
    dataset = load_dataset_from_config(cfg.data)
    split = cfg.data.train_split  # checked here, before minutes of model loading
    check_enough_captions(cfg, dataset.select(split), f"split {split!r} of {cfg.data.path}")
    return train_loop(cfg, resume=resume, progress=progress, dataset=dataset)


def caption(images: PathLike | Sequence[PathLike], *, model: str | None = None, adapter: PathLike | None = None,
            config: RunConfig | PathLike | None = None, progress: bool = False,
            **decoding: Any) -> dict[str, list[str]]:
    """Captions of image files or folders: {path: [captions]}. With `adapter`, the adapter's base model,
    training prompt and evaluated decoding are the defaults; `config` supplies model and `generate`;
    `decoding` overrides (prompt, num_beams, max_new_tokens, sample, top_p, num_captions, batch_size,
    device, dtype), as the flags of `captune caption` do."""
    from captune.generate.files import caption_images

    items = [images] if isinstance(images, str | os.PathLike) else list(images)
    result = caption_images(items, model=model, adapter=adapter, config=config, progress=progress, **decoding)
    return {str(p): c for p, c in zip(result.paths, result.captions, strict=True)}


def score(predictions: Mapping[str, PathLike | Mapping[int, str]] | PathLike, references: PathLike, *,
          split: str = "eval", progress: bool = False, **settings: Any) -> dict[str, Any]:
    """The scores.json document: BLEU, METEOR, ROUGE, CIDEr, diversity with bootstrap CIs and paired tests.
    `predictions`: one COCO results file, or {system name: results file or {image_id: caption}};
    `references`: a dataset path (with `split`), COCO annotations or {image_id: [refs]} JSON. `settings`:
    metrics, baseline, bootstrap, trials, seed, spice, self_bleu, per_image (as `captune score`)."""
    from captune.metrics.files import score_predictions

    systems = predictions if isinstance(predictions, Mapping) else {Path(predictions).stem: predictions}
    return score_predictions(systems, references, split=split, progress=progress, **settings)


def evaluate(config: RunConfig | PathLike, *, adapter: PathLike | None = None,
             progress: bool = False) -> dict[str, Any]:
    """The baseline grid on the eval split (predictions/, scores.json, results.md); returns scores.json."""
    from captune.grid.run import run_grid

    result = run_grid(_config(config), adapter_dir=adapter, progress=progress)
    return result.scores


def run(config: RunConfig | PathLike, *, progress: bool = False) -> PipelineResult:
    """Train, evaluate and report in one run directory; a rerun resumes what was interrupted."""
    from captune.pipeline import run_pipeline

    return run_pipeline(_config(config), progress=progress)


def write_report(run_dir: PathLike, formats: str | Iterable[str] = ("md", "html"), *,
           progress: bool = False) -> ReportPaths:
    """Write report.md / report.html / report.tex and figures/ from a run directory's files."""
    from captune.report import build_report, parse_formats

    return build_report(run_dir, parse_formats(formats), progress=progress)


def synthesize(out: PathLike, *, scale: float = 1.0, seed: int = 0, progress: bool = False,
               **settings: Any) -> SynthSummary:
    """The synthetic fine-grained benchmark (Flickr8K layout + ground truth), as `captune data synth`."""
    from captune.demo.synth import generate_synth

    return generate_synth(Path(out), scale=scale, seed=seed, progress=progress, **settings)
