"""The demo's frozen *base*: a tiny BLIP-2 that sees the shapes but captions them generically.

Built in two stages on the synthetic benchmark's train split (never val/test), then cached in a
folder keyed by the settings that determine it, so a rerun loads it in a fraction of a second.

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

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from captune.demo.recipe import BASE_VERSION, SYNTH_VERSION, DemoSettings

Progress = Callable[[str], None]
META_FILE = "captune_demo_base.json"


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run torch with `n` threads (2-core machines slow ~100x when two busy processes each use 2)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _say(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text)


# ----------------------------------------------------------------------------- data


def synth_dir(settings: DemoSettings, cache_dir: str | os.PathLike[str]) -> Path:
    return Path(cache_dir) / f"synth-v{SYNTH_VERSION}-{settings.key('synth')}"


def ensure_synth(settings: DemoSettings, cache_dir: str | os.PathLike[str], progress: Progress | None = None) -> Path:
    """The benchmark for `settings` under `cache_dir` (generated once; ~6 s for 8,000 images)."""
    from captune.demo.synth import TRUTH_FILE, generate_synth

    out = synth_dir(settings, cache_dir)
    if (out / TRUTH_FILE).is_file():
        return out
    t0 = time.perf_counter()
    generate_synth(out, split_sizes=settings.split_sizes, seed=settings.data_seed, size=settings.image_size,
                   grid=settings.grid, max_objects=settings.max_objects)
    _say(progress, f"synthetic benchmark: {sum(settings.split_sizes.values())} images in "
                   f"{time.perf_counter() - t0:.1f} s")
    return out


def coarse_caption(objects, style: str, rng) -> str:
    """The generic caption a web-trained captioner would give: how many (and how big), never what.

    `count`: "a picture with two shapes". `phrasings`: the same in the frames a generic captioner
    uses, "a photo of two shapes" among them, so the prompts of the grid do not unlock the detailed
    mode. `sizes`: "a picture with a small shape and two large shapes" (size groups in random order).
    """
    from captune.demo.captions import NUMBER_NAMES

    def phrase(n: int, size: str | None) -> str:
        words = ([size] if size else []) + ["shape" if n == 1 else "shapes"]
        return f"{'a' if n == 1 else NUMBER_NAMES[n]} {' '.join(words)}"

    if style == "count":
        return f"a picture with {phrase(len(objects), None)}"
    if style == "phrasings":  # the generic caption in the words prompts start with, too
        frame = rng.choice(["a picture with {}", "a photo of {}", "an image of {}", "a photo with {}"])
        return frame.format(phrase(len(objects), None))
    sizes = [o.size for o in objects]
    groups = [(sizes.count(z), z) for z in dict.fromkeys(sizes)]
    rng.shuffle(groups)
    parts = [phrase(n, z) for n, z in groups]
    return "a picture with " + " and ".join(parts)


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


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def qformer_tokens(blip, image_embeds: torch.Tensor) -> torch.Tensor:
    """Q-Former output (before the language projection), as `query_features` computes it."""
    mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long)
    queries = blip.query_tokens.expand(image_embeds.shape[0], -1, -1)
    return blip.qformer(query_embeds=queries, encoder_hidden_states=image_embeds, encoder_attention_mask=mask,
                        return_dict=True).last_hidden_state


# ----------------------------------------------------------------------------- stage 1


def _train_phase(params, groups, steps: int, step_fn) -> None:
    """AdamW with warmup + cosine over `groups` [(params, lr)]; `step_fn(step)` returns the loss."""
    opt = torch.optim.AdamW([{"params": ps, "lr": lr, "base": lr} for ps, lr in groups], weight_decay=0.0)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = group["base"] * _cosine(step, steps, max(1, steps // 20))
        loss = step_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()


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

    _train_phase(vision, [(vision, s.vision_lr)], s.vision_steps, vision_step)
    for p in vision:
        p.requires_grad_(False)
    vm.eval()
    embeds = _vision_features(blip, pixels)

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

    _train_phase(qformer, [(qformer, s.qformer_lr)], s.qformer_steps, qformer_step)
    for p in qformer:
        p.requires_grad_(False)
    blip.eval()
    held = slice(max(0, n - 512), n)
    stats = {"vision_object_accuracy": _object_accuracy(vis_heads, embeds[held, 1:], targets[held]),
             "qformer_object_accuracy": _object_accuracy(q_heads, qformer_tokens(blip, embeds[held]), targets[held])}
    return stats, embeds


# ----------------------------------------------------------------------------- stage 2


Row = tuple[list[int], list[int]]
"""Token ids `BOS + context + target + EOS` and their labels (-100 where there is no loss)."""


def _batch_rows(rows: list[Row], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and labels."""
    width = max(len(r) for r, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (r, lab) in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
        labels[i, :len(r)] = torch.tensor(lab)
    return ids, mask, labels


def lm_loss(blip, image_tokens: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
            labels: torch.Tensor) -> torch.Tensor:
    """Mean token loss of `[image] * Q + BOS + caption + EOS`, as Blip2 merges it (image embeds first)."""
    from captune.train.batches import next_token_targets

    image = blip.language_projection(image_tokens)
    text = blip.language_model.get_input_embeddings()(ids)
    embeds = torch.cat([image, text], dim=1)
    full_mask = torch.cat([torch.ones(image.shape[:2], dtype=torch.long), mask], dim=1)
    keep, targets = next_token_targets(labels, prefix=image.shape[1])  # a third of the positions here
    logits = blip.language_model(inputs_embeds=embeds, attention_mask=full_mask, logits_to_keep=keep).logits
    return nn.functional.cross_entropy(logits, targets)


def caption_rows(tokenizer, coarse: list[list[str]], fine: list[list[str]]) -> tuple[list[list[Row]], list[list[Row]]]:
    """Stage 2's token rows: for each training image, its coarse variants and its fine captions."""
    from captune.train.batches import IGNORE, CaptionCollator

    collator = CaptionCollator(tokenizer, "opt", 0, 0, "", 40)  # BOS + caption + EOS, as LoRA training sees it
    collator.precompute([t for texts in (*coarse, *fine) for t in texts])

    def row(text: str) -> Row:
        ids = [tokenizer.bos_token_id, *collator.caption_ids(text)]
        return ids, [IGNORE, *ids[1:]]

    return [[row(t) for t in variants] for variants in coarse], [[row(t) for t in refs] for refs in fine]


def pretrain_language(blip, tokenizer, image_tokens: torch.Tensor, rows: tuple[list[list[Row]], list[list[Row]]],
                      settings: DemoSettings) -> dict[str, Any]:
    """Stage 2: projection + LM on coarse (`coarse_fraction` of the rows) and fine captions of image i
    (`caption_rows`), shown with image i's Q-Former tokens. Returns the smoothed final loss."""
    s = settings
    coarse_rows, fine_rows = rows
    params = [*blip.language_model.parameters()]
    if s.lm_train_projection:
        params += list(blip.language_projection.parameters())
    for p in params:
        p.requires_grad_(True)
    rng = np.random.default_rng([s.seed, 21])
    n = image_tokens.shape[0]

    def mixed_batch(size: int):
        idx = rng.integers(n, size=size)
        task = rng.random(size)
        variant = rng.integers(1 << 30, size=size)
        pool = [coarse_rows[i] if u < s.coarse_fraction else fine_rows[i] for i, u in zip(idx, task, strict=True)]
        return idx, [p[v % len(p)] for p, v in zip(pool, variant, strict=True)]

    blip.train()
    stats = {"lm_loss": _lm_phase(blip, tokenizer, image_tokens, params, mixed_batch, s.lm_steps, s.lm_lr,
                                  s.lm_batch)}
    blip.eval()
    for p in params:
        p.requires_grad_(False)
    return stats


def _lm_phase(blip, tokenizer, image_tokens, params, sample, steps: int, lr: float, batch: int) -> float | None:
    """`steps` AdamW steps (warmup + cosine) on batches from `sample(batch) -> (image indices, rows)`."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    smooth = None
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * _cosine(step, steps, max(1, steps // 20))
        idx, rows = sample(batch)
        ids, mask, labels = _batch_rows(rows, tokenizer.pad_token_id)
        loss = lm_loss(blip, image_tokens[torch.from_numpy(idx)], ids, mask, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        smooth = float(loss.detach()) if smooth is None else 0.95 * smooth + 0.05 * float(loss.detach())
    return smooth


# ----------------------------------------------------------------------------- build + cache


def base_dir(settings: DemoSettings, cache_dir: str | os.PathLike[str]) -> Path:
    return Path(cache_dir) / f"base-v{BASE_VERSION}-{settings.key('synth', 'base')}"


def tiny_spec(settings: DemoSettings):
    from captune.model.tiny import TinySpec

    s = settings
    return TinySpec(family="opt", image_size=s.image_size, patch_size=s.patch_size, vision_hidden=s.hidden,
                    vision_layers=s.vision_layers, vision_heads=s.heads, qformer_hidden=s.hidden,
                    qformer_layers=s.qformer_layers, qformer_heads=s.heads, num_query_tokens=s.num_query_tokens,
                    lm_hidden=s.hidden, lm_layers=s.lm_layers, lm_heads=s.heads, lm_ffn=s.lm_ffn,
                    vocab_size=s.vocab_size, seed=s.seed)


def build_base(settings: DemoSettings, cache_dir: str | os.PathLike[str], progress: Progress | None = None) -> Path:
    """The pretrained base for `settings` as a model folder (`from_pretrained` / `model.name_or_path`).

    Loaded from `cache_dir` when built before with the same settings; otherwise the benchmark is
    generated (if missing) and both stages run, on one torch thread. Returns the folder.
    """
    out = base_dir(settings, cache_dir)
    if (out / META_FILE).is_file() and (out / "config.json").is_file():
        return out
    with torch_threads(1):
        return _build(settings, Path(cache_dir), out, progress)


class Clock:
    """Wall and CPU seconds per named section (CPU time ~ wall time on an idle core: it shows the cost
    even when other processes share the machine)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = round(time.perf_counter() - wall, 2)
            self.cpu[name] = round(time.process_time() - cpu, 2)

    def record(self) -> dict[str, dict[str, float]]:
        return {"wall_s": dict(self.wall), "cpu_s": dict(self.cpu)}


def _build(settings: DemoSettings, cache_dir: Path, out: Path, progress: Progress | None) -> Path:
    from captune.data import load_dataset
    from captune.demo.synth import load_truth
    from captune.model.features import pixel_values
    from captune.model.tiny import build_tiny_blip2

    clock = Clock()
    total = time.perf_counter()
    with clock("synth"):
        data = ensure_synth(settings, cache_dir, progress)
    with clock("texts"):
        records = load_dataset(data, format="flickr8k").select("train")
        truth = load_truth(data)
        objects = [truth[Path(r.name).stem] for r in records]
        fine = [list(r.refs) for r in records]
        rng = random.Random(f"captune-demo-texts:{settings.seed}")
        coarse = [sorted({coarse_caption(o, settings.coarse_style, rng) for _ in range(4)}) for o in objects]
    with clock("tokenizer+model"):
        from captune.train.batches import target_caption

        texts = sorted({target_caption(c) for refs in fine for c in refs} | {c for v in coarse for c in v}
)
        spec = tiny_spec(settings)
        model, processor = build_tiny_blip2(spec, texts)
        model.set_attn_implementation("eager")
    # Work the training stages do not wait for runs on a side thread, on the other core while they train
    # (torch kernels and the Rust tokenizer release the GIL): the eval images, stage 2's token rows and,
    # once stage 1 has frozen the ViT, the eval images' features. The results are the same as in sequence.
    side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="captune-base-side")
    try:
        eval_records = load_dataset(data, format="flickr8k").select("eval")
        eval_pixels = side.submit(pixel_values, [r.path for r in eval_records], processor.image_processor)
        rows = side.submit(caption_rows, processor.tokenizer, coarse, fine)
        with clock("images"):
            pixels = pixel_values([r.path for r in records], processor.image_processor)
            targets = torch.tensor([cell_targets(o, settings.grid) for o in objects], dtype=torch.long)

        with clock("stage1"):
            stats, embeds = pretrain_vision(model, pixels, targets, settings)  # the frozen ViT's features
        _say(progress, f"base stage 1 (ViT + Q-Former see the cells): {clock.wall['stage1']:.1f} s, Q-Former "
                       f"object accuracy {stats['qformer_object_accuracy']}")
        eval_embeds = side.submit(lambda: _vision_features(model, eval_pixels.result()))  # queued after it

        with clock("stage2"):
            with torch.no_grad():
                tokens = torch.cat([qformer_tokens(model, embeds[i:i + 500]) for i in range(0, embeds.shape[0], 500)])
            stats.update(pretrain_language(model, processor.tokenizer, tokens, rows.result(), settings))
        losses = ", ".join(f"{k} {v:.3f}" for k, v in stats.items() if k.endswith("_loss") and v is not None)
        _say(progress, f"base stage 2 (the generic captioner): {clock.wall['stage2']:.1f} s, {losses}")
        model.eval()
        eval_embeds = eval_embeds.result()
    finally:
        side.shutdown(wait=True, cancel_futures=True)
    for p in model.parameters():
        p.requires_grad_(True)  # saved like any checkpoint; train() freezes what it should
    timings = clock.record()
    timings["total_s"] = round(time.perf_counter() - total, 2)
    meta = {"base_version": BASE_VERSION, "settings": asdict(settings), "timings": timings, "stats": stats}
    save_base(out, model, processor, spec, meta)
    # The frozen ViT's features of every image, where LoRA training and the grid look them up (a
    # feature_cache=disk store keyed by the saved base): neither decodes nor encodes an image again.
    cache_features(out, [r.path for r in (*records, *eval_records)], torch.cat([embeds, eval_embeds]),
                   feature_dir(cache_dir))
    return out


def _vision_features(model, pixels: torch.Tensor) -> torch.Tensor:
    """The (frozen) ViT's features of `pixels` (`encode_images`), 500 images at a time."""
    from captune.model.features import encode_images

    with torch.no_grad():
        return torch.cat([encode_images(model, pixels[i:i + 500]) for i in range(0, pixels.shape[0], 500)])


def feature_dir(cache_dir: str | os.PathLike[str]) -> Path:
    return Path(cache_dir) / "features"


def cache_features(base: Path, paths: list[Path], embeds: torch.Tensor, directory: Path) -> None:
    """Put the base's vision features into the disk store that `train`/`run_grid` open for `base`
    (namespace from the model as they load it, so the keys are the ones they compute)."""
    from captune.config import ModelConfig
    from captune.model.features import image_file_key, store_for
    from captune.model.load import load_blip2

    loaded = load_blip2(ModelConfig(name_or_path=str(base), dtype="fp32", local_files_only=True))
    store = store_for(loaded.model, str(base), None, loaded.processor.image_processor, directory, torch.float32)
    keys = [image_file_key(p) for p in paths]
    todo = [i for i, k in enumerate(keys) if k not in store]
    if todo:
        store.put([keys[i] for i in todo], embeds[todo])


def save_base(out: Path, model, processor, spec, meta: dict[str, Any]) -> None:
    """`save_pretrained` layout + eager attention recorded in config.json + the build record, atomically."""
    from transformers.utils import logging as hf_logging

    from captune.io import atomic_directory, atomic_write_json

    with atomic_directory(out) as tmp:
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # "Writing model shards" for one tiny file is noise in the demo's output
        try:
            model.save_pretrained(tmp, safe_serialization=True)
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        processor.save_pretrained(tmp)
        config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        # `from_pretrained` reads this key back: every later load (train, grid) gets eager attention,
        # ~30 % faster per step than PyTorch's CPU SDPA kernel at these tiny sizes.
        config["attn_implementation"] = "eager"
        for sub in ("vision_config", "qformer_config", "text_config"):
            config[sub]["attn_implementation"] = "eager"
        atomic_write_json(tmp / "config.json", config)
        atomic_write_json(tmp / "captune_tiny_spec.json", asdict(spec))
        atomic_write_json(tmp / META_FILE, meta)
