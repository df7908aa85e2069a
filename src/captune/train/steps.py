"""What one training step computes: the data order, the loss, the learning-rate schedule, validation.

Pure functions of their inputs (data order and augmentation are functions of (seed, epoch)), so an
exact resume needs only the loop position; train/loop.py's recipe calls them.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch

from captune.config import RunConfig
from captune.model.features import encode_images, pixel_values, query_features
from captune.train.batches import TextBatch, next_token_targets


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


def augment(seed: int, epoch: int, index: int):
    """A seeded random crop (90-100 %) per sample: stateless, so resume replays it exactly."""

    def transform(img):
        rng = random.Random(f"{seed}-{epoch}-{index}")
        w, h = img.size
        scale = rng.uniform(0.9, 1.0)
        cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return img.crop((x, y, x + cw, y + ch))

    return transform


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


def validation(model, captioner, collator, records, keys, store, image_processor, cfg: RunConfig, device) -> dict:
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
