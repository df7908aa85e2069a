"""The demo's frozen *base*: a tiny BLIP-2 that sees the shapes but captions them generically.

Pretrained in two stages (pretrain.py) on the synthetic benchmark's train split (never val/test),
then cached in a folder keyed by the settings that determine it, so a rerun loads it in a fraction
of a second; the ViT features of every image go into the feature store LoRA training and the grid
read (`cache_features`), so neither decodes an image again."""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

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
    from captune.demo.pretrain import (
        caption_collator,
        cell_targets,
        pretrain_language,
        pretrain_vision,
        qformer_tokens,
        vision_features,
    )
    from captune.demo.synth import load_truth
    from captune.model.features import pixel_values
    from captune.model.tiny import build_tiny_blip2
    from captune.train.batches import target_caption

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
        texts = sorted({target_caption(c) for refs in fine for c in refs} | {c for v in coarse for c in v})
        spec = tiny_spec(settings)
        model, processor = build_tiny_blip2(spec, texts)
        model.set_attn_implementation("eager")
    # Work the training stages do not wait for runs on a side thread, on the other core while they train
    # (torch kernels and the Rust tokenizer release the GIL): the eval images, stage 2's caption tokens and,
    # once stage 1 has frozen the ViT, the eval images' features. The results are the same as in sequence.
    side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="captune-base-side")
    try:
        eval_records = load_dataset(data, format="flickr8k").select("eval")
        eval_pixels = side.submit(pixel_values, [r.path for r in eval_records], processor.image_processor)
        collator = side.submit(caption_collator, processor.tokenizer, coarse, fine)
        with clock("images"):
            pixels = pixel_values([r.path for r in records], processor.image_processor)
            targets = torch.tensor([cell_targets(o, settings.grid) for o in objects], dtype=torch.long)

        with clock("stage1"):
            stats, embeds = pretrain_vision(model, pixels, targets, settings)  # the frozen ViT's features
        _say(progress, f"base stage 1 (ViT + Q-Former see the cells): {clock.wall['stage1']:.1f} s, Q-Former "
                       f"object accuracy {stats['qformer_object_accuracy']}")
        eval_embeds = side.submit(lambda: vision_features(model, eval_pixels.result()))  # queued after it

        with clock("stage2"):
            with torch.no_grad():
                tokens = torch.cat([qformer_tokens(model, embeds[i:i + 500]) for i in range(0, embeds.shape[0], 500)])
            stats.update(pretrain_language(model, collator.result(), tokens, (coarse, fine), settings))
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
