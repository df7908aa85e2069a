"""Named decoding systems: a prompt, a decoding strategy, and whether the LoRA adapter is on.

`max_new_tokens` / `min_new_tokens` only: `max_length` counts BLIP-2's query tokens and silently
shortens captions.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from captune.config import GenerateConfig, SystemConfig

PROMPTS: dict[str, str] = {
    "none": "",
    "photo": "a photo of",
    "picture": "a picture of",
    "question": "Question: what is in this image? Answer:",
    "detailed": "A detailed description of this image:",
}


@dataclass(frozen=True)
class DecodeSettings:
    prompt: str = ""
    max_new_tokens: int = 30
    min_new_tokens: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    do_sample: bool = False
    top_p: float = 1.0
    top_k: int = 0
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_return_sequences: int = 1
    seed: int = 0

    @property
    def global_rng(self) -> bool:
        """Beam sampling draws from torch's global generator (transformers' own sampling); plain sampling
        uses a private seeded one (`captioner.seeded_sampling`) and is safe beside other threads."""
        return self.do_sample and self.num_beams > 1

    def generate_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens,
            "num_beams": self.num_beams,
            "do_sample": self.do_sample,
            "repetition_penalty": self.repetition_penalty,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "num_return_sequences": self.num_return_sequences,
        }
        if self.num_beams > 1:
            kw["length_penalty"] = self.length_penalty
            kw["early_stopping"] = True
        if self.do_sample:
            kw.update(top_p=self.top_p, top_k=self.top_k, temperature=self.temperature)
        else:
            kw.update(top_p=None, top_k=None, temperature=None)
        return kw


@dataclass(frozen=True)
class System:
    name: str
    adapter: bool
    decode: DecodeSettings
    samples: int = 1


def settings_from(gen: GenerateConfig) -> DecodeSettings:
    names = {f.name for f in fields(DecodeSettings)}
    return DecodeSettings(**{k: getattr(gen, k) for k in names})


def system_from(cfg: SystemConfig, defaults: GenerateConfig, train_prompt: str | None = None) -> System:
    """An adapter system that names no prompt continues `train_prompt` (what the adapter learned), as
    the default grid's LoRA rows and `captune caption --adapter` do; a base system gets `generate.prompt`."""
    base = settings_from(defaults)
    if cfg.adapter and train_prompt is not None:
        base = replace(base, prompt=train_prompt)
    overrides = {f.name: getattr(cfg, f.name) for f in fields(SystemConfig)
                 if f.name in {g.name for g in fields(DecodeSettings)} and getattr(cfg, f.name) is not None}
    return System(cfg.name, cfg.adapter, replace(base, **overrides), cfg.samples)


def default_systems(defaults: GenerateConfig, with_adapter: bool = True, train_prompt: str = "") -> list[System]:
    """The recipe's grid: zero-shot greedy and beam, each prompt, sampling settings, and LoRA variants."""
    base = replace(settings_from(defaults), prompt="", num_beams=1, do_sample=False)
    out = [
        System("zero-shot-greedy", False, base),
        System("zero-shot-beam5", False, replace(base, num_beams=5)),
    ]
    for key in ("photo", "picture", "question", "detailed"):
        out.append(System(f"prompt-{key}", False, replace(base, prompt=PROMPTS[key])))
    out += [
        System("sample-nucleus-0.9", False, replace(base, do_sample=True, top_p=0.9, temperature=1.0)),
        System("sample-topk-50", False, replace(base, do_sample=True, top_k=50, temperature=0.7)),
        System("beam5-norepeat3-rep1.5", False, replace(base, num_beams=5, no_repeat_ngram_size=3,
                                                         repetition_penalty=1.5)),
    ]
    if with_adapter:
        tuned = replace(base, prompt=train_prompt)  # the adapter learned to continue its training prompt
        out += [
            System("lora-greedy", True, tuned),
            System("lora-beam5", True, replace(tuned, num_beams=5)),
        ]
    return out
