"""What a training run checks and builds before its first step: refused settings, the run directory,
the step log, and the vision-feature store filled from the readable images."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from captune.config import RunConfig
from captune.data import open_image
from captune.errors import ConfigError, DataError, UserError
from captune.io import atomic_write_text
from captune.model.features import encode_images, image_file_key, store_for
from captune.model.load import DTYPES
from captune.progress import Bar
from captune.train.checkpoint import complete_checkpoints
from captune.train.distributed import fill_store

MEMORY_CACHE_LIMIT = 2 * 1024**3  # `feature_cache: auto` keeps features in RAM below this, else on disk


def check_precision(cfg: RunConfig, family: str) -> None:
    """Refuse precisions that train badly: fp16 anywhere in T5, and fp16 weights without a gradient scaler.

    `family` is the config's (may be `auto`) before loading and the detected one after."""
    if family == "t5":
        for key, value in (("model.dtype", cfg.model.dtype), ("train.precision", cfg.train.precision)):
            if value == "fp16":
                raise ConfigError(f"config key '{key}': fp16 overflows in T5 (NaN losses); use bf16 or fp32")
    if cfg.model.dtype == "fp16" and cfg.train.precision != "fp16":
        raise ConfigError(
            f"config key 'train.precision': model.dtype fp16 with train.precision {cfg.train.precision} trains without "
            "a gradient scaler (fp16 gradients under- and overflow); set train.precision=fp16, or model.dtype=bf16"
        )


def family_hint(cfg: RunConfig) -> str:
    """The LM family before any weights load (the key, a tiny name, a local config.json or a published
    name), so that a refused precision fails before minutes of loading; `auto` when not known yet."""
    from captune.model.load import TINY_NAMES
    from captune.model.presets import known_name

    name = cfg.model.name_or_path
    if cfg.model.family != "auto" or name in TINY_NAMES:
        return TINY_NAMES.get(name, cfg.model.family)
    try:
        model_type = json.loads((Path(name).expanduser() / "config.json").read_text())["text_config"]["model_type"]
        return "t5" if "t5" in model_type else "opt"
    except (OSError, ValueError, KeyError, TypeError):
        published = known_name(name)
        return "auto" if published is None else ("t5" if "t5" in published else "opt")


def check_config(cfg: RunConfig, resume: bool) -> None:
    """Refuse before the accelerator starts: bad precisions, overwriting a run that has checkpoints, and a
    feature cache forced on where the features change every step (augmentation, LoRA in the ViT)."""
    check_precision(cfg, family_hint(cfg))
    if not resume and complete_checkpoints(cfg.run_dir / "train" / "checkpoints"):
        raise UserError(
            f"{cfg.run_dir}: this run already has checkpoints; pass --resume to continue it, or choose another "
            "run name (--set name=...) to start over"
        )
    for on, why in ((cfg.train.augment, "augmentation changes the images every epoch"),
                    (cfg.lora.adapt_vision, "lora.adapt_vision trains the vision encoder, so its features change "
                                            "every step")):
        if on and cfg.train.feature_cache in ("memory", "disk"):
            raise ConfigError(f"config key 'train.feature_cache': {why}; set train.feature_cache=auto or off")


class Logger:
    """JSONL log of every step and validation, plus TensorBoard when installed."""

    def __init__(self, path: Path, resume_step: int, tensorboard_dir: Path | None,
                 say: Callable[[str], None] = print) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if path.exists() and resume_step > 0:
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue
        atomic_write_text(path, "".join(line + "\n" for line in kept))
        self.fh = path.open("a", encoding="utf-8")
        self.tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # said once per run; the JSONL log is still the full record
                say("train.tensorboard is true but TensorBoard is not installed: no events in train/tb/ "
                    "(`pip install captune[tensorboard]`, or set train.tensorboard=false); train/log.jsonl has "
                    "every step")
            else:
                self.tb = SummaryWriter(str(tensorboard_dir))

    def write(self, record: dict[str, Any]) -> None:
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.fh.close()
        if self.tb is not None:
            self.tb.close()


def feature_store(cfg: RunConfig, model, image_processor, num_images: int):
    """The vision-feature store: in RAM (`memory`, or `auto` below MEMORY_CACHE_LIMIT), else on disk."""
    tc, dtype = cfg.train, DTYPES[cfg.model.dtype]
    vision = model.get_base_model().config.vision_config
    tokens = (vision.image_size // vision.patch_size) ** 2 + 1
    estimate = num_images * tokens * vision.hidden_size * torch.finfo(dtype).bits // 8
    on_disk = tc.feature_cache == "disk" or (tc.feature_cache == "auto" and estimate > MEMORY_CACHE_LIMIT)
    directory = tc.feature_directory() if on_disk else None
    return store_for(model, cfg.model.name_or_path, cfg.model.revision, image_processor, directory, dtype)


def prepare_images(records, model, image_processor, store, cfg: RunConfig, accelerator, progress: bool = False):
    """Cache vision features (or just check readability); apply `data.on_bad_image` per image.

    With a feature store each file is decoded once: the decode that feeds the vision tower is the
    readability check. Returns every record's key, the usable indices and the skipped-image lines."""
    keys: list[str] = [""] * len(records)
    problems: dict[int, str] = {}
    for i, record in enumerate(records):
        try:
            keys[i] = image_file_key(record.path)
            if store is None:
                open_image(record.path)  # names the file if it is broken
        except DataError as exc:
            problems[i] = str(exc)
    if store is not None:
        readable = [i for i in range(len(records)) if i not in problems]
        missing = len({keys[i] for i in readable if keys[i] not in store})  # a file listed twice is encoded once
        if missing:
            accelerator.print(f"caching vision features for {missing} images ...")
        dev = accelerator.device
        # Process 0 encodes all of them, except with a shared disk store (then only its share: no bar).
        bar_on = progress and accelerator.is_main_process and (accelerator.num_processes == 1 or not store.directory)
        with Bar("vision features", missing, bar_on) as bar:
            errors = fill_store([records[i].path for i in readable], [keys[i] for i in readable], store,
                                lambda pix: encode_images(model, pix.to(dev)), image_processor,
                                cfg.generate.batch_size, accelerator.process_index, accelerator.num_processes,
                                accelerator.wait_for_everyone, progress=bar.advance)
        problems.update({readable[k]: msg for k, msg in errors.items()})
        problems.update({i: problems.get(i, "unreadable") for i in readable if keys[i] not in store})
    skipped: list[str] = []
    for i in sorted(problems):
        if cfg.data.on_bad_image == "error":
            raise DataError(problems[i])
        skipped.append(f"{records[i].path}: {problems[i]}")
        keys[i] = ""
    if skipped:
        accelerator.print(f"skipped {len(skipped)} unreadable training images (data.on_bad_image=skip); "
                          f"first: {skipped[0]}")
    usable = [i for i in range(len(records)) if i not in problems]
    return keys, usable, skipped


def check_enough_captions(cfg: RunConfig, records: list, what: str) -> int:
    """The captions one epoch of `records` yields; fewer than one optimizer step's (batch_size x grad_accum)
    are refused, since the epoch loop would never step. `what` names the records in the error."""
    tc = cfg.train
    counts = [len(r.refs) if tc.captions_per_image == "all" else int(bool(r.refs)) for r in records]
    per_epoch = sum(counts)
    per_step = tc.batch_size * tc.grad_accum
    if records and per_epoch < per_step:
        raise ConfigError(
            f"config key 'train.batch_size': {what} has {per_epoch} training captions, fewer than one step's "
            f"train.batch_size x train.grad_accum = {per_step}; lower train.batch_size (or add data)"
        )
    return per_epoch
