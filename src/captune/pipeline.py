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


def run_pipeline(cfg: RunConfig, progress: bool = True, dataset=None, report: bool = True) -> PipelineResult:
    from captune.grid.run import run_grid
    from captune.train.checkpoint import complete_checkpoints
    from captune.train.loop import train

    if dataset is None:
        from captune.data import load_dataset_from_config

        dataset = load_dataset_from_config(cfg.data)
    run_dir = cfg.run_dir
    timings: dict[str, float] = {}
    trained = False
    t = time.perf_counter()
    if not training_finished(run_dir):
        resume = bool(complete_checkpoints(run_dir / "train" / "checkpoints"))
        train(cfg, resume=resume, progress=progress, dataset=dataset)
        trained = True
    timings["train"] = time.perf_counter() - t
    t = time.perf_counter()
    run_grid(cfg, adapter_dir=run_dir / "adapter", progress=progress, dataset=dataset)
    timings["eval"] = time.perf_counter() - t
    report_path = None
    if report:
        from captune.report import build_report

        t = time.perf_counter()
        paths = build_report(run_dir)
        report_path = getattr(paths, "html", None) or getattr(paths, "markdown", None)
        timings["report"] = time.perf_counter() - t
    atomic_write_json(run_dir / "pipeline_timings.json", {k: round(v, 3) for k, v in timings.items()})
    return PipelineResult(run_dir, trained, report_path, timings)
