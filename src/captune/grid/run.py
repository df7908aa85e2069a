"""Run the baseline grid: every system captions the same eval images, each image encoded once.

Vision features are computed once per image and reused by every system; Q-Former outputs once per
adapter state (base, LoRA), shared by all systems in that state; base and LoRA systems share one
loaded model with the adapter switched off and on. The scorer's JVM starts while captions are
generated. Finished systems are read back from `predictions/`, so an interrupted grid resumes.
Under a multi-process launch each process captions a share of the batches (`captune.grid.shard`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from captune.config import RunConfig, dump_config
from captune.decoding import System, grid_systems
from captune.env import environment_info
from captune.errors import DataError, UserError
from captune.faults import maybe_kill
from captune.grid.shard import current_shard, merge
from captune.io import atomic_write_json, atomic_write_text
from captune.metrics.results import value_with_ci
from captune.progress import Bar

PRED_DIR = "predictions"
META_FILE = "grid_meta.json"


@dataclass
class GridResult:
    run_dir: Path
    systems: list[str]
    generated: list[str]
    reused: list[str]
    skipped_images: list[str]
    scores: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def resolve_systems(cfg: RunConfig, with_adapter: bool) -> list[System]:
    """`eval.systems` (each with its full decoding, resolved by config.py), else the recipe's default grid."""
    systems = grid_systems(cfg, with_adapter)
    if not with_adapter and any(s.adapter for s in systems):
        names = ", ".join(s.name for s in systems if s.adapter)
        raise UserError(f"systems {names} need an adapter; train first or pass --adapter DIR")
    return systems


def only_systems(cfg: RunConfig, keep: Callable[[System], bool]) -> RunConfig:
    """The config with only the grid's systems that `keep` accepts (e.g. the adapter systems)."""
    return replace(cfg, eval=replace(cfg.eval, systems=[s for s in resolve_systems(cfg, True) if keep(s)]))


def read_predictions(path: Path, image_ids: list[int]) -> dict[int, str] | None:
    """A finished system's captions, or None if the file is absent, damaged or for other images."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        got = {int(r["image_id"]): str(r["caption"]) for r in rows}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return got if set(got) == set(image_ids) and len(rows) == len(image_ids) else None


def write_predictions(path: Path, image_ids: list[int], captions: list[str]) -> None:
    atomic_write_json(path, [{"image_id": i, "caption": c} for i, c in zip(image_ids, captions, strict=True)])


def read_devices(run_dir: Path) -> dict[str, str]:
    """Which device captioned each system (grid_meta.json; empty for runs made before it was recorded)."""
    try:
        devices = json.loads((run_dir / META_FILE).read_text(encoding="utf-8")).get("devices")
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in devices.items()} if isinstance(devices, dict) else {}


def record_devices(run_dir: Path, names: list[str], device: str) -> None:
    """Add `names` -> `device` to grid_meta.json (systems of one grid may be captioned in several runs)."""
    devices = read_devices(run_dir)  # one writer at a time: captune.overlap joins its thread before the grid
    devices.update({n: device for n in names})
    atomic_write_json(run_dir / META_FILE, {"devices": devices})


def sample_files(system: System) -> list[str]:
    return [system.name] + [f"{system.name}.sample-{k}" for k in range(1, system.samples)]


def run_grid(cfg: RunConfig, adapter_dir: str | Path | None = None, progress: bool = True,
             dataset=None, score: bool = True, scorer=None, bases=None, fuse: bool = True) -> GridResult:
    """Caption the eval split with every system, write predictions and scores into the run directory.

    `scorer`: an open Scorer (`open_scorer`; the caller closes it) fed each batch's captions, also with
    `score=False`. `bases`: a `model.load.BaseModels` lending the base model instead of a fresh load (an adapter the
    grid puts on it comes off again, so one loaded base serves several grids and trainings). `fuse=False`:
    one `generate` call per system and batch (same captions; for measuring what fusing gains)."""
    from captune.data import load_dataset_from_config
    from captune.generate.captioner import Captioner, DecodeJob
    from captune.model.adapters import load_adapter
    from captune.model.device import resolve_device
    from captune.model.features import encode_images, image_file_key, pixel_values, store_for
    from captune.model.load import load_blip2
    from captune.model.lora import take_off_lora
    from captune.train.distributed import refuse_unsupported_launch

    refuse_unsupported_launch()
    shard = current_shard()
    progress = progress and shard.main
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if shard.main and not (run_dir / "config.yaml").exists():
        dump_config(cfg, run_dir / "config.yaml")
    adapter_path = Path(adapter_dir) if adapter_dir else run_dir / "adapter"
    has_adapter = (adapter_path / "adapter_config.json").is_file()
    if adapter_dir and not has_adapter:
        raise UserError(f"{adapter_path}: no adapter_config.json; pass the run's adapter/ folder")
    systems = resolve_systems(cfg, has_adapter)

    # Same images for everyone: unreadable ones are reported and left out of every system.
    dataset = dataset if dataset is not None else load_dataset_from_config(cfg.data)
    records = dataset.select(cfg.data.eval_split)
    if not records:
        raise UserError(f"{cfg.data.path}: split {cfg.data.eval_split!r} has no images; check data.eval_split")
    from captune.data import open_image

    usable, skipped = [], []
    for r in records:
        try:
            open_image(r.path)
            usable.append(r)
        except DataError as exc:
            if cfg.data.on_bad_image == "error":
                raise
            skipped.append(str(exc))
    records = usable
    if not records:
        raise UserError(f"{cfg.data.path}: no readable images in split {cfg.data.eval_split!r}")
    image_ids = [r.image_id for r in records]
    refs = {r.image_id: list(r.refs) for r in records}
    timings["load_data"] = time.perf_counter() - t0

    pred_dir = run_dir / PRED_DIR
    todo = [s for s in systems if any(read_predictions(pred_dir / f"{n}.json", image_ids) is None
                                      for n in sample_files(s))]
    reused = [s.name for s in systems if s not in todo]

    given = scorer
    if scorer is not None and list(scorer.image_ids) != image_ids:
        scorer = None  # made for other images (one became unreadable since): a fresh one below
    if scorer is None and score and shard.main:  # created now: the JVM and references overlap with captioning
        scorer = open_scorer(cfg, dataset, refs)

    if scorer is not None and reused:  # their METEOR runs while the remaining systems decode (queued once)
        for system in systems:
            if system.name in reused:
                scorer.prefetch({f: read_predictions(pred_dir / f"{f}.json", image_ids) or {}
                                 for f in sample_files(system)})

    attached = None  # an adapter put on a lent base model (`bases`): taken off again at the end
    try:
        if todo:
            t = time.perf_counter()
            device = resolve_device(cfg.model.device, shard.state)
            loaded = bases.get(cfg.model, device) if bases is not None else load_blip2(cfg.model, device=device)
            model = loaded.model
            if any(s.adapter for s in todo):
                model = load_adapter(model, adapter_path)
                attached = model if bases is not None else None
            model.eval()
            timings["load_model"] = time.perf_counter() - t
            captioner = Captioner(model, loaded.processor, loaded.family)
            image_processor = loaded.processor.image_processor
            dtype = next(captioner.blip.vision_model.parameters()).dtype
            directory = cfg.train.feature_directory() if cfg.train.feature_cache == "disk" else None
            store = store_for(model, cfg.model.name_or_path, cfg.model.revision, image_processor, directory, dtype)
            keys = [image_file_key(r.path) for r in records]
            bs = cfg.generate.batch_size
            starts = shard.starts(len(records), bs)  # this process's batches (all of them in one process)
            mine = [j for i in starts for j in range(i, min(i + bs, len(records)))]
            # An adapter trained with lora.adapt_vision changes the ViT: base systems get the base ViT's
            # features (cached), adapter systems the adapted ViT's (computed here, not cached).
            vision_lora = any("lora_" in n for n, _ in captioner.blip.vision_model.named_parameters())

            def encode(idx, state: bool = False) -> torch.Tensor:
                with captioner.adapter_context(state):
                    pix = pixel_values([records[i].path for i in idx], image_processor)
                    return encode_images(model, pix.to(captioner.device))

            t = time.perf_counter()
            with Bar("vision features", sum(1 for j in dict.fromkeys(mine) if keys[j] not in store), progress) as bar:
                store.ensure([keys[j] for j in mine], lambda idx: encode([mine[j] for j in idx]), bs,
                             progress=bar.advance)
            timings["encode_images"] = time.perf_counter() - t
            # Q-Former outputs once per adapter state, shared by every system in that state.
            t = time.perf_counter()
            lm_inputs: dict[bool, dict[int, torch.Tensor]] = {}  # adapter state -> {batch start: LM inputs}
            for state in sorted({s.adapter for s in todo}):
                lm_inputs[state] = {}
                for i in starts:
                    vision = encode(range(i, min(i + bs, len(keys))), True) if state and vision_lora else \
                        store.get(keys[i:i + bs])
                    lm_inputs[state][i] = captioner.lm_inputs(vision, state)
            timings["qformer"] = time.perf_counter() - t
            bar = Bar("captions", sum(len(mine) * s.samples for s in todo), progress)
            written = 0
            try:
                # Images outer, systems inner: each batch's image prefill (OPT's KV cache of the query
                # positions) is computed once per adapter state and shared by the systems of that state.
                for state in sorted({s.adapter for s in todo}):
                    group = [s for s in todo if s.adapter == state]
                    captions: dict[str, dict[int, list[str]]] = {f: {} for s in group for f in sample_files(s)}
                    for i in starts:
                        feats = lm_inputs[state][i]
                        t = time.perf_counter()
                        prefix = captioner.prefix_cache(feats, state)
                        timings["prefill"] = timings.get("prefill", 0.0) + time.perf_counter() - t
                        # Every system's captions of this batch; compatible systems share a generate call.
                        jobs = [DecodeJob(feats, system.decode, state, system.decode.seed + 1000 * k + i, prefix,
                                          name=fname)
                                for system in group for k, fname in enumerate(sample_files(system))]
                        for job, out in zip(jobs, captioner.generate_jobs(jobs, fuse, timings), strict=True):
                            captions[job.name][i] = [c[0] for c in out]
                            bar.advance(len(out), job.name)
                        if scorer is not None:  # METEOR on the other core while the next batch decodes
                            batch_ids = image_ids[i:i + bs]
                            scorer.prefetch({f: dict(zip(batch_ids, captions[f][i], strict=True)) for f in captions})
                    parts = shard.gather((captions, str(captioner.device)))
                    if parts is None:  # not process 0: it writes what this process captioned
                        continue
                    ordered = merge([p[0] for p in parts])
                    device = " + ".join(dict.fromkeys(p[1] for p in parts))
                    for system in group:
                        for fname in sample_files(system):
                            write_predictions(pred_dir / f"{fname}.json", image_ids, ordered[fname])
                        record_devices(run_dir, [system.name], device)
                        written += 1
                        maybe_kill("grid-system", written)
            finally:
                bar.close()
        result = GridResult(run_dir, [s.name for s in systems], [s.name for s in todo], reused, skipped,
                            timings=timings)
        if scorer is not None and score:
            t = time.perf_counter()
            result.scores = score_grid(cfg, scorer, systems, image_ids, pred_dir, skipped, progress=progress)
            timings["score"] = time.perf_counter() - t
    finally:
        if attached is not None:
            take_off_lora(attached)  # the caller's base model as it was (weights untouched)
        if scorer is not None and scorer is not given:
            scorer.close()
    timings["total"] = time.perf_counter() - t0
    if shard.main:
        atomic_write_json(run_dir / "grid_timings.json", {k: round(v, 3) for k, v in timings.items()})
    return result


def open_scorer(cfg: RunConfig, dataset, refs: dict[int, list[str]]):
    """The Scorer of `cfg.eval` for these references, its METEOR JVM and reference preparation started."""
    from captune.metrics import Scorer

    train_caps = None
    if cfg.data.train_split:
        with contextlib.suppress(DataError):
            train_caps = [c for r in dataset.select(cfg.data.train_split) for c in r.refs]
    meteor, tokens = None, {}
    if "coco" in cfg.eval.metrics:  # the shared JVM, with the reduced paraphrase table when one is cached
        from captune.metrics.meteor_pipeline import start_meteor

        meteor, _ = start_meteor(refs, tokens)
    return Scorer(refs, metrics=cfg.eval.metrics, bootstrap_samples=cfg.eval.bootstrap_samples,
                  seed=cfg.eval.bootstrap_seed, paired_trials=cfg.eval.paired_trials, spice=cfg.eval.spice or None,
                  train_captions=train_caps, meteor=meteor, token_cache=tokens)


def score_grid(cfg: RunConfig, scorer, systems: list[System], image_ids: list[int], pred_dir: Path,
               skipped: list[str], progress: bool = False) -> dict[str, Any]:
    """Score every system (and the extra samples of sampling systems) and write scores.json + results."""
    scorer.progress = progress  # the METEOR bar while scoring waits for its segments
    from captune.metrics import build_report

    captions = {}
    for system in systems:
        for fname in sample_files(system):
            got = read_predictions(pred_dir / f"{fname}.json", image_ids)
            if got is None:
                raise UserError(f"{pred_dir / (fname + '.json')}: predictions missing or damaged; rerun captune eval")
            captions[fname] = got
    results = scorer.score(captions)
    names = [s.name for s in systems]
    reference = cfg.eval.reference_system if cfg.eval.reference_system in names else names[0]
    comparisons = [(n, reference, scorer.compare(results[n], results[reference])) for n in names if n != reference]
    best = best_baselines(systems, results)
    devices = read_devices(cfg.run_dir)
    for system in systems:  # the recipe's claim: the adapter beats the strongest prompt and sampling baselines
        for baseline in dict.fromkeys(best.values()):
            if system.adapter and baseline != reference:
                comparisons.append((system.name, baseline, scorer.compare(results[system.name], results[baseline])))
    samples = {s.name: _sample_spread([results[f] for f in sample_files(s)]) for s in systems if s.samples > 1}
    extra = {
        "reference_system": reference,
        "best_baselines": {"criterion": BEST_BY, **best},
        "systems_order": names,
        "system_settings": {s.name: {"adapter": s.adapter, "samples": s.samples, **s.decode.__dict__}
                            for s in systems},
        "skipped_images": skipped,
        "devices": {n: devices.get(n) for n in names},  # where each system was captioned (None: not recorded)
        "sample_spread": samples,
        "environment": environment_info(),
    }
    if cfg.eval.human_baseline:
        from captune.metrics.human import cached_human_report, human_families

        try:
            families = human_families(cfg.eval.metrics, "coco/METEOR" not in scorer.unavailable)
            extra["human"] = cached_human_report(scorer.refs, metrics=families,
                                          bootstrap_samples=cfg.eval.bootstrap_samples,
                                          seed=cfg.eval.bootstrap_seed, meteor=scorer.meteor, progress=progress)
        except Exception as exc:  # the human row is optional context; never lose the grid for it
            extra["human_unavailable"] = f"{type(exc).__name__}: {exc}"
    report = build_report(scorer, {n: results[n] for n in captions if n in names}, comparisons, extra=extra)
    atomic_write_json(cfg.run_dir / "scores.json", report)
    write_results_table(cfg.run_dir, report)
    return report


BEST_BY = "coco/CIDEr"


def baseline_kind(system: System) -> str | None:
    """Which baseline family a system belongs to: 'prompt', 'sampling', or None (zero-shot decoding, LoRA)."""
    if system.adapter:
        return None
    if system.decode.do_sample:
        return "sampling"
    return "prompt" if system.decode.prompt else None


def best_baselines(systems: list[System], results) -> dict[str, str]:
    """The strongest prompt and sampling baselines by CIDEr (BLEU-4 where CIDEr is missing): what a
    fine-tuned system must beat, not merely the zero-shot reference."""
    best: dict[str, tuple[float, str]] = {}
    for system in systems:
        kind = baseline_kind(system)
        values = results[system.name].values()
        score = values.get(BEST_BY) if values.get(BEST_BY) is not None else values.get("coco/BLEU-4")
        if kind is None or score is None:
            continue
        if kind not in best or score > best[kind][0]:
            best[kind] = (float(score), system.name)
    return {kind: name for kind, (_, name) in sorted(best.items())}


def _sample_spread(results) -> dict[str, dict[str, float]]:
    import statistics

    out: dict[str, dict[str, float]] = {}
    for metric in results[0].values():
        vals = [r.values().get(metric) for r in results]
        vals = [v for v in vals if v is not None]
        if len(vals) >= 2:
            out[metric] = {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals), "k": len(vals)}
    return out


MAIN_METRICS = ["coco/BLEU-1", "coco/BLEU-4", "coco/METEOR", "coco/ROUGE-L", "coco/CIDEr", "rouge/ROUGE-1",
                "rouge/ROUGE-2", "div/TTR", "div/seq-rep-4", "div/Duplicate Rate", "div/distinct-2"]


def write_results_table(run_dir: Path, report: dict[str, Any]) -> None:
    """results.md / results.json: one row per system, the main metrics with 95 % intervals."""
    from captune.report.tables import md_table

    rows, cells = [], []
    for name in report.get("systems_order", list(report["systems"])):
        metrics = report["systems"][name]["metrics"]
        rows.append({"system": name, **{m: metrics.get(m, {}).get("value") for m in MAIN_METRICS}})
        cells.append([name] + [value_with_ci(metrics.get(m) or {}) for m in MAIN_METRICS])
    atomic_write_json(run_dir / "results.json", {"metrics": MAIN_METRICS, "rows": rows})
    atomic_write_text(run_dir / "results.md", md_table(["system", *MAIN_METRICS], cells) + "\n")
