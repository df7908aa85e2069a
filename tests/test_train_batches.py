"""Exactly which positions carry loss, for both families and both padding sides."""

from __future__ import annotations

import pytest

from captune.model.conventions import caption_end_id
from captune.model.tiny import TinySpec, build_tiny_blip2
from captune.train.batches import IGNORE, CaptionCollator, next_token_targets, target_caption


@pytest.fixture(scope="module")
def tokenizers():
    return {f: build_tiny_blip2(TinySpec(family=f))[1].tokenizer for f in ("opt", "t5")}


@pytest.mark.parametrize("side", ["right", "left"])
def test_opt_labels_only_on_caption_and_eos(tokenizers, side: str) -> None:
    tok = tokenizers["opt"]
    end = caption_end_id(tok, "opt")  # "\n", the published OPT checkpoints' EOS
    image_id, q = 999, 4
    collator = CaptionCollator(tok, "opt", image_id, q, prompt="a photo of", padding_side=side)
    captions = ["A dog runs.", "two children are playing in the water at the beach"]
    batch = collator(captions)
    prompt_ids = tok("a photo of", add_special_tokens=False)["input_ids"]
    for row in range(2):
        ids = batch.input_ids[row].tolist()
        labels = batch.labels[row].tolist()
        mask = batch.attention_mask[row].tolist()
        real = [i for i, m in enumerate(mask) if m == 1]
        start = real[0]
        # layout: [<image>]*q, BOS, prompt, caption, "\n" — padding on the chosen side only
        assert ids[start:start + q] == [image_id] * q
        assert ids[start + q] == tok.bos_token_id
        assert ids[start + q + 1:start + q + 1 + len(prompt_ids)] == prompt_ids
        caption_start = start + q + 1 + len(prompt_ids)
        full = tok(f"a photo of {target_caption(captions[row])}", add_special_tokens=False)["input_ids"]
        caption_ids = full[len(prompt_ids):]
        assert ids[caption_start:real[-1] + 1] == [*caption_ids, end]
        expected = [IGNORE] * len(ids)
        for k, tid in enumerate([*caption_ids, end]):
            expected[caption_start + k] = tid
        assert labels == expected
        pads = [i for i, m in enumerate(mask) if m == 0]
        assert all(ids[i] == tok.pad_token_id and labels[i] == IGNORE for i in pads)
        if pads:
            assert (pads[0] == 0) == (side == "left")


def test_opt_empty_prompt_masks_image_and_bos(tokenizers) -> None:
    tok = tokenizers["opt"]
    batch = CaptionCollator(tok, "opt", 999, 3, prompt="")(["a cat"])
    ids, labels = batch.input_ids[0].tolist(), batch.labels[0].tolist()
    assert ids[:4] == [999, 999, 999, tok.bos_token_id]
    assert labels[:4] == [IGNORE] * 4
    assert labels[4:] == ids[4:] and ids[-1] == caption_end_id(tok, "opt")


@pytest.mark.parametrize("side", ["right", "left"])
def test_t5_prompt_in_encoder_caption_in_decoder(tokenizers, side: str) -> None:
    tok = tokenizers["t5"]
    collator = CaptionCollator(tok, "t5", 777, 4, prompt="a photo of", padding_side=side)
    batch = collator(["A dog.", "two children are playing in the water"])
    prompt_ids = tok("a photo of", add_special_tokens=False)["input_ids"]
    for row in range(2):
        ids = batch.input_ids[row].tolist()
        mask = batch.attention_mask[row].tolist()
        real = [ids[i] for i, m in enumerate(mask) if m]
        assert real == [777] * 4 + prompt_ids + [tok.eos_token_id]
        labels = batch.labels[row].tolist()
        caption = tok(target_caption(["A dog.", "two children are playing in the water"][row]),
                      add_special_tokens=False)["input_ids"]
        n = len(caption) + 1
        assert labels[:n] == [*caption, tok.eos_token_id]
        assert labels[n:] == [IGNORE] * (len(labels) - n)
        assert batch.decoder_attention_mask[row].tolist() == [1] * n + [0] * (len(labels) - n)


def test_caption_truncation_keeps_eos(tokenizers) -> None:
    tok = tokenizers["opt"]
    batch = CaptionCollator(tok, "opt", 999, 2, max_caption_tokens=3)(["one two three four five six seven"])
    labels = [x for x in batch.labels[0].tolist() if x != IGNORE]
    assert len(labels) == 4 and labels[-1] == caption_end_id(tok, "opt")


def test_target_caption_normalises_lightly() -> None:
    assert target_caption("  A Dog\nruns.  ") == "a dog runs"


@pytest.mark.parametrize("family,prompt", [("opt", ""), ("opt", "a photo of"), ("t5", "a photo of")])
def test_precompute_equals_one_by_one(tokenizers, family: str, prompt: str) -> None:
    captions = ["A dog runs.", "two  kids\u00a0play in the WATER ...", "a", "a dog runs."]
    batched = CaptionCollator(tokenizers[family], family, 5, 2, prompt)
    batched.precompute(captions)
    assert len(batched._caption_cache) == len(set(captions))
    single = CaptionCollator(tokenizers[family], family, 5, 2, prompt)
    assert [batched.caption_ids(c) for c in captions] == [single.caption_ids(c) for c in captions]


def test_next_token_targets_marks_positions_before_each_target() -> None:
    import torch

    labels = torch.tensor([[IGNORE, IGNORE, 7, 8, 2], [IGNORE, 5, 2, IGNORE, IGNORE]])
    keep, targets = next_token_targets(labels, prefix=3)
    assert keep.shape == (2, 8)
    assert keep[0].tolist() == [False] * 3 + [False, True, True, True, False]
    assert keep[1].tolist() == [False] * 3 + [True, True, False, False, False]
    assert targets.tolist() == [7, 8, 2, 5, 2]
