"""Load BLIP-2 as users do (`from_pretrained` on a hub id or a local dir), with captune's dtype policy.

Policy: the frozen vision encoder and LM in fp32, bf16 or fp16; the Q-Former and `query_tokens`
always fp32 (fp16 there is a known source of NaN losses); fp16 refused for T5 (overflows).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from captune.config import ModelConfig
from captune.errors import ConfigError, ModelError

Family = Literal["opt", "t5"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TINY_NAMES = {"tiny-opt": "opt", "tiny-t5": "t5"}

@dataclass
class LoadedModel:
    model: torch.nn.Module
    processor: object
    family: Family
    name_or_path: str
    dtype: str

    @property
    def tokenizer(self):
        return self.processor.tokenizer


def detect_family(config) -> Family:
    """OPT (decoder-only) or Flan-T5 (encoder-decoder), from a Blip2Config."""
    text = getattr(config, "text_config", None)
    model_type = getattr(text, "model_type", None)
    if model_type == "opt":
        return "opt"
    if model_type in ("t5", "mt5", "umt5"):
        return "t5"
    raise ModelError(
        f"unsupported BLIP-2 language model {model_type!r}; captune supports OPT and Flan-T5 checkpoints"
    )


def check_dtype(family: Family, dtype: str) -> None:
    if family == "t5" and dtype == "fp16":
        raise ConfigError("config key 'model.dtype': fp16 overflows in T5 (NaN losses); use bf16 or fp32")


def apply_dtype_policy(model: torch.nn.Module, dtype: str) -> torch.nn.Module:
    """Cast frozen parts to `dtype` and keep the Q-Former and query tokens in fp32."""
    model.to(DTYPES[dtype])
    model.qformer.float()
    model.query_tokens.data = model.query_tokens.data.float()
    return model


def _quantization_config(kind: str, device: torch.device):
    if kind == "none":
        return None
    if not torch.cuda.is_available() or device.type != "cuda":
        raise ConfigError(
            f"config key 'model.quantization': {kind} loading needs a CUDA GPU and bitsandbytes (model.device "
            f"is {device}); set model.quantization=none or model.device=cuda"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"config key 'model.quantization': {kind} needs bitsandbytes; `pip install bitsandbytes`"
        ) from None
    from transformers import BitsAndBytesConfig

    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["qformer", "query_tokens"])
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_quant_type="nf4",
        llm_int8_skip_modules=["qformer", "query_tokens", "language_projection"],
    )


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_blip2(cfg: ModelConfig, device: str | torch.device | None = None) -> LoadedModel:
    """Load model + processor from a hub id, a local directory, or `tiny-opt`/`tiny-t5` (built in code),
    onto `device` (default: `model.device` resolved by `captune.model.device.resolve_device`)."""
    from captune.model.device import resolve_device

    device = resolve_device(cfg.device) if device is None else torch.device(device)
    return _load_blip2(cfg, device)


def _load_blip2(cfg: ModelConfig, device: torch.device) -> LoadedModel:
    _quiet_transformers()
    name = cfg.name_or_path
    if name in TINY_NAMES:
        from captune.model.tiny import TinySpec, build_tiny_blip2

        model, processor = build_tiny_blip2(TinySpec(family=TINY_NAMES[name]))
        family = detect_family(model.config)
        check_dtype(family, cfg.dtype)
        apply_dtype_policy(model, cfg.dtype)
        return LoadedModel(model.to(device), processor, family, name, cfg.dtype)

    from transformers import AutoProcessor, Blip2Config, Blip2ForConditionalGeneration

    local = Path(name).expanduser()
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local and not local.exists():
        raise ModelError(f"{name}: model directory not found; check model.name_or_path")
    if local.exists() and local.is_file():
        raise ModelError(f"{name}: is a file; model.name_or_path must be a hub id or a model directory")
    if local.is_dir() and not (local / "config.json").is_file():
        raise ModelError(
            f"{name}: no config.json in this directory; point model.name_or_path at a saved BLIP-2 "
            "(save_pretrained layout)"
        )
    source = str(local) if local.is_dir() else name
    common = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    offline = cfg.local_files_only or os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        config = Blip2Config.from_pretrained(source, local_files_only=offline, **common)
    except (OSError, ValueError) as exc:
        if local.is_dir():
            raise ModelError(f"{name}: cannot read config.json ({exc}); is this a BLIP-2 checkpoint?") from None
        raise ModelError(
            f"{name}: weights are not on disk and the Hugging Face hub cannot be reached; on a connected "
            f"machine run `hf download {name} --local-dir DIR`, then set model.name_or_path=DIR"
        ) from None
    if getattr(config, "model_type", None) != "blip-2":
        raise ModelError(f"{name}: model_type is {config.model_type!r}, not a BLIP-2 checkpoint")
    family = detect_family(config)
    check_dtype(family, cfg.dtype)
    quant = _quantization_config(cfg.quantization, device)
    kwargs = dict(common, local_files_only=offline, dtype=DTYPES[cfg.dtype], use_safetensors=True)
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": device}
    try:
        model = Blip2ForConditionalGeneration.from_pretrained(source, **kwargs)
        processor = AutoProcessor.from_pretrained(source, local_files_only=offline, **common)
    except OSError as exc:
        raise ModelError(
            f"{name}: could not load weights ({str(exc).splitlines()[0]}); captune loads safetensors only — "
            "convert the checkpoint with save_pretrained(safe_serialization=True) or download it again"
        ) from None
    if quant is None:
        apply_dtype_policy(model, cfg.dtype)
        model.to(device)
    if getattr(processor, "num_query_tokens", None) is None:
        # Older processors lack it, and then no <image> tokens are inserted and the image is ignored.
        processor.num_query_tokens = config.num_query_tokens
    if config.image_token_index is None:
        raise ModelError(
            f"{name}: config has no image_token_index (an old BLIP-2 export); re-save it with a current "
            "transformers so that <image> tokens are known"
        )
    model.eval()
    return LoadedModel(model, processor, family, name, cfg.dtype)


class BaseModels:
    """The loaded base model, lent in turn to several trainings and grids in one process (each takes its
    LoRA layers off again), so a sweep loads the weights once instead of once per variant. A different
    `model` section (e.g. a `--grid model.dtype=...` axis) gets its own load; one base is kept at a time."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.loaded: LoadedModel | None = None
        self.loads = 0

    def get(self, cfg: ModelConfig, device: str | torch.device | None = None) -> LoadedModel:
        """The base for `cfg` on `device` (default: `model.device` resolved), loaded only when it changes."""
        import dataclasses
        import json

        from captune.model.device import resolve_device

        device = resolve_device(cfg.device) if device is None else torch.device(device)
        key = json.dumps([dataclasses.asdict(cfg), str(device)], sort_keys=True, default=str)
        if key != self.key or self.loaded is None:
            self.key, self.loaded = None, None  # the previous base freed before the next one loads
            self.loaded = load_blip2(cfg, device=device)
            self.key, self.loads = key, self.loads + 1
        return self.loaded
