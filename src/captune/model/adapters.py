"""Adapters in and out: the standard PEFT folder (`adapter_config.json` + `adapter_model.safetensors`),
loadable by plain `PeftModel.from_pretrained(base, dir)`; merged export for deployment.

Loading is checked first, so a wrong adapter fails with one line instead of a peft traceback:
pickle files are refused (no `torch.load`), and target modules and tensor shapes must fit the base.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open

from captune.errors import ModelError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


CAPTUNE_ADAPTER = "captune_adapter.json"
"""Beside PEFT's files: what reproduces the evaluated system (base id/revision, training prompt, decoding)."""


def adapter_record(cfg, device: str | None = None) -> dict:
    """The base model, the training prompt and the decoding of every system that uses the adapter."""
    from dataclasses import asdict

    from captune.decoding import grid_systems

    systems = [s for s in grid_systems(cfg) if s.adapter]
    return {
        "base_model": cfg.model.name_or_path,
        "revision": cfg.model.revision,
        "dtype": cfg.model.dtype,
        "train_prompt": cfg.train.prompt,
        "generate": asdict(cfg.generate),
        "systems": {s.name: {"samples": s.samples, **asdict(s.decode)} for s in systems},
        "trained_on": device,
    }


def save_adapter(peft_model, out_dir: str | Path, record: dict | None = None) -> Path:
    """Write the adapter atomically in PEFT layout (safetensors only), with captune's record beside it."""
    from captune.io import atomic_directory, atomic_write_json

    out = Path(out_dir)
    with atomic_directory(out) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        if record is not None:
            atomic_write_json(tmp / CAPTUNE_ADAPTER, record)
    return out


def read_adapter_record(adapter_dir: str | Path) -> dict | None:
    """captune's record of an adapter folder, or None for a plain PEFT folder (made elsewhere or before it existed)."""
    path = Path(adapter_dir) / CAPTUNE_ADAPTER
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc}); delete it or re-save the adapter") from None
    if not isinstance(record, dict):
        raise ModelError(f"{path}: expected a JSON object; delete it or re-save the adapter")
    return record


def read_adapter_config(adapter_dir: str | Path) -> dict:
    path = Path(adapter_dir)
    if not path.exists():
        raise ModelError(f"{path}: adapter folder not found; pass the run's adapter/ folder")
    if path.is_file():
        raise ModelError(f"{path}: is a file; pass the adapter folder holding {ADAPTER_CONFIG}")
    config_file = path / ADAPTER_CONFIG
    if not config_file.is_file():
        raise ModelError(f"{path}: no {ADAPTER_CONFIG}; is this a PEFT adapter folder?")
    if not (path / ADAPTER_WEIGHTS).is_file():
        pickles = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise ModelError(
                f"{path / pickles[0]}: pickle weights are refused (they can run code); "
                "re-save the adapter with safe_serialization=True"
            )
        raise ModelError(f"{path}: no {ADAPTER_WEIGHTS}; the adapter folder is incomplete")
    try:
        cfg = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{config_file}: not valid JSON ({exc}); the adapter folder is damaged") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{config_file}: expected a JSON object of PEFT settings, got a JSON "
                         f"{type(cfg).__name__}; the adapter folder is damaged")
    return cfg


def _module_names(model: torch.nn.Module) -> set[str]:
    return {name for name, _ in model.named_modules()}


def check_adapter_fits(base: torch.nn.Module, adapter_dir: str | Path) -> dict:
    """Refuse an adapter whose targets or tensor shapes do not exist in `base` (e.g. OPT adapter on T5)."""
    adapter_dir = Path(adapter_dir)
    cfg = read_adapter_config(adapter_dir)
    targets = cfg.get("target_modules") or []
    names = _module_names(base)
    if isinstance(targets, str):
        pattern = re.compile(targets)
        matched = [n for n in names if pattern.fullmatch(n)]
    else:
        matched = [t for t in targets if t in names or any(n.endswith("." + t) for n in names)]
    if not matched:
        raise ModelError(
            f"{adapter_dir}: none of the adapter's target modules exist in this base model "
            f"(adapter base: {cfg.get('base_model_name_or_path')!r}); use the base model it was trained on"
        )
    shapes = {}
    for name, module in base.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            shapes[name] = tuple(weight.shape)
    try:
        with safe_open(adapter_dir / ADAPTER_WEIGHTS, framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 (safetensors handle, not a dict)
                m = re.match(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$", key)
                if not m:
                    continue
                if m.group(1) not in names:  # peft would drop these tensors with only a warning
                    raise ModelError(
                        f"{adapter_dir}: tensor {key} adapts module {m.group(1)!r}, which this base model lacks; "
                        f"use the base model it was trained on ({cfg.get('base_model_name_or_path')!r})"
                    )
                if m.group(1) not in shapes:
                    continue
                out_features, in_features = shapes[m.group(1)][:2]
                got = tuple(fh.get_slice(key).get_shape())
                want_dim, got_dim = (in_features, got[1]) if m.group(2) == "A" else (out_features, got[0])
                if want_dim != got_dim:
                    raise ModelError(
                        f"{adapter_dir}: tensor {key} has shape {got} but the base layer is "
                        f"{shapes[m.group(1)]}; this adapter was trained on a different base "
                        f"({cfg.get('base_model_name_or_path')!r})"
                    )
    except ModelError:
        raise
    except Exception as exc:  # safetensors header errors: a damaged or non-safetensors file
        raise ModelError(f"{adapter_dir / ADAPTER_WEIGHTS}: cannot read ({exc}); the file is damaged") from None
    return cfg


def load_adapter(base: torch.nn.Module, adapter_dir: str | Path, adapter_name: str = "default", trainable=False):
    """Attach a saved adapter to `base` with plain peft, after `check_adapter_fits`."""
    from peft import PeftModel

    check_adapter_fits(base, adapter_dir)
    try:
        return PeftModel.from_pretrained(base, str(adapter_dir), adapter_name=adapter_name, is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ModelError(f"{adapter_dir}: adapter does not fit this base model ({str(exc).splitlines()[0]})") from None


def export_merged(peft_model, processor, out_dir: str | Path) -> Path:
    """Merge LoRA into the base weights and save a plain BLIP-2 folder (safetensors + processor)."""
    from captune.io import atomic_directory

    merged = peft_model.merge_and_unload()
    out = Path(out_dir)
    with atomic_directory(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    return out
