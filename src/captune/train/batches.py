"""Tokenise (prompt, caption) pairs into BLIP-2 training batches with the loss only where it belongs.

Labels are -100 on `<image>` tokens, padding, BOS and prompt tokens; an end token is appended to every
target so the model learns to stop. OPT: `[<image>]*Q + BOS + prompt + caption + "\n"` in one sequence.
Flan-T5: encoder gets `[<image>]*Q + prompt + </s>`, the decoder target is `caption + </s>`.
(The PEFT BLIP-2 notebook passes `labels=input_ids`, training on padding and image tokens.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch

from captune.model.conventions import caption_end_id, prompt_ids

IGNORE = -100


def target_caption(text: str) -> str:
    """A reference as a training target: one line, lowercased, no trailing period (BLIP's pre_caption)."""
    text = re.sub(r"\s+", " ", text.replace("\u00a0", " ")).strip().lower()
    return re.sub(r"\s*[.]+$", "", text)


def next_token_targets(labels: torch.Tensor, prefix: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder-only LMs: which positions predict a target (a bool mask over `prefix` leading positions
    plus the label positions, for `logits_to_keep`) and those targets in order. Query, prompt and
    padding positions then skip the LM head: with OPT's 50k vocabulary most of the logits memory."""
    targets = labels[:, 1:]
    keep = torch.zeros(labels.shape[0], prefix + labels.shape[1], dtype=torch.bool, device=labels.device)
    keep[:, prefix:prefix + targets.shape[1]] = targets != IGNORE
    return keep, targets[targets != IGNORE]


@dataclass
class TextBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    decoder_attention_mask: torch.Tensor | None = None

    def to(self, device) -> TextBatch:
        return TextBatch(*(t.to(device) if t is not None else None for t in (
            self.input_ids, self.attention_mask, self.labels, self.decoder_attention_mask)))


def _pad(rows: list[list[int]], value: int, side: Literal["left", "right"]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = []
    for r in rows:
        fill = [value] * (width - len(r))
        out.append(fill + r if side == "left" else r + fill)
    return torch.tensor(out, dtype=torch.long)


class CaptionCollator:
    """Builds `TextBatch`es for one family; image tokens come from the model config, not the processor."""

    def __init__(self, tokenizer, family: Literal["opt", "t5"], image_token_id: int, num_query_tokens: int,
                 prompt: str = "", max_caption_tokens: int = 40,
                 padding_side: Literal["left", "right"] = "right") -> None:
        self.tok = tokenizer
        self.family = family
        self.image_ids = [image_token_id] * num_query_tokens
        self.prompt = prompt.strip()
        self.max_caption_tokens = max_caption_tokens
        self.padding_side = padding_side
        self.pad_id = tokenizer.pad_token_id
        # OPT targets end with "\n" as LAVIS trains them: the published checkpoints' EOS, so a fine-tuned
        # model ends a caption exactly where its zero-shot base does (decoding stops on both "\n" and </s>).
        self.end_id = caption_end_id(tokenizer, family)
        self._prompt_ids = self._encode(self.prompt) if self.prompt else []
        self.context = self.image_ids + prompt_ids(tokenizer, family, prompt)  # what every row starts with
        self._caption_cache: dict[str, list[int]] = {}

    def _encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def caption_ids(self, caption: str) -> list[int]:
        """Target ids of a caption (tokenised once per distinct caption: each is seen every epoch)."""
        cached = self._caption_cache.get(caption)
        if cached is None:
            cached = self._caption_cache[caption] = self._tokenize_captions([caption])[0]
        return cached

    def precompute(self, captions: Iterable[str]) -> None:
        """Tokenise many captions in one batched call (the fast tokenizer's batch path: 30,000 short
        captions in ~0.7 s instead of ~4 s one by one); `caption_ids` then finds them cached."""
        todo = [c for c in dict.fromkeys(captions) if c not in self._caption_cache]
        if todo:
            self._caption_cache.update(zip(todo, self._tokenize_captions(todo), strict=True))

    def _tokenize_captions(self, captions: list[str]) -> list[list[int]]:
        texts = [target_caption(c) for c in captions]
        if self.family == "opt" and self.prompt:
            # Tokenise prompt + caption together (as at inference); BPE keeps the prompt a prefix.
            n = len(self._prompt_ids)
            fulls = self.tok([f"{self.prompt} {t}" for t in texts], add_special_tokens=False)["input_ids"]
            ids = [f[n:] if f[:n] == self._prompt_ids else self._encode(" " + t) for f, t in zip(fulls, texts,
                                                                                            strict=True)]
        else:
            ids = self.tok(texts, add_special_tokens=False)["input_ids"]
        return [[*i[: self.max_caption_tokens], self.end_id] for i in ids]

    def __call__(self, captions: list[str]) -> TextBatch:
        if self.family == "opt":
            rows, labels = [], []
            for caption in captions:
                target = self.caption_ids(caption)
                rows.append(self.context + target)
                labels.append([IGNORE] * len(self.context) + target)
            ids = _pad(rows, self.pad_id, self.padding_side)
            mask = _pad([[1] * len(r) for r in rows], 0, self.padding_side)
            return TextBatch(ids, mask, _pad(labels, IGNORE, self.padding_side))
        enc_rows = [self.context for _ in captions]
        targets = [self.caption_ids(c) for c in captions]
        ids = _pad(enc_rows, self.pad_id, self.padding_side)
        mask = _pad([[1] * len(r) for r in enc_rows], 0, self.padding_side)
        # Decoder targets are right-padded: T5 shifts labels right to build decoder inputs.
        labels = _pad(targets, IGNORE, "right")
        dec_mask = _pad([[1] * len(t) for t in targets], 0, "right")
        return TextBatch(ids, mask, labels, dec_mask)
