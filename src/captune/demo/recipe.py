"""The demo-only settings (the synthetic benchmark, the tiny base), with the reasons; the LoRA run,
the grid and its scoring are a RunConfig read from demo.yaml (`demo_run_config`).

The demo must tell the recipe's story offline on 2 CPU cores in about two minutes: a frozen generic
captioner mode-collapses on a fine-grained domain; prompts and sampling do not fix it; LoRA on < 5 %
of the parameters (Q-Former query/value + LM q_proj/v_proj) does. The numbers below were measured
(LoRA outcomes on 500 eval images, seed 0); each field says what its choice bought.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from importlib.resources import as_file, files
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from captune.config import RunConfig

# Bump when base.py changes what a given DemoSettings builds: old caches are then ignored, not reused.
BASE_VERSION = 2
SYNTH_VERSION = 1
DEMO_YAML = "demo.yaml"


def _stage(name: str, default: Any, why: str) -> Any:
    return field(default=default, metadata={"stage": name, "why": why})


@dataclass(frozen=True)
class DemoSettings:
    """The demo-only settings. `stage` metadata says which cache a field keys (synth, base)."""

    # ---- the synthetic benchmark (synth.py), Flickr8K-sized splits ---------------------------
    data_seed: int = _stage("synth", 0, "the benchmark itself stays fixed across demo seeds")
    image_size: int = _stage(
        "synth", 36,
        "grid 3 x patch 12: one ViT patch sees exactly one cell. At 24 px (patch 8) a small circle, diamond "
        "and cross are the same 5 pixels, capping (colour, shape) precision near 0.8; at 36 px every small "
        "shape differs in >= 4 pixels")
    grid: int = _stage("synth", 3, "3 x 3 cells = 9 patches = 9 query tokens")
    max_objects: int = _stage("synth", 3, "the benchmark's default: 1-3 shapes, some repeated (counts)")
    train_images: int = _stage("synth", 6000, "Flickr8K's split sizes: 6,000 train ...")
    val_images: int = _stage("synth", 1000, "... 1,000 val ...")
    test_images: int = _stage("synth", 1000, "... 1,000 test (val+test = the 2,000-image eval split)")

    # ---- the tiny BLIP-2 (model/tiny.py TinySpec) -------------------------------------------------
    seed: int = _stage("base", 0, "model init and every training stage (the demo's --seed)")
    patch_size: int = _stage("base", 12, "image_size / grid: patch = cell")
    hidden: int = _stage("base", 64, "vision, Q-Former and LM width; 64 keeps a step ~10 ms on one thread")
    vision_layers: int = _stage("base", 2, "")
    qformer_layers: int = _stage("base", 2, "")
    lm_layers: int = _stage("base", 2, "")
    heads: int = _stage("base", 4, "per component")
    lm_ffn: int = _stage("base", 128, "OPT feed-forward width")
    num_query_tokens: int = _stage("base", 9, "one query per grid cell (see base.py: Q-Former pretraining)")
    vocab_size: int = _stage("base", 512, "BPE trained on the captions: every benchmark word is one token")

    # ---- base stage 1: vision tower + Q-Former learn to see (frozen afterwards) -------------------
    vision_steps: int = _stage("base", 150, "ViT alone: per-patch colour/shape/size; 100 % on objects at 200")
    vision_batch: int = _stage("base", 64, "")
    vision_lr: float = _stage("base", 1e-2, "AdamW, warmup + cosine (3e-3: 0.61 shape accuracy at 200 steps)")
    patch_init_std: float = _stage("base", 0.2, "ViT patch embedding init (0.02: 0.72 shape accuracy at 200)")
    position_std: float = _stage("base", 0.5, "ViT position embedding init, so queries can find their cell")
    position_weight: float = _stage("base", 1.0, "ViT patch tokens also classify their own cell index")
    qformer_steps: int = _stage("base", 100, "Q-Former on the frozen ViT's cached features")
    qformer_batch: int = _stage("base", 64, "")
    qformer_lr: float = _stage("base", 5e-3, "")
    attention_weight: float = _stage("base", 1.0, "weight of the Q-Former cross-attention supervision")

    # ---- base stage 2: the generic captioner (projection + LM, full parameters) -------------------
    lm_steps: int = _stage(
        "base", 1500,
        "coarse + fine captions, right image. Measured LoRA outcome (200 steps) by base steps at batch 32: "
        "1,200 -> CIDEr 2.14; 1,500 -> 2.32; 2,000 -> 2.31-2.37 (batch 64 x 600: 2.0; 16 x 3,000: 2.11)")
    lm_batch: int = _stage("base", 32, "more, smaller steps beat fewer large ones at equal cost (see lm_steps)")
    lm_lr: float = _stage("base", 3e-3, "AdamW, cosine (1e-2: CIDEr 1.6 after LoRA; 6e-3 no better)")
    coarse_style: str = _stage(
        "base", "count",
        "'count' ('a picture with N shapes'), 'phrasings' (also 'a photo of N shapes', ...) or 'sizes'. "
        "With 'count' the 'a photo of' prompt continues into fine captions (BLEU-4 0.39-0.44, above LoRA's "
        "on seed 1). 'phrasings' keeps that prompt collapsed (CIDEr 0.08) but the seed-2 base then failed "
        "to ground its fine mode (LM loss 0.91 vs 0.70; LoRA pair precision 0.40): not stable enough yet")
    lm_train_projection: bool = _stage("base", True, "train the language projection in stage 2 (else keep its init)")
    coarse_fraction: float = _stage(
        "base", 0.5,
        "share of coarse captions ('a picture with two shapes'); the rest are fine captions, same image. "
        "Greedy zero-shot writes the coarse caption from 0.4 up (duplicate rate 0.994)")

    def stage_fields(self, *stages: str) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("stage") in stages}

    def key(self, *stages: str) -> str:
        """A short digest of the fields of `stages`: names the cache folder those fields determine."""
        text = json.dumps(self.stage_fields(*stages), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def split_sizes(self) -> dict[str, int]:
        return {"train": self.train_images, "val": self.val_images, "test": self.test_images}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def demo_run_config(data_dir: str | Path, base_dir: str | Path, out_dir: str | Path, name: str = "demo",
                    seed: int = 0, feature_dir: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """demo.yaml with the demo's own folders filled in (`overrides`: `--set`-style `train.max_steps=20`);
    without `feature_dir` the features stay in memory."""
    from captune.config import load_config

    cache = {"feature_cache_dir": str(feature_dir)} if feature_dir else {"feature_cache": "memory"}
    with as_file(files("captune.demo") / DEMO_YAML) as path:
        return load_config(path, overrides, name=name, output_dir=str(out_dir), model={"name_or_path": str(base_dir)},
                           data={"path": str(data_dir)}, train={"seed": seed, **cache})


def demo_systems() -> list[dict[str, Any]]:
    """The demo's grid as written in demo.yaml (benchmarks run other configs on it)."""
    from captune.config import read_yaml

    with as_file(files("captune.demo") / DEMO_YAML) as path:
        return read_yaml(path)["eval"]["systems"]
