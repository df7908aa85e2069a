"""Shared helpers for the benchmark scripts: timing with medians, peak RSS, machine facts, a "scaled BLIP-2".

The scaled BLIP-2 keeps the real input shapes (224 px, patch 14 → 257 vision tokens, 32 queries) and
blip2-opt-2.7b's compute proportions: the frozen ViT forward is ~47 % of a LoRA training step's FLOPs,
as in the real model (`step_flops` counts both with `FlopCounterMode` on the meta device).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CAPTUNE_SHARED", REPO.parent / "shared"))
FLICKR8K = SHARED / "data" / "flickr8k"
PROMPT = "a photo of"


def set_threads(n: int = 1) -> None:
    """One torch thread by default: the 2-core benchmark machine is shared."""
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    os.environ.setdefault("MKL_NUM_THREADS", str(n))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("CAPTUNE_NO_PROGRESS", "1")
    import warnings

    import torch

    torch.set_num_threads(n)
    from transformers.utils import logging as hf_logging

    # transformers 5.24 warns on every `generate(past_key_values=...)` (the captioner's shared prefix, inside
    # its own catch_warnings, so "once" does not hold) and on every gradient-checkpointing query.
    warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated",
                            category=FutureWarning)

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


# ----------------------------------------------------------------------------- machine and memory


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def machine_info() -> dict[str, Any]:
    import torch

    return {
        "date": date.today().isoformat(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_1min": round(load_average(), 2),
    }


def print_machine() -> dict[str, Any]:
    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} thread(s)), "
          f"Python {info['python']}, {info['date']}, load {info['load_1min']}", flush=True)
    return info


def wait_for_quiet(threshold: float = 2.0, tries: int = 0, pause: float = 60.0) -> float:
    """Wait (up to `tries` × `pause` s) for the 1-minute load to drop below `threshold`; return the load."""
    load = load_average()
    for _ in range(tries):
        if load < threshold:
            break
        print(f"load {load:.2f} >= {threshold}: waiting {pause:.0f} s", flush=True)
        time.sleep(pause)
        load = load_average()
    if load >= threshold:
        print(f"note: measuring with load {load:.2f} (machine shared)", flush=True)
    return load


def _status_kib(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    """Peak resident memory of this process (since the last `reset_peak_rss`), MiB."""
    return _status_kib("VmHWM") / 1024


@contextlib.contextmanager
def saved_tensor_bytes(exclude: Sequence[Any] = ()) -> Iterator[dict[int, int]]:
    """Collect the storages autograd saves for backward inside the block (the activation memory of a
    training step), each storage counted once (its StorageImpl identity, so it works on the meta device
    too); storages of `exclude` (the weights) are not counted. Yields {storage id: bytes}."""
    import torch

    skip = {t.untyped_storage()._cdata for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in skip:
            seen[storage._cdata] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield seen


def saved_activations_mib(fn: Callable[[], Any], exclude: Sequence[Any] = ()) -> tuple[float, Any]:
    """Run `fn` and return (MiB autograd saved for backward, fn's result); see `saved_tensor_bytes`."""
    with saved_tensor_bytes(exclude) as seen:
        out = fn()
    return sum(seen.values()) / 2**20, out


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux `clear_refs` 5), so a phase's own peak can be read."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- timing


@dataclass
class Stats:
    median: float
    low: float
    high: float
    runs: list[float]

    def __str__(self) -> str:
        return f"{fmt_s(self.median)} (min {fmt_s(self.low)}, max {fmt_s(self.high)}, n={len(self.runs)})"


def stats(runs: Sequence[float]) -> Stats:
    values = list(runs)
    return Stats(statistics.median(values), min(values), max(values), values)


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time every variant once per round, round after round, so that machine noise hits all alike."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn)[0])
    return times


def paired_ratio(slow: Sequence[float], fast: Sequence[float]) -> float:
    """Median over rounds of slow/fast measured in the same round (robust to load drifting between rounds)."""
    return statistics.median(s / f for s, f in zip(slow, fast, strict=True))


@contextlib.contextmanager
def section(name: str, out: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        out[name] = out.get(name, 0.0) + time.perf_counter() - start


def write_json(path: str | os.PathLike[str] | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
        print(f"wrote {path}")


# ----------------------------------------------------------------------------- texts and images


def has_flickr8k() -> bool:
    return (FLICKR8K / "Flicker8k_Dataset").is_dir() and (FLICKR8K / "Flickr8k_text").is_dir()


def flickr8k_images(n: int | None = None) -> list[Path]:
    paths = sorted((FLICKR8K / "Flicker8k_Dataset").glob("*.jpg"))
    return paths if n is None else paths[:n]


def caption_texts(n: int, seed: int = 0) -> list[str]:
    """`n` human-like captions: Flickr8K's when ../shared is present, else synthetic-benchmark captions."""
    rng = random.Random(seed)
    if (FLICKR8K / "Flickr8k_text" / "Flickr8k.token.txt").is_file():
        lines = (FLICKR8K / "Flickr8k_text" / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines()
        texts = [line.split("\t", 1)[1] for line in lines if "\t" in line]
        return [texts[rng.randrange(len(texts))] for _ in range(n)]
    from captune.demo.captions import write_captions
    from captune.demo.synth import make_scene

    out: list[str] = []
    while len(out) < n:
        out.extend(write_captions(make_scene(rng, 3, 3), rng, 5))
    return out[:n]


def random_images(n: int, size: int, seed: int = 0) -> list[Any]:
    """Noise images (PIL) when no real images are available; pixel content does not change FLOPs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def load_images(n: int, size: int = 224) -> tuple[list[Any], str]:
    """Flickr8K images through `captune.data.open_image` when available, else noise images."""
    if has_flickr8k():
        from captune.data import open_image

        return [open_image(p) for p in flickr8k_images(n)], "Flickr8K"
    return random_images(n, size), "noise"


# ----------------------------------------------------------------------------- the scaled BLIP-2


@dataclass(frozen=True)
class ScaledSizes:
    """Sizes of the scaled model; defaults: the prototype's, checked against the real FLOP proportions."""

    image_size: int = 224
    patch_size: int = 14
    vision_hidden: int = 384
    vision_layers: int = 6
    vision_heads: int = 6
    qformer_hidden: int = 256
    qformer_layers: int = 2
    qformer_heads: int = 4
    cross_attention_frequency: int = 2
    num_query_tokens: int = 32
    lm_hidden: int = 512
    lm_layers: int = 9
    lm_heads: int = 8
    lm_ffn: int = 2048
    vocab_size: int = 4096


TINY_SIZES = ScaledSizes(image_size=28, patch_size=14, vision_hidden=32, vision_layers=1, vision_heads=2,
                         qformer_hidden=32, qformer_layers=2, qformer_heads=2, num_query_tokens=4, lm_hidden=32,
                         lm_layers=1, lm_heads=2, lm_ffn=64, vocab_size=512)
"""A few-millisecond stand-in for smoke tests (same code paths, no meaning in its timings)."""


@dataclass(frozen=True)
class Dropout:
    """Dropout as in blip2-opt-2.7b's configs (ViT attention 0.0, Q-Former 0.1/0.1, OPT 0.1) and LoRA's 0.05."""

    qformer_hidden: float = 0.1
    qformer_attention: float = 0.1
    lm: float = 0.1
    lm_attention: float = 0.0
    lora: float = 0.05


NO_DROPOUT = Dropout(0.0, 0.0, 0.0, 0.0, 0.0)


def tiny_spec(sizes: ScaledSizes, seed: int = 0):
    from captune.model.tiny import TinySpec

    fields = asdict(sizes)
    fields.pop("cross_attention_frequency")
    return TinySpec(family="opt", cross_attention_frequency=sizes.cross_attention_frequency, seed=seed,
                    max_positions=128, **fields)


def scaled_config(sizes: ScaledSizes, tokenizer, dropout: Dropout = NO_DROPOUT):
    """A Blip2Config from captune's tiny builder, with the real model's dropout placement."""
    from captune.model.tiny import build_config

    config = build_config(tiny_spec(sizes), tokenizer)
    config.vision_config.attention_dropout = 0.0  # the real ViT-g has none; the frozen encoder must be exact
    config.qformer_config.hidden_dropout_prob = dropout.qformer_hidden
    config.qformer_config.attention_probs_dropout_prob = dropout.qformer_attention
    config.text_config.dropout = dropout.lm
    config.text_config.attention_dropout = dropout.lm_attention
    config.text_config.vocab_size = max(config.text_config.vocab_size, (sizes.vocab_size + 63) // 64 * 64)
    return config


_TOKENIZERS: dict[tuple[int, int], Any] = {}


def scaled_processor(sizes: ScaledSizes):
    """Processor with a BPE vocabulary of `sizes.vocab_size` trained on captions (cached per process)."""
    from captune.model.tiny import build_processor, build_tokenizer

    key = (sizes.vocab_size, sizes.num_query_tokens)
    if key not in _TOKENIZERS:
        texts = caption_texts(20000 if sizes.vocab_size > 1024 else 2000)
        _TOKENIZERS[key] = build_tokenizer(tiny_spec(sizes), texts)
    return build_processor(tiny_spec(sizes), _TOKENIZERS[key])


def build_scaled(sizes: ScaledSizes = ScaledSizes(), dropout: Dropout = NO_DROPOUT, seed: int = 0):
    """(model, processor): a real `Blip2ForConditionalGeneration` at the scaled sizes, initialised by captune's
    tiny builder (trained-like embedding scales), in eval mode, fp32 on CPU."""
    import torch
    from transformers import Blip2ForConditionalGeneration

    from captune.model import tiny

    processor = scaled_processor(sizes)
    config = scaled_config(sizes, processor.tokenizer, dropout)
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config)
    tiny._init_like_trained(model, tiny_spec(sizes, seed))
    model.eval()
    return model, processor


def lora_config(dropout: float = 0.05, r: int = 8):
    """captune's default LoRA placement (Q-Former q/v + OPT q/v, r 8, alpha 16)."""
    from captune.config import LoraConfig

    return LoraConfig(preset="qformer+lm", r=r, alpha=2 * r, dropout=dropout)


def save_scaled(out: Path, sizes: ScaledSizes = ScaledSizes(), seed: int = 0) -> Path:
    """Save the scaled model in Hugging Face layout (what `load_blip2` and `run_grid` read)."""
    from captune.model.tiny import save_tiny

    model, processor = build_scaled(sizes, seed=seed)
    return save_tiny(out, tiny_spec(sizes, seed), model=model, processor=processor)


def parameter_counts(model) -> dict[str, int]:
    from captune.model.lora import component_of

    out: dict[str, int] = {}
    for name, param in model.named_parameters():
        comp = component_of(name)
        out[comp] = out.get(comp, 0) + param.numel()
    return out


# ----------------------------------------------------------------------------- FLOPs on the meta device


@contextlib.contextmanager
def _meta_masks() -> Iterator[None]:
    """Let transformers' mask builders treat meta tensors as traced (no data-dependent `.all()`)."""
    import transformers.masking_utils as masking

    original = masking.is_tracing
    masking.is_tracing = lambda t: getattr(getattr(t, "device", None), "type", None) == "meta" or original(t)
    try:
        yield
    finally:
        masking.is_tracing = original


def meta_model(config, lora: bool = True, dtype: str = "fp32"):
    """The model of `config` on the meta device (no memory), in captune's dtype policy for `dtype` (Q-Former
    fp32), with captune's LoRA placement applied."""
    import torch
    from transformers import Blip2ForConditionalGeneration

    from captune.model.load import apply_dtype_policy, detect_family
    from captune.model.lora import apply_lora

    with torch.device("meta"):
        model = Blip2ForConditionalGeneration(config)
    apply_dtype_policy(model, dtype)
    if lora:
        model, _ = apply_lora(model, lora_config(), detect_family(config))
    return model


def step_flops(config, batch: int = 1, text_tokens: int = 22, gradient_checkpointing: bool = False,
               model=None) -> dict[str, float]:
    """FLOPs of one LoRA training step of an OPT BLIP-2, per component, counted with `FlopCounterMode`
    on the meta device: frozen ViT forward, Q-Former + projection forward, LM forward + loss, backward;
    plus `saved_bytes`, what autograd keeps for backward (weights excluded) in the model's own dtypes.

    The sequence is `num_query_tokens` image positions + `text_tokens` (BOS, prompt, caption, EOS).
    Gradient checkpointing adds a second LM forward in the backward pass, and its saved bytes then miss the
    checkpointed layers' inputs (held by the checkpoint, not by autograd's hooks).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers.models.blip_2.modeling_blip_2 import BaseModelOutputWithVisionQformerOutputs

    from captune.model.features import encode_images, query_features
    from captune.model.lora import set_checkpointing

    model = model if model is not None else meta_model(config)
    blip = model.get_base_model() if hasattr(model, "get_base_model") else model
    if gradient_checkpointing:
        set_checkpointing(blip.language_model, True)
    model.train()
    q = config.num_query_tokens
    size = config.vision_config.image_size
    out: dict[str, float] = {}
    with _meta_masks(), torch.device("meta"):
        pixels = torch.empty(batch, 3, size, size)
        ids = torch.cat([torch.full((batch, q), config.image_token_index, dtype=torch.long),
                         torch.full((batch, text_tokens), 5, dtype=torch.long)], dim=1)
        labels = ids.clone()
        with FlopCounterMode(display=False) as counter:
            embeds = encode_images(model, pixels)
        out["vision_forward"] = counter.get_total_flops()
        with saved_tensor_bytes(list(model.parameters())) as saved:
            with FlopCounterMode(display=False) as counter:
                features = query_features(model, embeds)
            out["qformer_forward"] = counter.get_total_flops()
            with FlopCounterMode(display=False) as counter:
                image = BaseModelOutputWithVisionQformerOutputs(pooler_output=features)
                logits = model(pixel_values=None, input_ids=ids, attention_mask=torch.ones_like(ids),
                               mm_encoder_outputs={"image": image}).logits.float()
                loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                         labels[:, 1:].reshape(-1), reduction="sum")
            out["lm_forward"] = counter.get_total_flops()
        saved_bytes = float(sum(saved.values()))
        out["embeds_bytes"] = float(embeds.numel() * embeds.element_size())
        out["logits_fp32_bytes"] = float(logits.numel() * 4)
        with FlopCounterMode(display=False) as counter:
            loss.backward()
        out["backward"] = counter.get_total_flops()
    if gradient_checkpointing:
        set_checkpointing(blip.language_model, False)
    out["step"] = out["vision_forward"] + out["qformer_forward"] + out["lm_forward"] + out["backward"]
    out["saved_bytes"] = saved_bytes
    out["cached_step"] = out["step"] - out["vision_forward"]
    out["vision_share"] = out["vision_forward"] / out["step"]
    out["cache_bound"] = out["step"] / out["cached_step"]
    return out


def generation_flops(config, batch: int, prompt_tokens: int, new_tokens: int, beams: int = 1,
                     shared_prefix: bool = False) -> dict[str, float]:
    """FLOPs of captioning `batch` images with an OPT BLIP-2 (ViT and Q-Former counted on the meta device; LM
    matmuls analytic, with KV cache, full attention matrices as SDPA computes them, LM head on the last position).

    Plain `generate` expands the inputs per beam, so the query positions are prefilled once per beam;
    `shared_prefix` prefills them once per image (captune's `prefix_cache`) and only the prompt per beam.
    """
    vision, qformer = forward_flops_parts(config)
    text = config.text_config
    d, layers, ffn, vocab = text.hidden_size, text.num_hidden_layers, text.ffn_dim, text.vocab_size
    per_token = 2 * layers * (4 * d * d + 2 * d * ffn)
    q, p = config.num_query_tokens, prompt_tokens
    rows = batch * beams
    image_rows = batch if shared_prefix else rows
    image_prefill = image_rows * (q * per_token + 4 * layers * q * q * d)
    prompt_prefill = rows * (p * per_token + 4 * layers * p * (q + p) * d + 2 * d * vocab)
    decode = sum(rows * (per_token + 4 * layers * (q + p + k) * d + 2 * d * vocab) for k in range(1, new_tokens))
    return {"vision": batch * vision, "qformer": batch * qformer, "image_prefill": image_prefill,
            "prompt_prefill": prompt_prefill, "decode": decode,
            "total": batch * (vision + qformer) + image_prefill + prompt_prefill + decode}


_PARTS: dict[str, tuple[float, float]] = {}


def forward_flops_parts(config) -> tuple[float, float]:
    """(vision forward, Q-Former + projection forward) FLOPs per image, counted on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from captune.model.features import encode_images, query_features

    key = json.dumps(config.to_dict(), sort_keys=True, default=str)
    if key not in _PARTS:
        model = meta_model(config, lora=False)
        size = config.vision_config.image_size
        with _meta_masks(), torch.device("meta"):
            with FlopCounterMode(display=False) as vision:
                embeds = encode_images(model, torch.empty(1, 3, size, size))
            with FlopCounterMode(display=False) as qformer:
                query_features(model, embeds)
        _PARTS[key] = (vision.get_total_flops(), qformer.get_total_flops())
    return _PARTS[key]


def scaled_meta_config(sizes: ScaledSizes):
    """The scaled model's Blip2Config without building weights (FLOPs only)."""
    return scaled_config(sizes, scaled_processor(sizes).tokenizer)


def flop_table(rows: dict[str, dict[str, float]]) -> str:
    lines = [f"{'model':>16} {'ViT fwd':>10} {'QF fwd':>9} {'LM fwd':>10} {'backward':>10} {'step':>10} "
             f"{'ViT share':>9} {'bound':>6}"]
    for name, f in rows.items():
        lines.append(f"{name:>16} {f['vision_forward'] / 1e9:>9.2f}G {f['qformer_forward'] / 1e9:>8.2f}G "
                     f"{f['lm_forward'] / 1e9:>9.2f}G {f['backward'] / 1e9:>9.2f}G {f['step'] / 1e9:>9.2f}G "
                     f"{f['vision_share']:>9.1%} {f['cache_bound']:>5.2f}x")
    return "\n".join(lines)


def with_sizes(sizes: ScaledSizes, **changes: int) -> ScaledSizes:
    return replace(sizes, **changes)


def python_cmd() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])


def add_run_args(ap, tiny_help: str) -> None:
    """The options every timing benchmark takes: wait for a quiet machine, a smoke-test size, JSON output."""
    ap.add_argument("--load", type=float, default=2.0, help="wait while the 1-minute load is above this")
    ap.add_argument("--wait-tries", type=int, default=0, help="how many 60 s waits for a quiet machine")
    ap.add_argument("--tiny", action="store_true", help=tiny_help)
    ap.add_argument("--out", help="write the results as JSON here")
