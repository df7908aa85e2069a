"""Read a finished run directory into one `RunData`, so that every report part works from the same facts.

Only `scores.json` is required (it is what the report is about); everything else — config, training
log and summary, timings, predictions, the dataset's images, `alignment.json` — is optional and its
absence is recorded in `RunData.missing` so the report can say what it could not show and why.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captune.errors import UserError

SCORES = "scores.json"
CONFIG = "config.yaml"
TRAIN_LOG = "train/log.jsonl"
TRAIN_SUMMARY = "train/summary.json"
GRID_TIMINGS = "grid_timings.json"
ALIGNMENT = "alignment.json"
PRED_DIR = "predictions"


@dataclass(frozen=True)
class ImageInfo:
    """What the gallery and per-image table know about one evaluated image."""

    image_id: int
    name: str
    path: Path | None
    refs: tuple[str, ...]


@dataclass
class RunData:
    """Everything the report shows, read once from the run directory (plus the dataset for images)."""

    run_dir: Path
    scores: dict[str, Any]
    config: dict[str, Any] | None = None
    train_summary: dict[str, Any] | None = None
    train_log: list[dict[str, Any]] = field(default_factory=list)
    grid_timings: dict[str, float] | None = None
    alignment: dict[str, Any] | None = None
    predictions: dict[str, dict[int, str]] = field(default_factory=dict)
    images: dict[int, ImageInfo] = field(default_factory=dict)
    dataset_splits: dict[str, int] | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str((self.config or {}).get("name") or self.run_dir.name)

    @property
    def systems(self) -> list[str]:
        """Systems in grid order (scores.json from `captune score` has no order: keep its own)."""
        order = [s for s in self.scores.get("systems_order") or [] if s in self.scores["systems"]]
        return order + [s for s in self.scores["systems"] if s not in order]

    @property
    def reference(self) -> str:
        ref = self.scores.get("reference_system")
        return ref if ref in self.scores["systems"] else self.systems[0]

    @property
    def settings(self) -> dict[str, dict[str, Any]]:
        return self.scores.get("system_settings") or {}

    @property
    def lora_system(self) -> str | None:
        """The first adapted system: the one the gallery compares with the reference."""
        return next((s for s in self.systems if self.settings.get(s, {}).get("adapter")), None)

    @functools.cached_property
    def image_ids(self) -> list[int]:
        """Computed once: per_image() checks lengths against it for every (system, metric) cell."""
        return [int(i) for i in self.scores.get("image_ids") or []]

    @property
    def human(self) -> dict[str, Any] | None:
        """The human leave-one-out row's metrics, when the grid computed it."""
        doc = self.scores.get("human")
        if isinstance(doc, dict):
            return (doc.get("systems") or {}).get("human")
        return None

    def metric(self, system: str, name: str) -> dict[str, Any] | None:
        entry = self.scores["systems"].get(system, {}).get("metrics", {}).get(name)
        return entry if isinstance(entry, dict) else None

    def per_image(self, system: str, name: str) -> list[float | None] | None:
        values = self.scores["systems"].get(system, {}).get("per_image", {}).get(name)
        return values if isinstance(values, list) and len(values) == len(self.image_ids) else None


def _read_json(path: Path, command: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 JSON; rerun `{command}` to rewrite it") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: damaged JSON (line {exc.lineno}); rerun `{command}` to rewrite it") from None


def _optional_json(path: Path, command: str, missing: list[str], what: str) -> Any:
    if not path.is_file():
        missing.append(f"{what}: {path.name} not found (written by `{command}`)")
        return None
    try:
        return _read_json(path, command)
    except UserError as exc:
        missing.append(f"{what}: {exc}")
        return None


def read_scores(run_dir: Path) -> dict[str, Any]:
    """scores.json, checked enough that the report can rely on its shape."""
    path = run_dir / SCORES
    if not path.is_file():
        raise UserError(f"{path}: not found; run `captune eval CONFIG` for this run first (it writes scores.json)")
    scores = _read_json(path, "captune eval CONFIG")
    if not isinstance(scores, dict) or not isinstance(scores.get("systems"), dict) or not scores["systems"]:
        raise UserError(f"{path}: holds no systems; rerun `captune eval CONFIG` to rewrite it")
    return scores


def read_train_log(path: Path) -> list[dict[str, Any]]:
    """log.jsonl lines in order; a torn last line (a killed run) is skipped, not fatal."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def read_predictions(path: Path) -> dict[int, str] | None:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        return {int(r["image_id"]): str(r["caption"]) for r in rows}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _load_config(run_dir: Path, missing: list[str]) -> dict[str, Any] | None:
    import yaml

    path = run_dir / CONFIG
    if not path.is_file():
        missing.append(f"setup: {CONFIG} not found (written by `captune train` / `captune eval`)")
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        missing.append(f"setup: {path.name} unreadable ({type(exc).__name__})")
        return None
    return data if isinstance(data, dict) else None


def _load_images(run: RunData) -> None:
    """Map image ids to files and references by reloading the dataset the config names."""
    from captune.config import config_from_dict
    from captune.data import load_dataset_from_config

    if run.config is None:
        run.missing.append("images: no config.yaml, so the dataset (images, references) cannot be located")
        return
    try:
        cfg = config_from_dict(run.config)
        dataset = load_dataset_from_config(cfg.data)
    except UserError as exc:
        run.missing.append(f"images: dataset not loadable ({exc})")
        return
    wanted = set(run.image_ids)
    for record in dataset.records:
        if record.image_id in wanted:
            run.images[record.image_id] = ImageInfo(record.image_id, record.name, record.path, tuple(record.refs))
    run.dataset_splits = dataset.split_counts()
    lost = len(wanted - set(run.images))
    if lost:
        run.missing.append(f"images: {lost} evaluated image ids are not in the dataset at {cfg.data.path}")


def load_run(run_dir: str | Path, with_images: bool = True) -> RunData:
    """Read a run directory; raise UserError only when scores.json (the report's subject) is unusable."""
    root = Path(run_dir)
    if not root.is_dir():
        raise UserError(f"{root}: no such run directory; pass RUN_DIR (e.g. runs/NAME) after `captune eval`")
    run = RunData(run_dir=root, scores=read_scores(root))
    run.config = _load_config(root, run.missing)
    run.train_summary = _optional_json(root / TRAIN_SUMMARY, "captune train", run.missing, "training")
    log_path = root / TRAIN_LOG
    if log_path.is_file():
        run.train_log = read_train_log(log_path)
    elif run.train_summary is not None:
        run.missing.append(f"training: {TRAIN_LOG} not found (written by `captune train`)")
    run.grid_timings = _optional_json(root / GRID_TIMINGS, "captune eval", run.missing, "timings")
    if (root / ALIGNMENT).is_file():
        run.alignment = _optional_json(root / ALIGNMENT, "the synthetic benchmark's alignment scoring", run.missing,
                                       "alignment")
    for system in run.systems:
        got = read_predictions(root / PRED_DIR / f"{system}.json")
        if got is None:
            run.missing.append(f"captions: {PRED_DIR}/{system}.json missing or damaged (rerun `captune eval`)")
        else:
            run.predictions[system] = got
    if with_images:
        _load_images(run)
    return run
