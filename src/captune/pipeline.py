"""`captune run`: train → evaluation grid → report in one run directory, each stage resumable.

Each stage looks at what exists: a finished adapter (train/summary.json) is not retrained, a killed
training resumes from its newest checkpoint, finished grid systems are read back, the report is
always rebuilt from what is on disk.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


class _EarlyCaptions:
    """The grid's base-model systems (no adapter), captioned in a thread while the adapter trains.
    Decoding spends most of its time in torch kernels that release the GIL, so on a CPU the two share
    the cores (demo: ~10-15 s saved). Sampling draws from its own seeded generator, so neither side
    changes the other's random numbers; beam sampling (transformers' own, from torch's global generator)
    waits for the main grid. Predictions are written as usual; the full grid afterwards reads them back."""

    def __init__(self, cfg: RunConfig, dataset) -> None:
        self.cfg, self.dataset = cfg, dataset
        self.error: BaseException | None = None
        self.timings: dict[str, float] = {}
        self.scorer = None  # started here, so METEOR and the reference preparation begin during training
        from captune.model.load import import_model_libraries

        import_model_libraries()  # before the thread: both threads then only read transformers' names
        self.thread = threading.Thread(target=self._run, name="captune-early-captions", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from captune.grid.run import run_grid

        try:
            result = run_grid(self.cfg, progress=False, dataset=self.dataset, score=False, start_scorer=True,
                              select=lambda s: not s.adapter and not s.decode.global_rng)
            self.timings, self.scorer = result.timings, result.scorer
        except BaseException as exc:  # re-raised in the caller's thread by join()
            self.error = exc

    def join(self) -> dict[str, float]:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.timings

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.close()


def run_pipeline(cfg: RunConfig, progress: bool = True, dataset=None, report: bool = True,
                 caption_while_training: bool = False) -> PipelineResult:
    """`caption_while_training`: caption the grid's base-model systems in a thread while the adapter
    trains (see `_EarlyCaptions`; for CPU runs, whose two jobs then share the cores)."""
    from captune.grid.run import run_grid
    from captune.train.checkpoint import complete_checkpoints
    from captune.train.loop import train

    if dataset is None:
        from captune.data import load_dataset_from_config

        dataset = load_dataset_from_config(cfg.data)
    run_dir = cfg.run_dir
    timings: dict[str, Any] = {}
    trained = False
    early = None
    try:
        t = time.perf_counter()
        if not training_finished(run_dir):
            from captune.data.selection import plan_selection

            plan_selection(cfg, dataset)  # a config that selects on evaluated images fails before any work
            resume = bool(complete_checkpoints(run_dir / "train" / "checkpoints"))
            if caption_while_training:
                early = _EarlyCaptions(cfg, dataset)
            train(cfg, resume=resume, progress=progress, dataset=dataset)
            trained = True
        timings["train"] = time.perf_counter() - t
        if early is not None:
            t = time.perf_counter()
            early_timings = early.join()
            timings["wait_early_captions"] = time.perf_counter() - t
            timings.update({f"early/{k}": v for k, v in early_timings.items()})
        t = time.perf_counter()
        run_grid(cfg, adapter_dir=run_dir / "adapter", progress=progress, dataset=dataset,
                 scorer=early.scorer if early is not None else None)
        timings["eval"] = time.perf_counter() - t
    finally:
        if early is not None and not early.thread.is_alive():
            early.close()
    report_path = None
    if report:
        from captune.report import build_report

        t = time.perf_counter()
        paths = build_report(run_dir)
        report_path = getattr(paths, "html", None) or getattr(paths, "markdown", None)
        timings["report"] = time.perf_counter() - t
    atomic_write_json(run_dir / "pipeline_timings.json", {k: round(v, 3) for k, v in timings.items()})
    return PipelineResult(run_dir, trained, report_path, timings)
