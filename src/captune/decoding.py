"""How captions are decoded, in one type: `Decoding` is the `generate` section's defaults, every
`eval.systems` row and what `captune caption` runs; a `System` is a Decoding with a name and an
adapter switch. Only captune.errors imported, so config.py (the bottom layer) and generate/ both use it.

`max_new_tokens` / `min_new_tokens` only: `max_length` counts BLIP-2's query tokens and silently
shortens captions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from captune.errors import ConfigError


@dataclass(frozen=True)
class Decoding:
    """A prompt and a decoding strategy (the arguments of transformers' `generate`, plus the seed)."""

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

    def check(self, prefix: str) -> None:
        """The same ranges for the generate section and every system; the error names the key."""
        at_least_one = ("max_new_tokens", "num_beams", "num_return_sequences")
        for key in (*at_least_one, "min_new_tokens", "top_k", "no_repeat_ngram_size", "temperature",
                    "repetition_penalty"):
            low, v = (1 if key in at_least_one else 0), getattr(self, key)
            if v < low:
                raise ConfigError(f"config key '{prefix}.{key}': must be >= {low}, got {v!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"config key '{prefix}.top_p': must be in (0, 1], got {self.top_p}")

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
    """One row of the evaluation grid: a name, base or adapted, its decoding, and how many seeded samples."""

    name: str
    adapter: bool
    decode: Decoding
    samples: int = 1


def default_systems(generate: Decoding, with_adapter: bool = True, train_prompt: str = "") -> list[System]:
    """The recipe's grid (no `eval.systems`): zero-shot greedy and beam, each prompt, sampling settings, and
    LoRA variants. Each system sets its own prompt and strategy; from `generate` it takes only the caption
    length (max_new_tokens, min_new_tokens) and the sampling seed."""
    base = Decoding(max_new_tokens=generate.max_new_tokens, min_new_tokens=generate.min_new_tokens,
                    seed=generate.seed)
    out = [
        System("zero-shot-greedy", False, base),
        System("zero-shot-beam5", False, replace(base, num_beams=5)),
    ]
    prompts = {"photo": "a photo of", "picture": "a picture of", "question": "Question: what is in this image? Answer:",
               "detailed": "A detailed description of this image:"}
    out += [System(f"prompt-{key}", False, replace(base, prompt=prompt)) for key, prompt in prompts.items()]
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


def grid_systems(cfg: Any, with_adapter: bool = True) -> list[System]:
    """A run config's grid: its `eval.systems`, else the recipe's default grid."""
    return cfg.eval.systems or default_systems(cfg.generate, with_adapter, cfg.train.prompt)
