"""Pretraining the demo's base (base.py) with the training loop's parts: `CaptionCollator` batches,
`next_token_targets`, train()'s `lr_lambda` schedule; only what BLIP-2's own pretraining adds (cell
supervision of the ViT and Q-Former, a frozen Q-Former's tokens computed once) is here.

Stage 1 - learning to see (BLIP-2's frozen ViT + Q-Former representation stage, in miniature).
  The vision tower and the Q-Former are trained together to classify every grid cell's colour,
  shape and size (or "empty") from the ground truth in `synth_objects.json`: the ViT from its patch
  token (patch = cell), the Q-Former from its query token of the same index (one query per cell).
  Both are frozen afterwards. A base whose vision never learned shapes leaves LoRA nothing to ground.

Stage 2 - the generic captioner (BLIP-2's LM stage). The language projection and the OPT LM are
  trained (full parameters), always on the right image, on a mix of coarse captions ("a picture
  with two shapes": grounded, but generic; half the rows) and the benchmark's fine captions. Like a
  web-trained captioner, the base *can* describe a scene in detail, but the generic caption is its
  single most likely one, while the fine captions spread over five phrasings and every object
  order: greedy and beam search write the coarse caption for nearly every image (mode collapse),
  and sampling wanders between generic and fine phrasings.

The LoRA recipe then does what it does on real BLIP-2: it moves a frozen model that already sees
and can say the right things to the domain's way of captioning. (Earlier designs that paired the fine
captions with shuffled images left the LM unable to say what it saw; LoRA on < 5 % of the
parameters then reached only ~0.2-0.8 (colour, shape) precision after 1,000 steps.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from captune.demo.recipe import DemoSettings
from captune.train.batches import CaptionCollator, TextBatch, next_token_targets


def cell_targets(objects, grid: int) -> list[tuple[int, int, int]]:
    """Per cell (row-major, = ViT patch order): (colour, shape, size) class ids, 0 meaning empty."""
    from captune.demo.synth import COLOURS, SHAPES, SIZES

    colours, shapes = list(COLOURS), list(SHAPES)
    cells = [(0, 0, 0)] * (grid * grid)
    for o in objects:
        cells[o.row * grid + o.col] = (colours.index(o.colour) + 1, shapes.index(o.shape) + 1,
                                       SIZES.index(o.size) + 1)
    return cells


class CellHeads(nn.Module):
    """Per-token classifiers of a cell's colour, shape and size (class 0 = empty cell)."""

    def __init__(self, dim: int) -> None:
        from captune.demo.synth import COLOURS, SHAPES, SIZES

        super().__init__()
        self.colour = nn.Linear(dim, len(COLOURS) + 1)
        self.shape = nn.Linear(dim, len(SHAPES) + 1)
        self.size = nn.Linear(dim, len(SIZES) + 1)

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed mean cross-entropies, and per-attribute accuracy (3,)."""
        total = tokens.new_zeros(())
        acc = []
        for k, head in enumerate((self.colour, self.shape, self.size)):
            logits = head(tokens)
            total = total + nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                        targets[..., k].reshape(-1))
            acc.append((logits.argmax(-1) == targets[..., k]).float().mean())
        return total, torch.stack(acc).detach()


def qformer_tokens(blip, image_embeds: torch.Tensor) -> torch.Tensor:
    """Q-Former output (before the language projection), as `query_features` computes it."""
    mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long)
    queries = blip.query_tokens.expand(image_embeds.shape[0], -1, -1)
    return blip.qformer(query_embeds=queries, encoder_hidden_states=image_embeds, encoder_attention_mask=mask,
                        return_dict=True).last_hidden_state


# ----------------------------------------------------------------------------- stage 1


def _adamw(params: list[torch.Tensor], lr: float, steps: int, loss_fn: Callable[[int], torch.Tensor]) -> float | None:
    """AdamW over `params` with train()'s warmup (steps / 20) + cosine schedule; `loss_fn(step)` returns
    the loss. Returns the smoothed final loss."""
    from captune.train.steps import lr_lambda

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = lr_lambda("cosine", max(1, steps // 20), steps)
    smooth = None
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * schedule(step)
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        smooth = float(loss.detach()) if smooth is None else 0.95 * smooth + 0.05 * float(loss.detach())
    return smooth


@torch.no_grad()
def _object_accuracy(heads: CellHeads, tokens: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Accuracy on the cells that hold a shape (most cells are empty, which would flatter the numbers)."""
    occupied = targets[..., 0] > 0
    return {name: round(float((head(tokens).argmax(-1) == targets[..., k])[occupied].float().mean()), 4)
            for k, (name, head) in enumerate((("colour", heads.colour), ("shape", heads.shape),
                                              ("size", heads.size)))}


def pretrain_vision(blip, pixels: torch.Tensor, targets: torch.Tensor,
                    settings: DemoSettings) -> tuple[dict[str, Any], torch.Tensor]:
    """Stage 1: the ViT's patch token i, then the Q-Former's query token i, classify cell i.

    Two phases: the ViT alone (`vision_steps`), then the Q-Former on the frozen ViT's features,
    computed once (`qformer_steps`, about 3x cheaper per step). Returns object-cell accuracies
    measured on the last 512 training images after training, and those features (stage 2 reuses them:
    the ViT stays frozen from here on).
    """
    s = settings
    if s.num_query_tokens != s.grid * s.grid:
        raise ValueError(f"num_query_tokens ({s.num_query_tokens}) must equal the number of cells ({s.grid ** 2})")
    torch.manual_seed(s.seed + 11)
    vis_heads, q_heads = CellHeads(s.hidden), CellHeads(s.hidden)
    vm = blip.vision_model
    gen = torch.Generator().manual_seed(s.seed + 12)
    with torch.no_grad():
        # Patch embedding at std 0.2 (not 0.02): small-shape differences of a few pixels reach the ViT's
        # MLPs, and shapes are learned in 200 steps instead of 500. Position embeddings on the patch
        # embedding's scale: the Q-Former's query i must find patch i by position.
        vm.embeddings.patch_embedding.weight.normal_(0, s.patch_init_std, generator=gen)
        vm.embeddings.position_embedding.normal_(0, s.position_std, generator=gen)
    n = pixels.shape[0]
    blip.train()

    # Each patch token also names its own cell: an explicit position code for the Q-Former to address.
    where = nn.Linear(s.hidden, s.num_query_tokens)
    cells = torch.arange(s.num_query_tokens)
    vision = [*vm.parameters(), *vis_heads.parameters(), *where.parameters()]
    for p in vision:
        p.requires_grad_(True)

    def vision_step(step: int) -> torch.Tensor:
        idx = torch.randint(n, (s.vision_batch,), generator=gen)
        embeds = vm(pixel_values=pixels[idx], return_dict=True).last_hidden_state
        position = nn.functional.cross_entropy(where(embeds[:, 1:]).reshape(-1, len(cells)),
                                               cells.repeat(len(idx)))
        return vis_heads.loss(embeds[:, 1:], targets[idx])[0] + s.position_weight * position

    _adamw(vision, s.vision_lr, s.vision_steps, vision_step)
    for p in vision:
        p.requires_grad_(False)
    vm.eval()
    embeds = vision_features(blip, pixels)

    qformer = [*blip.qformer.parameters(), blip.query_tokens, *q_heads.parameters()]
    for p in qformer:
        p.requires_grad_(True)

    def qformer_step(step: int) -> torch.Tensor:
        idx = torch.randint(n, (s.qformer_batch,), generator=gen)
        batch = embeds[idx]
        out = blip.qformer(query_embeds=blip.query_tokens.expand(batch.shape[0], -1, -1),
                           encoder_hidden_states=batch, encoder_attention_mask=torch.ones(batch.shape[:-1],
                                                                                         dtype=torch.long),
                           output_attentions=True, return_dict=True)
        loss = q_heads.loss(out.last_hidden_state, targets[idx])[0]
        # Query i attends to patch i (= cell i; key 0 is the CLS token): supervising the cross-attention
        # skips the hundreds of steps a Q-Former otherwise spends finding its cell, and keeps each
        # output token about one cell only (what the LM needs to bind a colour to its shape).
        attention = torch.stack([-(a[:, :, cells, cells + 1] + 1e-6).log().mean() for a in out.cross_attentions])
        return loss + s.attention_weight * attention.mean()

    _adamw(qformer, s.qformer_lr, s.qformer_steps, qformer_step)
    for p in qformer:
        p.requires_grad_(False)
    blip.eval()
    held = slice(max(0, n - 512), n)
    stats = {"vision_object_accuracy": _object_accuracy(vis_heads, embeds[held, 1:], targets[held]),
             "qformer_object_accuracy": _object_accuracy(q_heads, qformer_tokens(blip, embeds[held]), targets[held])}
    return stats, embeds


# ----------------------------------------------------------------------------- stage 2


def lm_loss(blip, image_tokens: torch.Tensor, batch: TextBatch) -> torch.Tensor:
    """Mean token loss of `[image] * Q + BOS + caption + EOS` (a `CaptionCollator` batch without image
    tokens), as Blip2 merges it (image embeds first), from Q-Former tokens computed once: the Q-Former
    is frozen in stage 2, so `forward_loss`'s Q-Former forward per step would only cost time."""
    image = blip.language_projection(image_tokens)
    text = blip.language_model.get_input_embeddings()(batch.input_ids)
    embeds = torch.cat([image, text], dim=1)
    full_mask = torch.cat([torch.ones(image.shape[:2], dtype=torch.long), batch.attention_mask], dim=1)
    keep, targets = next_token_targets(batch.labels, prefix=image.shape[1])  # a third of the positions here
    logits = blip.language_model(inputs_embeds=embeds, attention_mask=full_mask, logits_to_keep=keep).logits
    return nn.functional.cross_entropy(logits, targets)


def caption_collator(tokenizer, coarse: list[list[str]], fine: list[list[str]]) -> CaptionCollator:
    """Stage 2's batches as LoRA training tokenises them (BOS + caption + EOS), every caption tokenised once."""
    collator = CaptionCollator(tokenizer, "opt", 0, 0, "", 40)
    collator.precompute([t for texts in (*coarse, *fine) for t in texts])
    return collator


def pretrain_language(blip, collator: CaptionCollator, image_tokens: torch.Tensor,
                      texts: tuple[list[list[str]], list[list[str]]], settings: DemoSettings) -> dict[str, Any]:
    """Stage 2: projection + LM on coarse (`coarse_fraction` of the rows) and fine captions of image i,
    shown with image i's Q-Former tokens. Returns the smoothed final loss."""
    s = settings
    coarse, fine = texts
    params = [*blip.language_model.parameters()]
    if s.lm_train_projection:
        params += list(blip.language_projection.parameters())
    for p in params:
        p.requires_grad_(True)
    rng = np.random.default_rng([s.seed, 21])
    n = image_tokens.shape[0]

    def mixed_batch(step: int) -> torch.Tensor:
        idx = rng.integers(n, size=s.lm_batch)
        task = rng.random(s.lm_batch)
        variant = rng.integers(1 << 30, size=s.lm_batch)
        pool = [coarse[i] if u < s.coarse_fraction else fine[i] for i, u in zip(idx, task, strict=True)]
        batch = collator([p[v % len(p)] for p, v in zip(pool, variant, strict=True)])
        return lm_loss(blip, image_tokens[torch.from_numpy(idx)], batch)

    blip.train()
    stats = {"lm_loss": _adamw(params, s.lm_lr, s.lm_steps, mixed_batch)}
    blip.eval()
    for p in params:
        p.requires_grad_(False)
    return stats


def vision_features(model, pixels: torch.Tensor) -> torch.Tensor:
    """The (frozen) ViT's features of `pixels` (`encode_images`), 500 images at a time."""
    from captune.model.features import encode_images

    with torch.no_grad():
        return torch.cat([encode_images(model, pixels[i:i + 500]) for i in range(0, pixels.shape[0], 500)])
