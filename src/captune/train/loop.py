"""The LoRA training loop: plain PyTorch on `accelerate` (one process or DDP; see train/distributed.py).

Kept visible instead of HF `Trainer` because the feature store, exact resume and the label rules
are ours. Data order is a pure function of (seed, epoch), so resuming needs only the position.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from captune.config import RunConfig, config_to_dict, dump_config
from captune.env import environment_info
from captune.errors import ConfigError, UserError
from captune.faults import maybe_kill, nonfinite_loss
from captune.io import atomic_write_json, atomic_write_text
from captune.model.features import (
    encode_images,
    image_file_key,
    pixel_values,
    query_features,
    store_for,
)
from captune.model.lora import summarize_parameters
from captune.progress import Bar
from captune.train.batches import CaptionCollator, TextBatch, next_token_targets
from captune.train.checkpoint import complete_checkpoints, load_checkpoint, prune_checkpoints, save_checkpoint
from captune.train.distributed import fill_store, refuse_unsupported_launch

PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
MEMORY_CACHE_LIMIT = 2 * 1024**3  # `feature_cache: auto` keeps features in RAM below this, else on disk


class TrainingError(UserError):
    """Training cannot go on (e.g. the loss stays non-finite); the last good checkpoint is intact."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_loss: float | None
    bad_steps: int
    summary: dict[str, Any] = field(default_factory=dict)


def lr_lambda(schedule: str, warmup: int, total: int):
    """Linear warmup, then cosine / linear decay to 0, or constant (LAVIS uses warmup + cosine)."""

    def fn(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


def epoch_pairs(num_captions: list[int], epoch: int, seed: int, mode: str) -> list[tuple[int, int]]:
    """(image index, caption index) pairs of one epoch, shuffled with the run seed."""
    rng = np.random.default_rng([seed, epoch])
    if mode == "one":
        pairs = [(i, int(rng.integers(n))) for i, n in enumerate(num_captions) if n]
    else:
        pairs = [(i, j) for i, n in enumerate(num_captions) for j in range(n)]
    order = rng.permutation(len(pairs))
    return [pairs[k] for k in order]


def forward_loss_sum(model, batch: TextBatch, image_embeds: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed token cross-entropy of one batch from vision features, and its number of target tokens.

    Q-Former + projection + LM via HF's own merging code; the loss is summed here (in fp32) so the
    loop can divide by the tokens of the whole optimizer step across accumulation and processes:
    then 2 processes x batch 4 equal 1 process x batch 8, and accumulation equals a larger batch.
    """
    from transformers.models.blip_2.modeling_blip_2 import BaseModelOutputWithVisionQformerOutputs

    features = query_features(model, image_embeds)
    kwargs: dict[str, Any] = {
        "pixel_values": None,
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "mm_encoder_outputs": {"image": BaseModelOutputWithVisionQformerOutputs(pooler_output=features)},
    }
    labels = batch.labels
    if batch.decoder_attention_mask is not None:  # encoder-decoder: labels build the decoder inputs
        kwargs["labels"] = labels
        kwargs["decoder_attention_mask"] = batch.decoder_attention_mask
        logits = model(**kwargs).logits.float()
        logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    else:  # decoder-only: position t predicts token t + 1; logits only there (23 % of a demo step)
        keep, labels = next_token_targets(labels)
        logits = model(**kwargs, logits_to_keep=keep.to(batch.input_ids.device)).logits.float()
    loss = torch.nn.functional.cross_entropy(logits, labels.to(logits.device), ignore_index=-100, reduction="sum")
    return loss, int((labels != -100).sum())


def forward_loss(model, batch: TextBatch, image_embeds: torch.Tensor) -> torch.Tensor:
    """Mean token loss of one batch (what HF's `labels=` loss computes)."""
    total, count = forward_loss_sum(model, batch, image_embeds)
    return total / max(1, count)


def _augment(seed: int, epoch: int, index: int):
    """A seeded random crop (90-100 %) per sample: stateless, so resume replays it exactly."""

    def transform(img):
        rng = random.Random(f"{seed}-{epoch}-{index}")
        w, h = img.size
        scale = rng.uniform(0.9, 1.0)
        cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return img.crop((x, y, x + cw, y + ch))

    return transform


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


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    ckpt_dir = run_dir / "train" / "checkpoints"
    if not resume and complete_checkpoints(ckpt_dir):
        raise UserError(
            f"{run_dir}: this run already has checkpoints; pass --resume to continue it, or choose another "
            "run name (--set name=...) to start over"
        )


def train(cfg: RunConfig, resume: bool = False, progress: bool = True, dataset=None) -> TrainResult:
    """Fine-tune LoRA adapters as `cfg` says; write the run directory; return a summary."""
    from accelerate.utils import set_seed

    from captune.data import load_dataset_from_config
    from captune.data.selection import plan_selection
    from captune.model.adapters import adapter_record, save_adapter
    from captune.model.device import make_accelerator, model_device, resolve_device
    from captune.model.load import load_blip2
    from captune.model.lora import apply_lora

    refuse_unsupported_launch()  # before the Accelerator, which would fail on them less clearly
    t_start = time.perf_counter()
    tc = cfg.train
    run_dir = cfg.run_dir
    check_precision(cfg, family_hint(cfg))
    _check_run_dir(run_dir, resume)
    accelerator = make_accelerator(cfg.model.device, PRECISION[tc.precision])
    device = resolve_device(cfg.model.device, accelerator)
    refuse_unsupported_launch(accelerator.distributed_type)
    world, rank = accelerator.num_processes, accelerator.process_index
    if tc.batch_size % world:
        raise ConfigError(f"config key 'train.batch_size': {tc.batch_size} is not divisible by {world} processes")
    if tc.augment and tc.feature_cache in ("memory", "disk"):
        raise ConfigError("config key 'train.feature_cache': augmentation changes the images every epoch; "
                          "set train.feature_cache=auto or off")
    train_vision = cfg.lora.adapt_vision  # LoRA inside the ViT: its output changes every step, so never cached
    if train_vision and tc.feature_cache in ("memory", "disk"):
        raise ConfigError("config key 'train.feature_cache': lora.adapt_vision trains the vision encoder, so its "
                          "features change every step; set train.feature_cache=auto or off")
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, run_dir / "config.yaml")

    # Data
    dataset = dataset if dataset is not None else load_dataset_from_config(cfg.data)
    selection = plan_selection(cfg, dataset)  # refuses validation images that are also evaluated
    records = selection.train
    if not records:
        raise UserError(f"{cfg.data.path}: split {cfg.data.train_split!r} has no images; check data.train_split")

    # Model
    set_seed(tc.seed)
    loaded = load_blip2(cfg.model, device=device)
    check_precision(cfg, loaded.family)  # `family: auto` is known only now
    model, placement = apply_lora(loaded.model, cfg.lora, loaded.family)
    if tc.gradient_checkpointing:
        model.get_base_model().language_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
    params = summarize_parameters(model)
    adapter_meta = adapter_record(cfg, str(model_device(model)))
    collator = CaptionCollator(loaded.tokenizer, loaded.family, model.get_base_model().config.image_token_index,
                               model.get_base_model().config.num_query_tokens, tc.prompt, tc.max_caption_tokens)
    image_processor = loaded.processor.image_processor

    # Vision features: computed once (or verified readable when not cached)
    use_cache = tc.feature_cache != "off" and not tc.augment and not train_vision
    if train_vision and tc.feature_cache == "auto":
        accelerator.print("lora.adapt_vision: the vision encoder trains with its LoRA weights, so vision features are "
                          "computed every step (feature cache off)")
    cache_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.model.dtype]
    store = None
    if use_cache:
        vision = model.get_base_model().config.vision_config
        tokens = (vision.image_size // vision.patch_size) ** 2 + 1
        estimate = len(records) * tokens * vision.hidden_size * torch.finfo(cache_dtype).bits // 8
        on_disk = tc.feature_cache == "disk" or (tc.feature_cache == "auto" and estimate > MEMORY_CACHE_LIMIT)
        directory = tc.feature_directory() if on_disk else None
        store = store_for(model, cfg.model.name_or_path, cfg.model.revision, image_processor, directory, cache_dtype)
    keys, usable, skipped = _prepare_images(records, model, image_processor, store, cfg, accelerator, progress)
    records = [records[i] for i in usable]
    keys = [keys[i] for i in usable]
    if not records:
        raise UserError(f"{cfg.data.path}: no readable training images; run `captune data check` on it")

    val_records: list = []
    val_keys: list[str] = []
    if tc.validate_every:
        val_all = selection.val
        vk, vu, _ = _prepare_images(val_all, model, image_processor, store, cfg, accelerator)
        val_records, val_keys = [val_all[i] for i in vu], [vk[i] for i in vu]

    num_captions = [len(r.refs) for r in records]
    pairs_per_epoch = sum(num_captions) if tc.captions_per_image == "all" else sum(1 for n in num_captions if n)
    if pairs_per_epoch < tc.batch_size * tc.grad_accum:
        raise ConfigError(
            f"config key 'train.batch_size': one step needs {tc.batch_size * tc.grad_accum} captions "
            f"(batch_size x grad_accum) but {cfg.data.path} has {pairs_per_epoch} usable training captions; "
            "lower train.batch_size or add data"
        )
    steps_per_epoch = max(1, pairs_per_epoch // (tc.batch_size * tc.grad_accum))
    total_steps = tc.max_steps or max(1, math.ceil(tc.epochs * steps_per_epoch))

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tc.schedule, tc.warmup_steps, total_steps))
    model, optimizer = accelerator.prepare(model, optimizer)
    peft_model = accelerator.unwrap_model(model)
    scaler = getattr(accelerator, "scaler", None)

    ckpt_dir = run_dir / "train" / "checkpoints"
    loop = {"step": 0, "epoch": 0, "position": 0, "bad_steps": 0, "consecutive_bad": 0, "samples": 0,
            "checkpoints_written": 0, "train_seconds": 0.0, "best_score": None, "best_step": None,
            "since_best": 0, "stopped_early": False}
    if resume:
        found = complete_checkpoints(ckpt_dir)
        if found:
            loop = load_checkpoint(found[-1][1], peft_model, optimizer, scheduler, scaler)
            accelerator.print(f"resumed from {found[-1][1]} (step {loop['step']})")
        else:
            accelerator.print(f"no complete checkpoint under {ckpt_dir}; starting from step 0")

    logger = None
    if accelerator.is_main_process:
        tb = run_dir / "train" / "tb" if tc.tensorboard else None
        logger = Logger(run_dir / "train" / "log.jsonl", loop["step"], tb, say=accelerator.print)
        accelerator.print(
            f"trainable parameters: {params.trainable:,} of {params.total:,} ({params.trainable_share:.3%}); "
            f"LoRA on {len(placement.modules)} modules; frozen: vision encoder, LM, Q-Former base weights"
            + (" (the vision encoder's LoRA weights train: lora.adapt_vision)" if train_vision else "")
        )

    bar = Bar("train", total_steps, progress and accelerator.is_main_process, completed=loop["step"], elapsed=True)
    micro = tc.batch_size // world
    model.train()
    last_loss: float | None = None
    t_loop = time.perf_counter()
    try:
        pairs_of: dict[int, list[tuple[int, int]]] = {}  # one epoch's order, built once per epoch
        while loop["step"] < total_steps:
            if loop["epoch"] not in pairs_of:
                pairs_of = {loop["epoch"]: epoch_pairs(num_captions, loop["epoch"], tc.seed, tc.captions_per_image)}
            pairs = pairs_of[loop["epoch"]]
            per_step = tc.batch_size * tc.grad_accum
            if loop["position"] + per_step > len(pairs):
                loop["epoch"] += 1
                loop["position"] = 0
                continue
            t0 = time.perf_counter()
            step_pairs = pairs[loop["position"]: loop["position"] + per_step]
            step_loss = 0.0
            finite = True
            chunks = [step_pairs[a * tc.batch_size:(a + 1) * tc.batch_size][rank * micro:(rank + 1) * micro]
                      for a in range(tc.grad_accum)]
            batches = [collator([records[i].refs[j] for i, j in chunk]) for chunk in chunks]
            step_tokens = torch.tensor(sum(int((b.labels != -100).sum()) for b in batches), dtype=torch.float64,
                                       device=accelerator.device)
            step_tokens = float(accelerator.reduce(step_tokens, reduction="sum")) if world > 1 else float(step_tokens)
            for a, (chunk, batch) in enumerate(zip(chunks, batches, strict=True)):
                batch = batch.to(accelerator.device)
                if store is not None:
                    embeds = store.get([keys[i] for i, _ in chunk]).to(accelerator.device)
                else:
                    transform = None
                    paths = [records[i].path for i, _ in chunk]
                    if tc.augment:
                        pix = torch.cat([pixel_values([records[i].path], image_processor,
                                                      _augment(tc.seed, loop["epoch"], i)) for i, _ in chunk])
                    else:
                        pix = pixel_values(paths, image_processor, transform)
                    embeds = encode_images(model, pix.to(accelerator.device), grad=train_vision)
                sync = a == tc.grad_accum - 1
                ctx = accelerator.no_sync(model) if not sync and world > 1 else _nullcontext()
                with ctx, accelerator.autocast():
                    loss_sum, _ = forward_loss_sum(model, batch, embeds)
                    if nonfinite_loss(loop["step"] + 1):
                        loss_sum = loss_sum * float("inf")
                ok = torch.isfinite(loss_sum.detach()).float()
                if world > 1:  # every process must skip together, or DDP waits forever
                    ok = accelerator.reduce(ok, reduction="sum") / world
                if float(ok) < 1.0:
                    finite = False
                    break
                # DDP averages gradients over processes, hence `* world`: the step's loss is the token mean.
                accelerator.backward(loss_sum * world / step_tokens)
                step_loss += float(loss_sum.detach()) / step_tokens
            loop["position"] += per_step
            if finite and world > 1:
                step_loss = float(accelerator.reduce(torch.tensor(step_loss, device=accelerator.device), "sum"))
            skip_reason = None if finite else "non-finite loss"
            grad_norm = None
            if skip_reason is None:
                # The norm is needed even without clipping: bf16/fp32 have no scaler, and a finite loss with
                # inf gradients would pass clipping (inf * 0 = NaN) and poison the adapter.
                grad_norm = accelerator.clip_grad_norm_(trainable, tc.max_grad_norm or math.inf)
                if grad_norm is not None and not math.isfinite(float(grad_norm)) and scaler is None:
                    skip_reason = "non-finite gradient norm"
            if skip_reason is None:
                optimizer.step()
                if accelerator.optimizer_step_was_skipped:  # fp16: the scaler found inf/NaN gradients
                    skip_reason = "non-finite fp16 gradients (the scaler lowered its scale)"
            if skip_reason is None:
                scheduler.step()
                loop["consecutive_bad"] = 0
                last_loss = step_loss
            else:
                loop["bad_steps"] += 1
                loop["consecutive_bad"] += 1
            optimizer.zero_grad(set_to_none=True)
            loop["step"] += 1
            loop["samples"] += per_step
            dt = time.perf_counter() - t0
            if logger is not None:
                record = {"step": loop["step"], "epoch": loop["epoch"], "lr": scheduler.get_last_lr()[0],
                          "samples_per_s": per_step / dt if dt > 0 else None, "step_s": dt}
                if finite:
                    record["loss"] = step_loss
                if skip_reason is None and grad_norm is not None:
                    record["grad_norm"] = float(grad_norm)
                if skip_reason is not None:
                    record["skipped"] = skip_reason
                logger.write(record)
            lr, sps = scheduler.get_last_lr()[0], per_step / dt if dt > 0 else 0.0
            bar.update(loop["step"], f"loss {last_loss:.4f} lr {lr:.2e} {sps:.1f} samples/s"
                       if last_loss is not None else f"lr {lr:.2e}")
            if loop["consecutive_bad"] >= tc.max_bad_steps:
                raise TrainingError(
                    f"{run_dir}: the loss or gradients were non-finite for {loop['consecutive_bad']} steps in a row "
                    f"(step {loop['step']}); lower train.lr or use train.precision=bf16/fp32. The last good "
                    f"checkpoint is intact under {ckpt_dir}"
                )
            maybe_kill("after-step", loop["step"])
            if tc.validate_every and (loop["step"] % tc.validate_every == 0 or loop["step"] == total_steps):
                from captune.generate.captioner import Captioner

                captioner = Captioner(peft_model, loaded.processor, loaded.family)
                val = validate(peft_model, captioner, collator, val_records, val_keys, store, image_processor, cfg,
                               accelerator.device)
                improved = loop["best_score"] is None or val["val_score"] > loop["best_score"]
                if improved:
                    loop.update(best_score=val["val_score"], best_step=loop["step"], since_best=0)
                    if accelerator.is_main_process:
                        save_adapter(peft_model, run_dir / "train" / "best", adapter_meta)
                        atomic_write_json(run_dir / "train" / "best.json", {"step": loop["step"], **val})
                else:
                    loop["since_best"] += 1
                if logger is not None:
                    logger.write({"step": loop["step"], **val, "best": improved})
                if tc.early_stopping_patience and loop["since_best"] >= tc.early_stopping_patience:
                    loop["stopped_early"] = True
                    total_steps = loop["step"]
            if loop["step"] % tc.checkpoint_every == 0 or loop["step"] == total_steps:
                loop["train_seconds"] += time.perf_counter() - t_loop
                t_loop = time.perf_counter()
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    loop["checkpoints_written"] += 1
                    save_checkpoint(ckpt_dir, loop["step"], peft_model, optimizer, scheduler, scaler, dict(loop),
                                    loop["checkpoints_written"])
                    prune_checkpoints(ckpt_dir, tc.keep_checkpoints)
                accelerator.wait_for_everyone()
                maybe_kill("after-checkpoint", loop["step"])
    finally:
        bar.close()
        if logger is not None:
            logger.close()

    loop["train_seconds"] += time.perf_counter() - t_loop
    summary: dict[str, Any] = {}
    if accelerator.is_main_process:
        best = run_dir / "train" / "best"
        if tc.validate_every and (best / "adapter_model.safetensors").is_file():
            # LAVIS's rule: the adapter evaluated is the one with the best validation CIDEr + BLEU-4.
            from captune.io import atomic_directory

            with atomic_directory(run_dir / "adapter") as tmp:
                for f in best.iterdir():
                    (tmp / f.name).write_bytes(f.read_bytes())
        else:
            save_adapter(peft_model, run_dir / "adapter", adapter_meta)
        summary = {
            "steps": loop["step"],
            "epochs_started": loop["epoch"] + 1,
            "samples": loop["samples"],
            "bad_steps": loop["bad_steps"],
            "final_loss": last_loss,
            "best_step": loop["best_step"],
            "best_val_score": loop["best_score"],
            "stopped_early": loop["stopped_early"],
            "adapter_is": "best validation CIDEr+BLEU-4" if loop["best_step"] else "last step",
            "train_seconds": loop["train_seconds"],
            "wall_seconds": time.perf_counter() - t_start,
            "samples_per_s": loop["samples"] / loop["train_seconds"] if loop["train_seconds"] else None,
            "processes": world,
            "device": adapter_meta["trained_on"],  # where the weights were, not just what was asked
            "feature_cache": "off" if store is None else ("disk" if store.directory else "memory"),
            "train_images": len(records),
            "selection": selection.to_dict(),
            "skipped_images": skipped,
            "parameters": {"total": params.total, "trainable": params.trainable,
                           "trainable_share": params.trainable_share, "per_component": params.per_component},
            "lora_modules": placement.modules,
            "family": loaded.family,
            "config": config_to_dict(cfg),
            "environment": environment_info(),
        }
        atomic_write_json(run_dir / "train" / "summary.json", summary)
    accelerator.wait_for_everyone()
    return TrainResult(run_dir, loop["step"], last_loss, loop["bad_steps"], summary)


def validate(model, captioner, collator, records, keys, store, image_processor, cfg: RunConfig, device) -> dict:
    """Validation loss on the val images, then their greedy captions' BLEU-4 + CIDEr (grid/validate.py)."""
    from captune.grid.validate import validation_scores

    model.eval()
    loss = [0.0, 0]  # summed token loss, target tokens
    bs = cfg.generate.batch_size

    def batches():  # each batch's vision features, once its loss is added
        for start in range(0, len(records), bs):
            chunk = records[start:start + bs]
            if store is not None:
                embeds = store.get(keys[start:start + bs]).to(device)
            else:
                embeds = encode_images(model, pixel_values([r.path for r in chunk], image_processor).to(device))
            for k in range(max(len(r.refs) for r in chunk)):
                rows = [(i, r.refs[k]) for i, r in enumerate(chunk) if k < len(r.refs)]
                batch = collator([c for _, c in rows]).to(device)
                loss_sum, n = forward_loss_sum(model, batch, embeds[[i for i, _ in rows]])
                loss[0] += float(loss_sum)
                loss[1] += n
            yield embeds

    with torch.no_grad():
        scores = validation_scores(captioner, records, batches(), cfg.train.prompt, cfg.generate.max_new_tokens)
    model.train()
    return {"val_loss": loss[0] / max(1, loss[1]), **scores}


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _prepare_images(records, model, image_processor, store, cfg: RunConfig, accelerator, progress: bool = False):
    """Cache vision features (or just check readability); apply `data.on_bad_image` per image.

    With a feature store each file is decoded once: the decode that feeds the vision tower is the
    readability check."""
    from captune.data import open_image
    from captune.errors import DataError

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
        missing = sum(1 for i in readable if keys[i] not in store)
        if missing:
            accelerator.print(f"caching vision features for {missing} images ...")
        dev = accelerator.device
        with Bar("vision features", missing, progress and accelerator.is_main_process) as bar:
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
