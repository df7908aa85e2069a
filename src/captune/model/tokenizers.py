"""Tokenizers for tiny models, built in code (no download) with the real families' special-token layouts.

OPT: byte-level BPE in fairseq order (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3; `</s>` doubles as BOS).
Flan-T5: Unigram (`<pad>`=0, `</s>`=1, `<unk>`=2; no BOS; `</s>` appended).
Both get BLIP-2's `<image>` token when wrapped in `Blip2Processor`.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GPT2Tokenizer, T5Tokenizer

# A small caption-like corpus of our own so the default tiny vocabulary has real words as tokens.
BUILTIN_CORPUS: tuple[str, ...] = (
    "a dog runs across the green grass",
    "two children are playing in the water at the beach",
    "a man in a red shirt is riding a bike down the street",
    "a woman and a girl sit on a bench in the park",
    "a black and white dog jumps over a fence",
    "a group of people stand in front of a building",
    "a boy is climbing a rock wall",
    "a brown dog is swimming in a lake",
    "people walk along a snowy mountain trail",
    "a small red square left of a large blue circle",
    "a large green triangle above a small yellow star",
    "three purple hexagons on a white background",
    "a photo of an orange cross to the right of a pink diamond",
    "a picture of one cyan shape below two gray shapes",
    "question: what is in this image? answer:",
    "a detailed description of the image",
    "the cat sleeps on the sofa near the window",
    "a player kicks the ball during a soccer game",
    "a child in a blue jacket smiles at the camera",
    "several dogs run through the snow",
)


def _corpus(texts: Iterable[str] | None) -> list[str]:
    out = list(BUILTIN_CORPUS)
    if texts is not None:
        out.extend(t for t in texts if t)
    return out


def train_opt_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 512) -> GPT2Tokenizer:
    """Train a byte-level BPE (any text encodes, like GPT-2/OPT) with OPT's special-token ids."""
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(_corpus(texts), trainer)
    model = json.loads(raw.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return opt_tokenizer_from_vocab(model["vocab"], merges)


def opt_tokenizer_from_vocab(vocab: dict[str, int] | str, merges: list[tuple[str, str]] | str) -> GPT2Tokenizer:
    """OPT's tokenizer: GPT-2 BPE, `</s>` as BOS and EOS, `<pad>` padding, BOS prepended."""
    return GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        bos_token="</s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=True,
    )


def opt_tokenizer_from_dir(path: str | Path) -> GPT2Tokenizer:
    """The real OPT vocabulary from `vocab.json` + `merges.txt` (e.g. ../shared/tokenizers/opt)."""
    p = Path(path)
    return opt_tokenizer_from_vocab(str(p / "vocab.json"), str(p / "merges.txt"))


def train_t5_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 512) -> T5Tokenizer:
    """Train a Unigram model (as SentencePiece does for T5) with T5's special-token ids."""
    specials = ["<pad>", "</s>", "<unk>"]
    raw = Tokenizer(models.Unigram())
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        unk_token="<unk>",
        initial_alphabet=[c for c in string.printable if not c.isspace()],
        show_progress=False,
    )
    raw.train_from_iterator(_corpus(texts), trainer)
    model = json.loads(raw.to_str())["model"]
    vocab = [(piece, float(score)) for piece, score in model["vocab"]]
    if "▁" not in {p for p, _ in vocab}:
        vocab.append(("▁", -2.0))
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def t5_tokenizer_from_dir(path: str | Path) -> T5Tokenizer:
    """The real Flan-T5 SentencePiece model from a folder holding `spiece.model`."""
    return T5Tokenizer.from_pretrained(str(path))

