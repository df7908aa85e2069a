"""Model stage: load BLIP-2, real-size presets, tiny test models, LoRA placement, adapters."""

from captune.model.load import LoadedModel, apply_dtype_policy, detect_family, load_blip2
from captune.model.lora import apply_lora, plan_placement, summarize_parameters, target_regex

__all__ = [
    "LoadedModel",
    "apply_dtype_policy",
    "apply_lora",
    "detect_family",
    "load_blip2",
    "plan_placement",
    "summarize_parameters",
    "target_regex",
]
