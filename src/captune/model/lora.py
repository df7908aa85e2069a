"""LoRA placement presets for BLIP-2, applied through peft with full-name regexes.

peft's short names (`fc1`, `q_proj`, `dense`) also match layers in the vision encoder or the
Q-Former's unused text branch; every preset here is a regex over full module paths, and the table
of adapted modules is printed so the placement can be checked by eye.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from torch import nn

from captune.config import LoraConfig
from captune.errors import ConfigError

Family = Literal["opt", "t5"]

_QFORMER_QV = r"qformer\.encoder\.layer\.\d+\.(attention|crossattention)\.attention\.(query|value)"
_QFORMER_WIDE = (
    r"qformer\.encoder\.layer\.\d+\.("
    r"(attention|crossattention)\.attention\.(query|key|value)"
    r"|(attention|crossattention)\.output\.dense"
    r"|intermediate_query\.dense|output_query\.dense)"
)
_LM_QV = {
    "opt": r"language_model\.model\.decoder\.layers\.\d+\.self_attn\.(q_proj|v_proj)",
    "t5": r"language_model\.(encoder|decoder)\.block\.\d+\.layer\.\d+\.(SelfAttention|EncDecAttention)\.(q|v)",
}
_LM_WIDE = {
    "opt": r"language_model\.model\.decoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2)",
    "t5": (
        r"language_model\.(encoder|decoder)\.block\.\d+\.layer\.\d+\."
        r"((SelfAttention|EncDecAttention)\.(q|k|v|o)|DenseReluDense\.(wi|wi_0|wi_1|wo))"
    ),
}
VISION_PREFIX = "vision_model."
_VISION_QKV = r"vision_model\.encoder\.layers\.\d+\.self_attn\.qkv"
"""What `lora.adapt_vision: true` adds to a preset: the ViT's fused attention input projection."""
PRESETS = ("qformer", "lm", "qformer+lm", "qformer+lm-wide", "custom")


def target_regex(preset: str, family: Family, custom: str | None = None) -> str:
    """The full-match regex over module names that a preset adapts."""
    if preset == "qformer":
        parts = [_QFORMER_QV]
    elif preset == "lm":
        parts = [_LM_QV[family]]
    elif preset == "qformer+lm":
        parts = [_QFORMER_QV, _LM_QV[family]]
    elif preset == "qformer+lm-wide":
        parts = [_QFORMER_WIDE, _LM_WIDE[family]]
    elif preset == "custom":
        if not custom:
            raise ConfigError("config key 'lora.target_regex': required when lora.preset is 'custom'")
        parts = [custom]
    else:
        raise ConfigError(f"config key 'lora.preset': unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return "(" + "|".join(f"(?:{p})" for p in parts) + ")"


def matching_modules(model: nn.Module, regex: str, adapt_vision: bool = False) -> list[str]:
    """Names of Linear/Conv/Embedding modules that `regex` fully matches (vision excluded unless asked)."""
    pattern = re.compile(regex)
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)):
            continue
        if name.startswith(VISION_PREFIX) and not adapt_vision:
            continue
        if pattern.fullmatch(name):
            names.append(name)
    return names


@dataclass
class Placement:
    """Exactly which modules get adapters: peft receives this explicit list, not a pattern."""

    regex: str
    modules: list[str]


def plan_placement(model: nn.Module, cfg: LoraConfig, family: Family) -> Placement:
    regex = target_regex(cfg.preset, family, cfg.target_regex)
    if cfg.adapt_vision and cfg.preset != "custom":
        regex = f"({regex}|(?:{_VISION_QKV}))"
    try:
        re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"config key 'lora.target_regex': invalid regex ({exc}); fix the pattern") from None
    modules = matching_modules(model, regex, adapt_vision=cfg.adapt_vision)
    if not modules:
        raise ConfigError(
            f"config key 'lora.preset': {cfg.preset!r} matches no module of this {family} model; "
            "check lora.target_regex against `captune inspect` output"
        )
    if cfg.adapt_vision and not any(m.startswith(VISION_PREFIX) for m in modules):
        raise ConfigError("config key 'lora.adapt_vision': lora.target_regex matches no vision_model module; name "
                          "one (e.g. vision_model\\.encoder\\.layers\\.\\d+\\.self_attn\\.qkv) or set "
                          "lora.adapt_vision=false")
    return Placement(regex=regex, modules=modules)


def peft_config(cfg: LoraConfig, placement: Placement):
    """A peft LoraConfig targeting exactly the planned modules."""
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        bias=cfg.bias,
        use_dora=cfg.use_dora,
        target_modules=placement.modules,
    )


def apply_lora(model: nn.Module, cfg: LoraConfig, family: Family):
    """Wrap `model` with LoRA adapters; everything else frozen. Returns (peft_model, placement)."""
    from peft import get_peft_model

    placement = plan_placement(model, cfg, family)
    for param in model.parameters():
        param.requires_grad_(False)
    return get_peft_model(model, peft_config(cfg, placement)), placement


def take_off_lora(peft_model, gradient_checkpointing: bool = False) -> None:
    """The base model under `peft_model` back as it was lent: LoRA layers out (its frozen weights untouched),
    gradient checkpointing and the input-embedding hook enabling it added off, eval mode."""
    base = peft_model.get_base_model()
    peft_model.unload()
    if gradient_checkpointing:
        set_checkpointing(base.language_model, False)
        base.language_model.disable_input_require_grads()
    base.eval()


def set_checkpointing(language_model, on: bool) -> None:
    """Activation (gradient) checkpointing of the LM on or off, non-reentrant. transformers 5.25 renamed
    `gradient_checkpointing_*` to `activation_checkpointing_*` (the old names warn); both are served."""
    new = hasattr(language_model, "activation_checkpointing_enable")
    if on and new:
        language_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif on:
        language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        (language_model.activation_checkpointing_disable if new else language_model.gradient_checkpointing_disable)()


def component_of(name: str) -> str:
    """Which BLIP-2 component a parameter or module name belongs to."""
    name = name.removeprefix("base_model.model.")
    if name.startswith("vision_model"):
        return "vision"
    if name.startswith(("qformer", "query_tokens")):
        return "qformer"
    if name.startswith("language_projection"):
        return "projection"
    if name.startswith("language_model"):
        return "lm"
    return "other"


@dataclass
class ParamSummary:
    per_component: dict[str, int]
    total: int
    trainable: int
    trainable_per_component: dict[str, int]

    @property
    def trainable_share(self) -> float:
        return self.trainable / self.total if self.total else 0.0


def summarize_parameters(model: nn.Module) -> ParamSummary:
    """Parameters per component, excluding LoRA weights from the base total and counting them as trainable."""
    per: dict[str, int] = {}
    trainable_per: dict[str, int] = {}
    total = trainable = 0
    for name, param in model.named_parameters():
        n = param.numel()
        comp = component_of(name)
        is_lora = "lora_" in name
        if not is_lora:
            per[comp] = per.get(comp, 0) + n
        total += n
        if param.requires_grad:
            trainable += n
            trainable_per[comp] = trainable_per.get(comp, 0) + n
    return ParamSummary(per, total, trainable, trainable_per)
