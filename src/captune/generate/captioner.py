"""Batched captioning from vision features: prompt never echoed, adapter switched on and off on one base.

The LM is called with `inputs_embeds` only (image features + embedded BOS/prompt), so its output is
the new tokens alone: the prompt cannot be echoed. OPT batches are left-padded when prompts differ in
length, so batched decoding equals one-by-one decoding.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Sequence

import torch

from captune.generate.systems import DecodeSettings
from captune.model.features import encode_images, query_features, unwrap
from captune.train.batches import CaptionCollator


def seeded_sampling(settings: DecodeSettings, seed: int):
    """transformers' temperature / top-k / top-p warpers, then a draw from `torch.Generator(seed)`: a
    processor list for `generate(do_sample=False)`, whose argmax then picks the drawn token. (transformers'
    own sampling draws from torch's global generator and takes no generator argument.)"""
    from transformers import (
        LogitsProcessor,
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    class Draw(LogitsProcessor):
        def __init__(self, generator: torch.Generator) -> None:
            self.generator = generator

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            probs = torch.softmax(scores.float(), dim=-1)
            chosen = torch.multinomial(probs, 1, generator=self.generator)
            return torch.full_like(scores, float("-inf")).scatter_(1, chosen, 0.0)

    warpers: list = []
    if settings.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_k:
        warpers.append(TopKLogitsWarper(top_k=settings.top_k))
    if settings.top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=settings.top_p))
    return LogitsProcessorList([*warpers, Draw(torch.Generator().manual_seed(seed))])


class Captioner:
    """Captions from a (possibly peft-wrapped) BLIP-2; `adapter=False` runs the frozen base."""

    def __init__(self, model: torch.nn.Module, processor, family: str) -> None:
        self.model = model
        self.processor = processor
        self.family = family
        self.blip = unwrap(model)
        self.device = next(self.blip.parameters()).device
        self.tokenizer = processor.tokenizer

    def adapter_context(self, adapter: bool):
        """peft's `disable_adapter()` for the base systems; a no-op when the adapter is wanted."""
        if not adapter and hasattr(self.model, "disable_adapter"):
            return self.model.disable_adapter()
        if adapter and not hasattr(self.model, "disable_adapter"):
            raise ValueError("an adapter system needs a model with a LoRA adapter loaded")
        return contextlib.nullcontext()

    @torch.no_grad()
    def lm_inputs(self, image_embeds: torch.Tensor, adapter: bool) -> torch.Tensor:
        """Q-Former + projection under the requested adapter state (once per adapter state, shared by systems)."""
        with self.adapter_context(adapter):
            return query_features(self.model, image_embeds.to(self.device))

    def _never_generate(self) -> list[int]:
        """Padding, `<image>`, a BOS distinct from EOS and ids past the tokenizer are never part of a caption."""
        tok = self.tokenizer
        ids = {tok.pad_token_id, self.blip.config.image_token_index}
        if tok.bos_token_id is not None and tok.bos_token_id != tok.eos_token_id:
            ids.add(tok.bos_token_id)
        vocab = self.blip.language_model.config.vocab_size
        ids.update(range(len(tok), vocab))  # rows padding the embedding to a multiple of 64: no token
        ids.discard(tok.eos_token_id)
        return sorted(i for i in ids if i is not None and i < vocab)

    def _prompt_rows(self, prompts: Sequence[str]) -> list[list[int]]:
        rows = []
        for prompt in prompts:
            collator = CaptionCollator(self.tokenizer, self.family, 0, 0, prompt)
            rows.append(collator.prompt_ids())
        return rows

    @torch.no_grad()
    def prefix_cache(self, features: torch.Tensor, adapter: bool):
        """OPT's key/value cache of the image positions, computed once and shared by every system that
        starts from these images in this adapter state (decoder-only models only; None for T5)."""
        if self.family != "opt":
            return None
        mask = torch.ones(features.shape[:2], dtype=torch.long, device=self.device)
        with self.adapter_context(adapter):
            out = self.blip.language_model(inputs_embeds=features.to(self.device), attention_mask=mask,
                                           use_cache=True)
        return out.past_key_values

    @torch.no_grad()
    def generate_from_features(self, features: torch.Tensor, settings: DecodeSettings, adapter: bool,
                               prompts: Sequence[str] | None = None, seed: int | None = None,
                               prefix=None) -> list[list[str]]:
        """Captions for a batch of LM image inputs; returns `num_return_sequences` strings per image.

        `prefix`: a `prefix_cache` of these features; generation then starts after the image positions
        (identical output, the image prefill is not recomputed). Ignored when rows need padding.
        """
        n = features.shape[0]
        prompts = list(prompts) if prompts is not None else [settings.prompt] * n
        rows = self._prompt_rows(prompts)
        lm = self.blip.language_model
        embed = lm.get_input_embeddings()
        width = max(len(r) for r in rows)
        pad_id = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=self.device)
        text_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        text_embeds = embed(ids)
        features = features.to(text_embeds.dtype)
        q = features.shape[1]
        if self.family == "opt":
            # Left padding goes before the image tokens so that every row ends where generation starts.
            pad_len = (text_mask == 0).sum(1)
            embeds = torch.zeros(n, q + width, text_embeds.shape[-1], dtype=text_embeds.dtype, device=self.device)
            mask = torch.zeros(n, q + width, dtype=torch.long, device=self.device)
            for i in range(n):
                p = int(pad_len[i])
                embeds[i, p:p + q] = features[i]
                embeds[i, p + q:] = text_embeds[i, p:]
                mask[i, p:] = 1
        else:
            embeds = torch.cat([features, text_embeds], dim=1)
            mask = torch.cat([torch.ones(n, q, dtype=torch.long, device=self.device), text_mask], dim=1)
        kwargs = settings.generate_kwargs()
        kwargs.update(pad_token_id=pad_id, eos_token_id=self.tokenizer.eos_token_id,
                      suppress_tokens=self._never_generate())
        samples = 1
        if settings.do_sample and not settings.global_rng:
            # Sampled with a private generator, not torch's global one, so the captions do not depend on
            # (or disturb) anything else drawing random numbers, e.g. LoRA training in another thread.
            samples = settings.num_return_sequences
            embeds, mask = embeds.repeat_interleave(samples, 0), mask.repeat_interleave(samples, 0)
            kwargs.update(do_sample=False, num_return_sequences=1, top_k=None, top_p=None, temperature=None,
                          logits_processor=seeded_sampling(settings, settings.seed if seed is None else seed))
        elif settings.global_rng:  # beam sampling: transformers' own
            torch.manual_seed(settings.seed if seed is None else seed)
        if prefix is not None and self.family == "opt" and bool(text_mask.all()):
            cache = copy.deepcopy(prefix)
            expand = settings.num_beams if settings.num_beams > 1 else settings.num_return_sequences
            if expand > 1:  # generate expands the inputs for beams/samples but not a passed cache
                cache.batch_repeat_interleave(expand)
            kwargs["cache"] = cache  # transformers 5 name (`past_key_values` is deprecated)
        with self.adapter_context(adapter), warnings.catch_warnings():
            # Penalties apply to generated tokens only (the prompt is given as embeddings): intended.
            warnings.filterwarnings("ignore", message="Passing `(repetition_penalty|no_repeat_ngram_size)`")
            out = lm.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        texts = [" ".join(t.split()) for t in texts]
        k = settings.num_return_sequences
        return [texts[i * k:(i + 1) * k] for i in range(n)]

    @torch.no_grad()
    def caption_embeds(self, image_embeds: torch.Tensor, settings: DecodeSettings, adapter: bool,
                       batch_size: int = 32, seed: int | None = None) -> list[list[str]]:
        out: list[list[str]] = []
        for start in range(0, image_embeds.shape[0], batch_size):
            feats = self.lm_inputs(image_embeds[start:start + batch_size], adapter)
            batch_seed = None if seed is None else seed + start
            out.extend(self.generate_from_features(feats, settings, adapter, seed=batch_seed))
        return out

    @torch.no_grad()
    def caption_paths(self, paths: Sequence[str], settings: DecodeSettings, adapter: bool,
                      batch_size: int = 32) -> list[list[str]]:
        """Open, preprocess, encode and caption image files."""
        from captune.model.features import pixel_values

        out: list[list[str]] = []
        for start in range(0, len(paths), batch_size):
            pix = pixel_values(paths[start:start + batch_size], self.processor.image_processor)
            embeds = encode_images(self.model, pix.to(self.device))
            out.extend(self.caption_embeds(embeds, settings, adapter, batch_size, seed=settings.seed + start))
        return out
