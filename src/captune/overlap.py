"""Stages run side by side, in one place: the stages themselves run in sequence and know nothing of it.

- `run_side_by_side`: `run_pipeline` with the grid's base-model systems captioned in a thread while the
  adapter trains (decoding spends most of its time in torch kernels that release the GIL, so on a CPU
  the two share the cores; demo: ~10-15 s saved), METEOR fed each batch's captions as they come.
- `start_human_baseline`: the human baseline and METEOR's reduced paraphrase table in a child process.
- `CaptionWorker`: a sweep's finished variants captioned in a child process while the next one trains.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from captune.config import RunConfig, dump_config
from captune.pipeline import PipelineResult, finish, run_pipeline, train_stage, training_finished


def run_side_by_side(cfg: RunConfig, progress: bool = True, dataset=None, report: bool = True) -> PipelineResult:
    """`run_pipeline`'s outputs, with the systems that need no adapter captioned while it trains. Sampling
    draws from each system's own seeded generator, so neither thread changes the other's random numbers;
    systems that sample from torch's global generator wait for the main grid, as do adapter systems."""
    # Imported before the thread (the grid's model too, below): transformers' lazy module can fail with
    # "cannot import name 'AutoProcessor'" when two threads resolve its names at once.
    import accelerate  # noqa: F401
    import peft  # noqa: F401

    from captune.data import load_dataset_from_config
    from captune.data.selection import plan_selection
    from captune.grid.run import only_systems, open_scorer, run_grid
    from captune.model.load import BaseModels

    dataset = dataset if dataset is not None else load_dataset_from_config(cfg.data)
    early_cfg = only_systems(cfg, lambda s: not s.adapter and not s.decode.global_rng)
    if training_finished(cfg.run_dir) or not early_cfg.eval.systems:
        return run_pipeline(cfg, progress, dataset, report)
    plan_selection(cfg, dataset)  # a config that selects on evaluated images fails before any work
    # Built here, before train() builds its own: `from_pretrained` swaps torch's init functions for no-ops
    # process-wide while it builds, so a build beside train's would leave its LoRA layers uninitialised.
    bases = BaseModels()
    bases.get(cfg.model)
    scorer = open_scorer(cfg, dataset, {r.image_id: list(r.refs) for r in dataset.select(cfg.data.eval_split)})
    done: dict = {}  # the thread's grid timings, or its error

    def caption() -> None:
        try:
            done["timings"] = run_grid(early_cfg, progress=False, dataset=dataset, score=False, scorer=scorer,
                                       bases=bases).timings
        except BaseException as exc:  # re-raised on this thread below
            done["error"] = exc

    thread = threading.Thread(target=caption, name="captune-early-captions", daemon=True)
    try:
        dump_config(cfg, cfg.run_dir / "config.yaml")  # the run's config, not early_cfg's, whoever writes first
        thread.start()
        t = time.perf_counter()
        trained = train_stage(cfg, dataset, progress)
        timings = {"train": time.perf_counter() - t}
        t = time.perf_counter()
        thread.join()
        if "error" in done:
            raise done["error"]
        timings["wait_early_captions"] = time.perf_counter() - t
        timings.update({f"early/{k}": v for k, v in done["timings"].items()})
        t = time.perf_counter()
        run_grid(cfg, adapter_dir=cfg.run_dir / "adapter", progress=progress, dataset=dataset, scorer=scorer)
        timings["eval"] = time.perf_counter() - t
    finally:
        if not thread.is_alive():
            scorer.close()
    return finish(cfg, trained, timings, report)


def start_human_baseline(cfg: RunConfig):
    """The human baseline (5 rotations: ~30 s of one core) and METEOR's reduced paraphrase table in a
    light child process on the other core while this one works; returns the process, or None if cached
    or it cannot start (the grid then computes it itself)."""
    import multiprocessing

    from captune.metrics.human import human_cache_path, human_families, precompute_for_split, split_references
    from captune.metrics.java import find_java

    families = human_families(cfg.eval.metrics, find_java().available)
    data, samples, seed = cfg.data, cfg.eval.bootstrap_samples, cfg.eval.bootstrap_seed
    refs = split_references(data.path, data.eval_split, data.format)
    if human_cache_path(refs, families, samples, seed).is_file():
        return None
    try:
        process = multiprocessing.get_context("spawn").Process(
            target=precompute_for_split, args=(data.path, data.eval_split, families, samples, seed, data.format),
            daemon=True, name="captune-human-baseline")
        process.start()
        return process
    except OSError:
        return None


_DATASETS: dict[str, Any] = {}
_BASES: Any = None  # the worker's one loaded base (captune.model.load.BaseModels)


def _caption_job(cfg_data: dict[str, Any], adapter: bool) -> None:
    """In the caption worker process: one variant's adapter systems (or the base systems) into its run
    directory. The dataset is loaded once per worker."""
    import json

    import torch

    from captune.config import config_from_dict
    from captune.data import load_dataset_from_config
    from captune.grid.run import only_systems, run_grid

    torch.set_num_threads(1)
    cfg = config_from_dict(cfg_data)
    key = json.dumps(cfg_data["data"], sort_keys=True)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset_from_config(cfg.data)
    global _BASES
    if _BASES is None:  # one base per worker; each grid takes its adapter off again
        from captune.model.load import BaseModels

        _BASES = BaseModels()
    adapter_dir = cfg.run_dir / "adapter" if adapter else None
    run_grid(only_systems(cfg, lambda s: s.adapter == adapter), adapter_dir=adapter_dir,
             progress=False, dataset=_DATASETS[key], score=False, bases=_BASES)


class CaptionWorker:
    """A sweep's finished variants captioned in one child process while the next one trains (the base
    systems during the first training), so a 2-core CPU does both at once. A process, not a thread:
    loading an adapter creates LoRA layers with torch's global generator, which would change the
    training's dropout masks beside it; here the training sees exactly the numbers it sees alone."""

    def __init__(self) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        self.jobs: list = []

    def submit(self, cfg, adapter: bool = True) -> None:
        from captune.config import config_to_dict

        self.jobs.append(self.pool.submit(_caption_job, config_to_dict(cfg), adapter))

    def finish(self) -> None:
        try:
            for job in self.jobs:
                job.result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
