"""`captune inspect`: parameters per component and the LoRA placement, on the meta device (no weights)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from captune.config import LoraConfig
from captune.errors import ModelError
from captune.model.load import TINY_NAMES, detect_family
from captune.model.lora import ParamSummary, Placement, apply_lora, summarize_parameters


@dataclass
class Inspection:
    name: str
    family: str
    base: ParamSummary
    adapted: ParamSummary
    placement: Placement


def build_for_inspection(name: str):
    """A real-size preset, a tiny model, or a local folder's config — on `meta` where it is big."""
    from captune.model.presets import build_meta_model, known_name

    if known_name(name):
        return build_meta_model(name)
    if name in TINY_NAMES:
        from captune.model.tiny import TinySpec, build_tiny_blip2

        return build_tiny_blip2(TinySpec(family=TINY_NAMES[name]))[0]
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: no config.json; pass a BLIP-2 folder saved with save_pretrained")
        from transformers import Blip2Config

        return build_meta_model(Blip2Config.from_pretrained(str(path)))
    raise ModelError(
        f"{name}: not a known preset (blip2-opt-2.7b, blip2-opt-6.7b, blip2-flan-t5-xl, blip2-flan-t5-xxl, "
        "tiny-opt, tiny-t5) nor a local model folder; pass one of those"
    )


def inspect_model(name: str, lora: LoraConfig) -> Inspection:
    model = build_for_inspection(name)
    family = detect_family(model.config)
    base = summarize_parameters(model)
    peft_model, placement = apply_lora(model, lora, family)
    return Inspection(name, family, base, summarize_parameters(peft_model), placement)
