"""The LoRA training recipe: plain PyTorch on `accelerate` (one process or DDP; see train/distributed.py).

Kept visible instead of HF `Trainer` because the feature store, exact resume and the label rules
are ours; laid out like torchtune's recipe classes. Data order is a pure function of (seed, epoch),
so resuming needs only the position.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from captune.config import RunConfig, config_to_dict, dump_config
from captune.data import load_dataset_from_config
from captune.data.selection import plan_selection
from captune.env import environment_info
from captune.errors import ConfigError, UserError
from captune.faults import maybe_kill, nonfinite_loss
from captune.io import atomic_directory, atomic_write_json
from captune.model.adapters import adapter_record, save_adapter
from captune.model.features import encode_images, pixel_values
from captune.model.lora import summarize_parameters
from captune.progress import Bar
from captune.train import checkpoint
from captune.train.batches import CaptionCollator
from captune.train.distributed import refuse_unsupported_launch
from captune.train.setup import (
    Logger,
    check_config,
    check_enough_captions,
    check_precision,
    feature_store,
    prepare_images,
)
from captune.train.steps import augment, epoch_pairs, forward_loss_sum, lr_lambda, validation

PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


class TrainingError(UserError):
    """Training cannot go on (e.g. the loss stays non-finite); the last good checkpoint is intact."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_loss: float | None
    bad_steps: int
    summary: dict[str, Any] = field(default_factory=dict)


def train(cfg: RunConfig, resume: bool = False, progress: bool = True, dataset=None, bases=None) -> TrainResult:
    """Fine-tune LoRA adapters as `cfg` says; write the run directory; return a summary. `bases`: a
    `model.load.BaseModels` that lends the base model instead of a fresh load (handed back without LoRA)."""
    recipe = LoRARecipe(cfg, progress)
    try:
        recipe.setup(resume, dataset, bases)
        recipe.fit()
        return recipe.finish()
    finally:
        recipe.give_back()


class LoRARecipe:
    """One training run. `loop` is the position and counters a checkpoint stores; the rest is rebuilt."""

    def __init__(self, cfg: RunConfig, progress: bool = True) -> None:
        refuse_unsupported_launch()  # before the Accelerator, which would fail on them less clearly
        self.t_start = time.perf_counter()
        self.cfg, self.tc, self.run_dir, self.progress = cfg, cfg.train, cfg.run_dir, progress
        self.ckpt_dir = cfg.run_dir / "train" / "checkpoints"
        self.loop: dict[str, Any] = {
            "step": 0, "epoch": 0, "position": 0, "bad_steps": 0, "consecutive_bad": 0, "samples": 0,
            "checkpoints_written": 0, "train_seconds": 0.0, "best_score": None, "best_step": None,
            "since_best": 0, "stopped_early": False}
        self.last_loss: float | None = None
        self.logger: Logger | None = None
        self.lent = False  # the base model is a caller's (see `train`), handed back by `give_back`

    def setup(self, resume: bool = False, dataset=None, bases=None) -> None:
        """Accelerator, data selection, model + LoRA, feature store, optimizer/scheduler, resume, log."""
        self._setup_accelerator(resume)
        dataset = dataset if dataset is not None else load_dataset_from_config(self.cfg.data)
        self.selection = plan_selection(self.cfg, dataset)  # refuses validation images that are also evaluated
        if not self.selection.train:
            raise UserError(f"{self.cfg.data.path}: split {self.cfg.data.train_split!r} has no images; "
                            "check data.train_split")
        self._setup_model(bases)
        self._setup_images()
        self._setup_optimizer()
        if resume:
            self.resume()
        if self.accelerator.is_main_process:
            tb = self.run_dir / "train" / "tb" if self.tc.tensorboard else None
            self.logger = Logger(self.run_dir / "train" / "log.jsonl", self.loop["step"], tb,
                                 say=self.accelerator.print)
            p = self.params
            self.accelerator.print(
                f"trainable parameters: {p.trainable:,} of {p.total:,} ({p.trainable_share:.3%}); "
                f"LoRA on {len(self.placement.modules)} modules; frozen: vision encoder, LM, Q-Former base weights"
                + (" (the vision encoder's LoRA weights train: lora.adapt_vision)" if self.cfg.lora.adapt_vision
                   else ""))

    def _setup_accelerator(self, resume: bool) -> None:
        from captune.model.device import make_accelerator, resolve_device  # looked up per run: tests spy on them

        cfg, tc = self.cfg, self.tc
        check_config(cfg, resume)
        self.accelerator = make_accelerator(cfg.model.device, PRECISION[tc.precision])
        self.device = resolve_device(cfg.model.device, self.accelerator)
        refuse_unsupported_launch(self.accelerator.distributed_type)
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        if tc.batch_size % self.world:
            raise ConfigError(f"config key 'train.batch_size': {tc.batch_size} is not divisible by {self.world} "
                              "processes")
        if self.accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, self.run_dir / "config.yaml")

    def _setup_model(self, bases=None) -> None:
        from accelerate.utils import set_seed

        from captune.model.device import model_device
        from captune.model.load import load_blip2
        from captune.model.lora import apply_lora, set_checkpointing

        cfg, tc = self.cfg, self.tc
        # No other thread builds a model meanwhile: captune.overlap loads the grid's model before training starts.
        self.loaded = bases.get(cfg.model, self.device) if bases is not None else load_blip2(cfg.model, self.device)
        check_precision(cfg, self.loaded.family)  # `family: auto` is known only now
        set_seed(tc.seed)  # after loading: a lent base and a fresh load start the same adapter
        self.lent = bases is not None
        model, self.placement = apply_lora(self.loaded.model, cfg.lora, self.loaded.family)
        self.peft_model = model  # the same object after `accelerator.prepare` unwraps it
        if tc.gradient_checkpointing:
            set_checkpointing(model.get_base_model().language_model, True)
        self.model, self.params = model, summarize_parameters(model)
        self.adapter_meta = adapter_record(cfg, str(model_device(model)))
        base = model.get_base_model().config
        self.collator = CaptionCollator(self.loaded.tokenizer, self.loaded.family, base.image_token_index,
                                        base.num_query_tokens, tc.prompt, tc.max_caption_tokens)
        self.image_processor = self.loaded.processor.image_processor

    def _setup_images(self) -> None:
        """Vision features computed once into the store (or the images verified readable when not cached)."""
        cfg, tc, acc, records = self.cfg, self.tc, self.accelerator, self.selection.train
        train_vision = cfg.lora.adapt_vision  # LoRA inside the ViT: its output changes every step, never cached
        if train_vision and tc.feature_cache == "auto":
            acc.print("lora.adapt_vision: the vision encoder trains with its LoRA weights, so vision features are "
                      "computed every step (feature cache off)")
        self.store = None
        if tc.feature_cache != "off" and not tc.augment and not train_vision:
            self.store = feature_store(cfg, self.model, self.image_processor, len(records))
        keys, usable, self.skipped = prepare_images(records, self.model, self.image_processor, self.store, cfg, acc,
                                                    self.progress)
        self.records, self.keys = [records[i] for i in usable], [keys[i] for i in usable]
        if not self.records:
            raise UserError(f"{cfg.data.path}: no readable training images; run `captune data check` on it")
        self.val_records, self.val_keys = [], []
        if tc.validate_every:
            val_all = self.selection.val
            vk, vu, _ = prepare_images(val_all, self.model, self.image_processor, self.store, cfg, acc)
            self.val_records, self.val_keys = [val_all[i] for i in vu], [vk[i] for i in vu]

    def _setup_optimizer(self) -> None:
        cfg, tc = self.cfg, self.tc
        self.num_captions = [len(r.refs) for r in self.records]
        per_epoch = check_enough_captions(cfg, self.records, f"{cfg.data.path} (its readable training images)")
        steps_per_epoch = max(1, per_epoch // (tc.batch_size * tc.grad_accum))
        self.total_steps = tc.max_steps or max(1, math.ceil(tc.epochs * steps_per_epoch))
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.trainable, lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.999))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(tc.schedule, tc.warmup_steps, self.total_steps))
        self.model, self.optimizer = self.accelerator.prepare(self.model, optimizer)
        self.scaler = getattr(self.accelerator, "scaler", None)

    def fit(self) -> None:
        """Steps until `total_steps` (or early stopping), validating and checkpointing on schedule."""
        tc, loop, per_step = self.tc, self.loop, self.tc.batch_size * self.tc.grad_accum
        bar = Bar("train", self.total_steps, self.progress and self.accelerator.is_main_process,
                  completed=loop["step"], elapsed=True)
        self.model.train()
        self.t_loop = time.perf_counter()
        try:
            pairs_of: dict[int, list[tuple[int, int]]] = {}  # one epoch's order, built once per epoch
            while loop["step"] < self.total_steps:
                if loop["epoch"] not in pairs_of:
                    pairs_of = {loop["epoch"]: epoch_pairs(self.num_captions, loop["epoch"], tc.seed,
                                                           tc.captions_per_image)}
                pairs = pairs_of[loop["epoch"]]
                if loop["position"] + per_step > len(pairs):
                    loop["epoch"] += 1
                    loop["position"] = 0
                    continue
                record = self.train_step(pairs[loop["position"]: loop["position"] + per_step])
                if self.logger is not None:
                    self.logger.write(record)
                lr, sps = record["lr"], record["samples_per_s"] or 0.0
                bar.update(loop["step"], f"loss {self.last_loss:.4f} lr {lr:.2e} {sps:.1f} samples/s"
                           if self.last_loss is not None else f"lr {lr:.2e}")
                if loop["consecutive_bad"] >= tc.max_bad_steps:
                    raise TrainingError(
                        f"{self.run_dir}: the loss or gradients were non-finite for {loop['consecutive_bad']} steps "
                        f"in a row (step {loop['step']}); lower train.lr or use train.precision=bf16/fp32. The last "
                        f"good checkpoint is intact under {self.ckpt_dir}"
                    )
                maybe_kill("after-step", loop["step"])
                if tc.validate_every and (loop["step"] % tc.validate_every == 0 or loop["step"] == self.total_steps):
                    self.validate()
                if loop["step"] % tc.checkpoint_every == 0 or loop["step"] == self.total_steps:
                    self.save_checkpoint()
        finally:
            bar.close()
            if self.logger is not None:
                self.logger.close()

    def train_step(self, step_pairs: list[tuple[int, int]]) -> dict[str, Any]:
        """One optimizer step over `step_pairs` (batch_size x grad_accum captions across all processes).

        A step with a non-finite loss or gradient is skipped whole. Returns the step's log record."""
        loop, t0 = self.loop, time.perf_counter()
        step_loss = self._backward(step_pairs)
        skip_reason, grad_norm = ("non-finite loss", None) if step_loss is None else self._optimizer_step()
        if skip_reason is None:
            self.scheduler.step()
            loop["consecutive_bad"] = 0
            self.last_loss = step_loss
        else:
            loop["bad_steps"] += 1
            loop["consecutive_bad"] += 1
        self.optimizer.zero_grad(set_to_none=True)
        loop["position"] += len(step_pairs)
        loop["step"] += 1
        loop["samples"] += len(step_pairs)
        dt = time.perf_counter() - t0
        record = {"step": loop["step"], "epoch": loop["epoch"], "lr": self.scheduler.get_last_lr()[0],
                  "samples_per_s": len(step_pairs) / dt if dt > 0 else None, "step_s": dt}
        extra = {"loss": step_loss, "grad_norm": None if skip_reason or grad_norm is None else float(grad_norm),
                 "skipped": skip_reason}
        return record | {key: value for key, value in extra.items() if value is not None}

    def _backward(self, step_pairs: list[tuple[int, int]]) -> float | None:
        """Gradients of the step's token-mean loss over its micro-batches; None when a loss is non-finite."""
        tc, acc, world, rank = self.tc, self.accelerator, self.world, self.rank
        micro = tc.batch_size // world
        chunks = [step_pairs[a * tc.batch_size:(a + 1) * tc.batch_size][rank * micro:(rank + 1) * micro]
                  for a in range(tc.grad_accum)]
        batches = [self.collator([self.records[i].refs[j] for i, j in chunk]) for chunk in chunks]
        tokens = torch.tensor(sum(int((b.labels != -100).sum()) for b in batches), dtype=torch.float64,
                              device=acc.device)
        tokens = float(acc.reduce(tokens, reduction="sum")) if world > 1 else float(tokens)
        step_loss = 0.0
        for a, (chunk, batch) in enumerate(zip(chunks, batches, strict=True)):
            batch, embeds = batch.to(acc.device), self._vision_features(chunk)
            sync = a == tc.grad_accum - 1
            with acc.no_sync(self.model) if not sync and world > 1 else nullcontext(), acc.autocast():
                loss_sum, _ = forward_loss_sum(self.model, batch, embeds)
                if nonfinite_loss(self.loop["step"] + 1):
                    loss_sum = loss_sum * float("inf")
            ok = torch.isfinite(loss_sum.detach()).float()
            if world > 1:  # every process must skip together, or DDP waits forever
                ok = acc.reduce(ok, reduction="sum") / world
            if float(ok) < 1.0:
                return None
            # DDP averages gradients over processes, hence `* world`: the step's loss is the token mean.
            acc.backward(loss_sum * world / tokens)
            step_loss += float(loss_sum.detach()) / tokens
        if world > 1:
            step_loss = float(acc.reduce(torch.tensor(step_loss, device=acc.device), "sum"))
        return step_loss

    def _vision_features(self, chunk: list[tuple[int, int]]) -> torch.Tensor:
        """The chunk's ViT outputs: from the store, else encoded now (augmented crops when asked)."""
        dev, tc = self.accelerator.device, self.tc
        if self.store is not None:
            return self.store.get([self.keys[i] for i, _ in chunk]).to(dev)
        if tc.augment:
            pix = torch.cat([pixel_values([self.records[i].path], self.image_processor,
                                          augment(tc.seed, self.loop["epoch"], i)) for i, _ in chunk])
        else:
            pix = pixel_values([self.records[i].path for i, _ in chunk], self.image_processor)
        return encode_images(self.model, pix.to(dev), grad=self.cfg.lora.adapt_vision)

    def _optimizer_step(self) -> tuple[str | None, Any]:
        """Clip and step; returns (why the step was skipped or None, the gradient norm)."""
        # The norm is needed even without clipping: bf16/fp32 have no scaler, and a finite loss with
        # inf gradients would pass clipping (inf * 0 = NaN) and poison the adapter.
        grad_norm = self.accelerator.clip_grad_norm_(self.trainable, self.tc.max_grad_norm or math.inf)
        if grad_norm is not None and not math.isfinite(float(grad_norm)) and self.scaler is None:
            return "non-finite gradient norm", grad_norm
        self.optimizer.step()
        if self.accelerator.optimizer_step_was_skipped:  # fp16: the scaler found inf/NaN gradients
            return "non-finite fp16 gradients (the scaler lowered its scale)", grad_norm
        return None, grad_norm

    def validate(self) -> None:
        """Score the val images; keep the best adapter (CIDEr + BLEU-4); stop early when it stalls."""
        from captune.generate.captioner import Captioner

        loop, acc = self.loop, self.accelerator
        captioner = Captioner(self.peft_model, self.loaded.processor, self.loaded.family)
        val = validation(self.peft_model, captioner, self.collator, self.val_records, self.val_keys, self.store,
                         self.image_processor, self.cfg, acc.device)
        improved = loop["best_score"] is None or val["val_score"] > loop["best_score"]
        if improved:
            loop.update(best_score=val["val_score"], best_step=loop["step"], since_best=0)
            if acc.is_main_process:
                save_adapter(self.peft_model, self.run_dir / "train" / "best", self.adapter_meta)
                atomic_write_json(self.run_dir / "train" / "best.json", {"step": loop["step"], **val})
        else:
            loop["since_best"] += 1
        if self.logger is not None:
            self.logger.write({"step": loop["step"], **val, "best": improved})
        if self.tc.early_stopping_patience and loop["since_best"] >= self.tc.early_stopping_patience:
            loop["stopped_early"] = True
            self.total_steps = loop["step"]

    def save_checkpoint(self) -> None:
        """Process 0 writes step-N complete or not at all (train/checkpoint.py); the others wait."""
        loop, acc = self.loop, self.accelerator
        loop["train_seconds"] += time.perf_counter() - self.t_loop
        self.t_loop = time.perf_counter()
        acc.wait_for_everyone()
        if acc.is_main_process:
            loop["checkpoints_written"] += 1
            checkpoint.save_checkpoint(self.ckpt_dir, loop["step"], self.peft_model, self.optimizer, self.scheduler,
                                       self.scaler, dict(loop), loop["checkpoints_written"])
            checkpoint.prune_checkpoints(self.ckpt_dir, self.tc.keep_checkpoints)
        acc.wait_for_everyone()
        maybe_kill("after-checkpoint", loop["step"])

    def resume(self) -> None:
        """Load the newest complete checkpoint: weights, optimizer, scheduler, scaler, RNG and `loop`."""
        found = checkpoint.complete_checkpoints(self.ckpt_dir)
        if found:
            self.loop = checkpoint.load_checkpoint(found[-1][1], self.peft_model, self.optimizer, self.scheduler,
                                                   self.scaler)
            self.accelerator.print(f"resumed from {found[-1][1]} (step {self.loop['step']})")
        else:
            self.accelerator.print(f"no complete checkpoint under {self.ckpt_dir}; starting from step 0")

    def finish(self) -> TrainResult:
        """Write run/adapter (the best validated one, else the last step's) and train/summary.json."""
        loop, acc = self.loop, self.accelerator
        loop["train_seconds"] += time.perf_counter() - self.t_loop
        summary: dict[str, Any] = {}
        if acc.is_main_process:
            best = self.run_dir / "train" / "best"
            if self.tc.validate_every and (best / "adapter_model.safetensors").is_file():
                # LAVIS's rule: the adapter evaluated is the one with the best validation CIDEr + BLEU-4.
                with atomic_directory(self.run_dir / "adapter") as tmp:
                    for f in best.iterdir():
                        (tmp / f.name).write_bytes(f.read_bytes())
            else:
                save_adapter(self.peft_model, self.run_dir / "adapter", self.adapter_meta)
            summary = self.summary()
            atomic_write_json(self.run_dir / "train" / "summary.json", summary)
        acc.wait_for_everyone()
        return TrainResult(self.run_dir, loop["step"], self.last_loss, loop["bad_steps"], summary)

    def give_back(self) -> None:
        """A lent base model back as it came (a no-op for a model this run loaded itself)."""
        from captune.model.lora import take_off_lora

        if self.lent and hasattr(self, "peft_model"):
            take_off_lora(self.peft_model, self.tc.gradient_checkpointing)
        self.lent = False

    def summary(self) -> dict[str, Any]:
        """What train/summary.json records: counts, timings, where it ran, what trained."""
        loop, p, store = self.loop, self.params, self.store
        return {
            "steps": loop["step"], "epochs_started": loop["epoch"] + 1, "samples": loop["samples"],
            "bad_steps": loop["bad_steps"], "final_loss": self.last_loss, "best_step": loop["best_step"],
            "best_val_score": loop["best_score"], "stopped_early": loop["stopped_early"],
            "adapter_is": "best validation CIDEr+BLEU-4" if loop["best_step"] else "last step",
            "train_seconds": loop["train_seconds"], "wall_seconds": time.perf_counter() - self.t_start,
            "samples_per_s": loop["samples"] / loop["train_seconds"] if loop["train_seconds"] else None,
            "processes": self.world,
            "device": self.adapter_meta["trained_on"],  # where the weights were, not just what was asked
            "feature_cache": "off" if store is None else ("disk" if store.directory else "memory"),
            "train_images": len(self.records), "selection": self.selection.to_dict(), "skipped_images": self.skipped,
            "parameters": {"total": p.total, "trainable": p.trainable, "trainable_share": p.trainable_share,
                           "per_component": p.per_component},
            "lora_modules": self.placement.modules, "family": self.loaded.family, "config": config_to_dict(self.cfg),
            "environment": environment_info(),
        }
