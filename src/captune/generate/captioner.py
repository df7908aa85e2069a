"""Batched captioning from vision features: prompt never echoed, adapter switched on and off on one base.

The LM is called with `inputs_embeds` only (image features + embedded BOS/prompt), so its output is
the new tokens alone: the prompt cannot be echoed. OPT batches are left-padded when prompts differ in
length, so batched decoding equals one-by-one decoding. Systems of one batch whose rows line up (same
adapter state and prompt length) can share one `generate` call (`generate_jobs`), each keeping its own
penalties and seeded sampling on its rows: the same captions, fewer and larger matrix products.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from captune.decoding import Decoding
from captune.errors import ConfigError
from captune.model.conventions import end_token_ids, prompt_ids
from captune.model.features import encode_images, query_features, unwrap


def seeded_sampling(settings: Decoding, seed: int):
    """transformers' temperature / top-k / top-p warpers, then a draw from `torch.Generator(seed)`: a
    processor list for `generate(do_sample=False)`, whose argmax then picks the drawn token. (transformers'
    own sampling draws from torch's global generator and takes no generator argument.)"""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers: list = []
    if settings.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_k:
        warpers.append(TopKLogitsWarper(top_k=settings.top_k))
    if settings.top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=settings.top_p))
    return LogitsProcessorList([*warpers, _Draw(seed)])


class _Draw:
    """The sampling step as a logits processor: every score but the drawn token's becomes -inf. The
    generator lives on the scores' device (a CPU generator cannot drive a CUDA multinomial), created on
    the first step and seeded with `seed`."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.generator: torch.Generator | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.generator is None:
            self.generator = torch.Generator(device=scores.device).manual_seed(self.seed)
        probs = torch.softmax(scores.float(), dim=-1)
        chosen = torch.multinomial(probs, 1, generator=self.generator)
        return torch.full_like(scores, float("-inf")).scatter_(1, chosen, 0.0)


def _row_processors(settings: Decoding, seed: int) -> list:
    """A greedy or sampled system's own logits processing (penalties, then warpers + draw when sampling).
    Applied to its rows only, so systems with other settings can share one `generate` call. transformers
    applies the same penalties before its -inf masks (min_new_tokens, suppress_tokens); both orders give the
    same scores, as a penalty leaves -inf at -inf."""
    from transformers import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

    out: list = []
    if settings.repetition_penalty != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.no_repeat_ngram_size > 0:
        out.append(NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size))
    if settings.do_sample:
        out.extend(seeded_sampling(settings, seed))
    return out


class _PerRows:
    """Each slice of rows gets its own processors (one system of a fused `generate` call each)."""

    def __init__(self, slices: list[tuple[int, int, list]]) -> None:
        self.slices = [(a, b, procs) for a, b, procs in slices if procs]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for a, b, procs in self.slices:
            part = scores[a:b]
            for proc in procs:
                part = proc(input_ids[a:b], part)
            scores[a:b] = part
        return scores


def _rows(images: int, settings: Decoding) -> int:
    """Rows a job decodes: one per beam, or per sampled caption."""
    if settings.num_beams > 1:
        return images * settings.num_beams
    return images * (settings.num_return_sequences if settings.do_sample else 1)


@dataclass
class DecodeJob:
    """One system's captions for one batch: LM inputs in one adapter state, decoding settings, seed."""

    features: torch.Tensor
    settings: Decoding
    adapter: bool
    seed: int | None = None
    prefix: Any = None  # Captioner.prefix_cache(features, adapter): the image positions' keys/values
    prompts: Sequence[str] | None = None  # one per row; default: settings.prompt for every row
    name: str = ""  # for timings


class Captioner:
    """Captions from a (possibly peft-wrapped) BLIP-2; `adapter=False` runs the frozen base."""

    def __init__(self, model: torch.nn.Module, processor, family: str) -> None:
        self.model = model
        self.processor = processor
        self.family = family
        self.blip = unwrap(model)
        self.device = next(self.blip.parameters()).device
        self.tokenizer = processor.tokenizer
        self._prompt_ids: dict[str, list[int]] = {}  # a grid asks for the same few prompts every batch
        # OPT checkpoints end captions with "\n" (their config's EOS), the tokenizer with </s>: stop on all.
        self.end_ids = end_token_ids(self.blip, self.tokenizer, family)

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
        """Padding, `<image>`, a BOS that is no end token and ids past the tokenizer are never part of a caption."""
        tok = self.tokenizer
        ids = {tok.pad_token_id, self.blip.config.image_token_index, tok.bos_token_id}
        vocab = self.blip.language_model.config.vocab_size
        ids.update(range(len(tok), vocab))  # rows padding the embedding to a multiple of 64: no token
        ids.difference_update(self.end_ids)
        return sorted(i for i in ids if i is not None and i < vocab)

    def _prompt_rows(self, prompts: Sequence[str]) -> list[list[int]]:
        """BOS/prompt ids of each row; each distinct prompt tokenised once per Captioner."""
        for p in prompts:
            if p not in self._prompt_ids:
                self._prompt_ids[p] = prompt_ids(self.tokenizer, self.family, p)
        return [self._prompt_ids[p] for p in prompts]

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
    def generate_from_features(self, features: torch.Tensor, settings: Decoding, adapter: bool,
                               prompts: Sequence[str] | None = None, seed: int | None = None,
                               prefix=None) -> list[list[str]]:
        """Captions for a batch of LM image inputs; returns `num_return_sequences` strings per image.

        `prefix`: a `prefix_cache` of these features; generation then starts after the image positions
        (identical output, the image prefill is not recomputed). Ignored when rows need padding.
        """
        return self.generate_jobs([DecodeJob(features, settings, adapter, seed, prefix, prompts)])[0]

    def _fusion_key(self, job: DecodeJob) -> tuple | None:
        """Jobs with equal keys run as one `generate` call with exactly their separate outputs: same
        adapter state, same prompt length (no padding between them, so every row sees the same positions),
        same lengths; greedy and sampled systems keep their own processors per row (`_PerRows`), beam
        systems must agree on every setting. None: runs alone."""
        s = job.settings
        rows = self._prompt_rows([s.prompt] if job.prompts is None else job.prompts)
        if len({len(r) for r in rows}) > 1:
            return None
        shape = (job.adapter, len(rows[0]), s.max_new_tokens, s.min_new_tokens, job.prefix is not None,
                 tuple(job.features.shape[1:]), job.features.dtype)
        if s.num_beams == 1 and (s.do_sample or s.num_return_sequences == 1):
            return ("rows", *shape)
        if s.num_beams > 1 and not s.do_sample:
            return ("beams", replace(s, prompt="", seed=0), *shape)
        return None

    @torch.no_grad()
    def generate_jobs(self, jobs: Sequence[DecodeJob], fuse: bool = True,
                      timings: dict[str, float] | None = None) -> list[list[list[str]]]:
        """Captions of each job, as `generate_from_features` gives them one by one, with compatible jobs
        (e.g. the greedy, nucleus and top-k systems of one batch) fused into one `generate` call: bigger
        matrix products and one decoding loop instead of several. A shared call holds at most as many
        rows as the largest job alone, so fusing never raises peak memory. `timings` gets each call's
        seconds under `generate/<job name>+<job name>...`."""
        rows = [_rows(job.features.shape[0], job.settings) for job in jobs]
        cap = max(rows, default=0)
        groups: dict[Any, list[int]] = {}
        calls: list[list[int]] = []
        for i, job in enumerate(jobs):
            key = self._fusion_key(job) if fuse else None
            group = groups.get(key) if key is not None else None
            if group is None or sum(rows[j] for j in group) + rows[i] > cap:
                group = []
                calls.append(group)
                if key is not None:
                    groups[key] = group
            group.append(i)
        out: list[list[list[str]]] = [[] for _ in jobs]
        for members in calls:
            start = time.perf_counter()
            for i, captions in zip(members, self._generate_group([jobs[i] for i in members]), strict=True):
                out[i] = captions
            if timings is not None:
                key = "generate/" + "+".join(jobs[i].name for i in members)
                timings[key] = timings.get(key, 0.0) + time.perf_counter() - start
        return out

    def _lm_embeds(self, features: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Image features + embedded BOS/prompt rows (left-padded for OPT), their mask, and whether no row
        needed padding."""
        n = features.shape[0]
        rows = self._prompt_rows(prompts)
        embed = self.blip.language_model.get_input_embeddings()
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
        return embeds, mask, bool(text_mask.all())

    def _generate_group(self, jobs: list[DecodeJob]) -> list[list[list[str]]]:
        """One `generate` call for jobs that `_fusion_key` says may share it (or a single job)."""
        from transformers import DynamicCache, LogitsProcessorList

        for job in jobs:
            k, s = job.settings.num_return_sequences, job.settings
            if k > 1 and not s.do_sample and s.num_beams < k:
                raise ConfigError(f"num_return_sequences {k} needs do_sample or num_beams >= {k}: greedy and "
                                  f"beam search give at most num_beams captions per image (system {job.name!r})")
        first = jobs[0].settings
        kwargs = first.generate_kwargs()
        kwargs.update(pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.end_ids,
                      suppress_tokens=self._never_generate())
        per_row = first.num_beams == 1 and not first.global_rng
        if per_row:  # each job's penalties and sampling go to its own rows; generate itself runs greedy
            kwargs.update(do_sample=False, num_return_sequences=1, top_k=None, top_p=None, temperature=None,
                          repetition_penalty=None, no_repeat_ngram_size=None)
        elif first.global_rng:  # beam sampling: transformers' own
            torch.manual_seed(first.seed if jobs[0].seed is None else jobs[0].seed)
        parts, masks, slices, caches, padded = [], [], [], [], False
        row = 0
        for job in jobs:
            n = job.features.shape[0]
            embeds, mask, unpadded = self._lm_embeds(job.features, job.prompts or [job.settings.prompt] * n)
            padded |= not unpadded
            copies = job.settings.num_return_sequences if per_row and job.settings.do_sample else 1
            if copies > 1:  # the sampled captions of an image are rows of their own
                embeds, mask = embeds.repeat_interleave(copies, 0), mask.repeat_interleave(copies, 0)
            if per_row:
                seed = job.settings.seed if job.seed is None else job.seed
                slices.append((row, row + embeds.shape[0], _row_processors(job.settings, seed)))
            caches.append((job.prefix, copies))
            parts.append(embeds)
            masks.append(mask)
            row += embeds.shape[0]
        if per_row:
            kwargs["logits_processor"] = LogitsProcessorList([_PerRows(slices)])
        if self.family == "opt" and not padded and all(prefix is not None for prefix, _ in caches):
            # The image positions' keys/values, computed once per batch and adapter state (generate expands
            # the inputs for beams but not a passed cache, hence the repeat).
            cache = DynamicCache()
            beams = first.num_beams if first.num_beams > 1 else 1
            for layer in range(len(caches[0][0].layers)):
                keys = [c.layers[layer].keys.repeat_interleave(k * beams, 0) for c, k in caches]
                values = [c.layers[layer].values.repeat_interleave(k * beams, 0) for c, k in caches]
                cache.update(torch.cat(keys), torch.cat(values), layer)
            kwargs["cache"] = cache  # transformers 5 name (`past_key_values` is deprecated)
        lm = self.blip.language_model
        with self.adapter_context(jobs[0].adapter), warnings.catch_warnings():
            # Penalties apply to generated tokens only (the prompt is given as embeddings): intended.
            warnings.filterwarnings("ignore", message="Passing `(repetition_penalty|no_repeat_ngram_size)`")
            out = lm.generate(inputs_embeds=torch.cat(parts), attention_mask=torch.cat(masks), **kwargs)
        # A row ends at its first end token; "\n" is no special token, so the whitespace join drops it.
        texts = [" ".join(t.split()) for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
        results, start = [], 0
        for job in jobs:
            k = job.settings.num_return_sequences
            n = job.features.shape[0]
            results.append([texts[start + i * k:start + (i + 1) * k] for i in range(n)])
            start += n * k
        return results

    @torch.no_grad()
    def caption_embeds(self, image_embeds: torch.Tensor, settings: Decoding, adapter: bool,
                       batch_size: int = 32, seed: int | None = None) -> list[list[str]]:
        out: list[list[str]] = []
        for start in range(0, image_embeds.shape[0], batch_size):
            feats = self.lm_inputs(image_embeds[start:start + batch_size], adapter)
            batch_seed = None if seed is None else seed + start
            out.extend(self.generate_from_features(feats, settings, adapter, seed=batch_seed))
        return out

    @torch.no_grad()
    def caption_paths(self, paths: Sequence[str], settings: Decoding, adapter: bool,
                      batch_size: int = 32, progress: Callable[[int], None] | None = None) -> list[list[str]]:
        """Open, preprocess, encode and caption image files; `progress(n)` after each batch of n."""
        from captune.model.features import pixel_values

        out: list[list[str]] = []
        for start in range(0, len(paths), batch_size):
            pix = pixel_values(paths[start:start + batch_size], self.processor.image_processor)
            with self.adapter_context(adapter):  # an adapter may have LoRA in the ViT (lora.adapt_vision)
                embeds = encode_images(self.model, pix.to(self.device))
            out.extend(self.caption_embeds(embeds, settings, adapter, batch_size, seed=settings.seed + start))
            if progress is not None:
                progress(len(pix))
        return out
