"""`captune run`: train → evaluation grid → report in one run directory, each stage resumable.

Each stage looks at what exists: a finished adapter (train/summary.json) is not retrained, a killed
training resumes from its newest checkpoint, finished grid systems are read back, the report is
always rebuilt from what is on disk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from captune.config import RunConfig
from captune.io import atomic_write_json


@dataclass
class PipelineResult:
    run_dir: Path
    trained: bool
    report: Path | None
    timings: dict[str, float] = field(default_factory=dict)


def training_finished(run_dir: Path) -> bool:
    return (run_dir / "train" / "summary.json").is_file() and (run_dir / "adapter" / "adapter_config.json").is_file()


def train_stage(cfg: RunConfig, dataset=None, progress: bool = True, bases=None) -> bool:
    """Train unless the adapter is finished (a killed training resumes from its newest checkpoint);
    True if it trained. A config that selects on evaluated images fails before any work. `bases`: lends
    the loaded base model (`model.load.BaseModels`; a sweep's variants share one)."""
    from captune.data.selection import plan_selection
    from captune.train.checkpoint import complete_checkpoints
    from captune.train.loop import train

    if training_finished(cfg.run_dir):
        return False
    if dataset is not None:  # else train() loads it and checks the same before its model loads
        plan_selection(cfg, dataset)
    train(cfg, resume=bool(complete_checkpoints(cfg.run_dir / "train" / "checkpoints")), progress=progress,
          dataset=dataset, bases=bases)
    return True


def run_pipeline(cfg: RunConfig, progress: bool = True, dataset=None, report: bool = True) -> PipelineResult:
    """Train, then caption and score every system, then the report (`overlap.run_side_by_side`: the same,
    with the base systems captioned while the adapter trains)."""
    from captune.grid.run import run_grid

    if dataset is None:
        from captune.data import load_dataset_from_config

        dataset = load_dataset_from_config(cfg.data)
    t = time.perf_counter()
    trained = train_stage(cfg, dataset, progress)
    timings = {"train": time.perf_counter() - t}
    t = time.perf_counter()
    run_grid(cfg, adapter_dir=cfg.run_dir / "adapter", progress=progress, dataset=dataset)
    timings["eval"] = time.perf_counter() - t
    return finish(cfg, trained, timings, report)


def finish(cfg: RunConfig, trained: bool, timings: dict[str, float], report: bool) -> PipelineResult:
    """Rebuild the report from what is on disk and record the stages' timings."""
    report_path = None
    if report:
        from captune.report import build_report

        t = time.perf_counter()
        paths = build_report(cfg.run_dir)
        report_path = getattr(paths, "html", None) or getattr(paths, "markdown", None)
        timings["report"] = time.perf_counter() - t
    atomic_write_json(cfg.run_dir / "pipeline_timings.json", {k: round(v, 3) for k, v in timings.items()})
    return PipelineResult(cfg.run_dir, trained, report_path, timings)
