"""`--backend ray`: each unfinished variant is one Ray Tune trial with its own CPU/GPU request.

Ray schedules the trials, so a multi-GPU machine or a Ray cluster trains several variants at once; a
trial runs the same `pipeline.train_stage` as the local backend (skip when finished, resume from the newest
checkpoint), so the adapters are the same for the same seeds. Captioning, scoring and the report then
run in this process, exactly as for `--backend local`.

Without RAY_ADDRESS a local Ray instance starts; with it (e.g. `RAY_ADDRESS=auto` after `ray start
--head`) the trials go to that cluster, whose nodes must see the same paths (shared filesystem).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from captune.errors import UserError
from captune.sweep.spec import SweepSpec

RAY_DIR = "ray"


def require_ray():
    """Ray Tune, or one line saying how to install it."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise UserError("--backend ray: Ray is not installed; pip install captune[ray] "
                        "(or use --backend local)") from None
    return ray, tune


def _trial(params: dict[str, Any], configs: dict[str, dict[str, Any]], cwd: str) -> dict[str, Any]:
    """One variant in a Ray worker: the driver's working directory (relative paths in the config),
    one thread per requested CPU, then the local backend's training."""
    import torch

    from captune.config import config_from_dict
    from captune.pipeline import train_stage

    if os.path.isdir(cwd):
        os.chdir(cwd)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1)))
    trained = train_stage(config_from_dict(configs[params["variant"]]), progress=False)
    return {"trained": trained}


def _init(ray) -> None:
    """Connect to RAY_ADDRESS's cluster, or start a local instance whose workers import this captune."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        return
    import captune

    source = str(Path(captune.__file__).resolve().parents[1])
    path = os.pathsep.join([source] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": path}}, include_dashboard=False, log_to_driver=False)


def train_ray(spec: SweepSpec, resources: dict[str, float] | None = None,
              say: Callable[[str], None] = print) -> list[str]:
    """Train the unfinished variants as Ray Tune trials (in parallel as resources allow); the names trained."""
    from captune.config import config_to_dict
    from captune.pipeline import training_finished

    ray, tune = require_ray()
    todo = [v for v in spec.variants if not training_finished(v.run_dir)]
    if not todo:
        return []
    _init(ray)
    request = {k: v for k, v in (resources or {"cpu": 1}).items() if v}
    say(f"ray: {len(todo)} trials, each {request}; cluster {ray.cluster_resources()}")
    trainable = tune.with_resources(
        tune.with_parameters(_trial, configs={v.name: config_to_dict(v.cfg) for v in todo}, cwd=os.getcwd()),
        request)
    tuner = tune.Tuner(
        trainable,
        param_space={"variant": tune.grid_search([v.name for v in todo])},
        tune_config=tune.TuneConfig(num_samples=1, reuse_actors=False),
        run_config=tune.RunConfig(name="train", storage_path=str((spec.out / RAY_DIR).resolve()), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    results = tuner.fit()
    failed = [r for r in results if r.error is not None]
    if failed:
        first = failed[0]
        raise UserError(f"--backend ray: {len(failed)} trial(s) failed, first {first.config.get('variant')}: "
                        f"{str(first.error).strip().splitlines()[-1] if str(first.error).strip() else first.error}")
    return [v.name for v in todo]
