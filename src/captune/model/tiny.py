"""Tiny BLIP-2 models built entirely in code: real `Blip2ForConditionalGeneration` instances, so every
code path that runs on them is the path that runs on the real 3.7 B model.

Facts this module encodes (each silently breaks a random tiny model otherwise):
- `Blip2Processor` needs `num_query_tokens`, or it inserts no `<image>` tokens and the image is ignored;
- `image_token_index` must be set, or forward and generate crash;
- `Blip2VisionConfig.initializer_range` defaults to 1e-10 and `query_tokens` start at zero: both get
  real values here;
- a tied OPT embedding at std 0.02 gives near-uniform logits: frozen embeddings are scaled like a
  trained LM's so that the distributions can be peaked, and the image inputs to the LM (the
  language projection's output) get the same scale, or the image is drowned out by the text.

Every config is a published one (`captune.model.presets`) shrunk: only sizes, dropout and initialisation
scales change; special tokens keep their roles (OPT: `</s>` BOS, `<pad>`, "\n" as EOS; Flan-T5: `<pad>` as
pad and decoder start, `</s>` as EOS and BOS), and so do the image processor's settings. With the real
vocabularies (`tokenizer_dir`, e.g. ../shared/tokenizers/opt) the ids themselves match (50118, 50265, …).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    OPTConfig,
    PreTrainedTokenizerBase,
    T5Config,
)
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from captune.model.conventions import caption_end_id
from captune.model.presets import (
    IMAGE_PROCESSOR,
    QFORMER_CONFIG,
    VISION_CONFIG,
    flan_t5_text_config,
    opt_text_config,
)
from captune.model.tokenizers import (
    opt_tokenizer_from_dir,
    t5_tokenizer_from_dir,
    train_opt_tokenizer,
    train_t5_tokenizer,
)

Family = Literal["opt", "t5"]


@dataclass
class TinySpec:
    """Sizes of a tiny BLIP-2. Defaults keep a forward pass in milliseconds on one CPU thread."""

    family: Family = "opt"
    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    qformer_hidden: int = 64
    qformer_layers: int = 2
    qformer_heads: int = 4
    cross_attention_frequency: int = 1
    num_query_tokens: int = 8
    lm_hidden: int = 64
    lm_layers: int = 2
    lm_heads: int = 4
    lm_ffn: int = 128
    vocab_size: int = 512
    embed_std: float = 0.5
    max_positions: int = 128
    dropout: float = 0.0
    seed: int = 0
    tokenizer_dir: str | None = None


def build_tokenizer(spec: TinySpec, texts: Iterable[str] | None = None) -> PreTrainedTokenizerBase:
    """The real vocabulary when `tokenizer_dir` is given, else one trained on `texts` + a built-in corpus."""
    if spec.tokenizer_dir:
        if spec.family == "opt":
            return opt_tokenizer_from_dir(spec.tokenizer_dir)
        return t5_tokenizer_from_dir(spec.tokenizer_dir)
    if spec.family == "opt":
        return train_opt_tokenizer(texts, spec.vocab_size)
    return train_t5_tokenizer(texts, spec.vocab_size)


def build_processor(spec: TinySpec, tokenizer: PreTrainedTokenizerBase) -> Blip2Processor:
    """BLIP-2's processor with the published settings (bicubic, CLIP mean/std) at the tiny image size,
    `<image>` × num_query_tokens before the text."""
    image_processor = BlipImageProcessorPil(
        **IMAGE_PROCESSOR, size={"height": spec.image_size, "width": spec.image_size})
    return Blip2Processor(image_processor, tokenizer, num_query_tokens=spec.num_query_tokens)


def build_config(spec: TinySpec, tokenizer: PreTrainedTokenizerBase) -> Blip2Config:
    """A Blip2Config whose sub-configs match the tokenizer (vocabulary, special ids) and the spec."""
    image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    # Vocabulary rounded up to a multiple of 64, like the released checkpoints.
    vocab = (len(tokenizer) + 63) // 64 * 64
    vision = {
        **VISION_CONFIG,
        "hidden_size": spec.vision_hidden,
        "intermediate_size": spec.vision_hidden * 4,
        "num_hidden_layers": spec.vision_layers,
        "num_attention_heads": spec.vision_heads,
        "image_size": spec.image_size,
        "patch_size": spec.patch_size,
        "initializer_range": 0.02,
        "attention_dropout": spec.dropout,
    }
    qformer = {
        **QFORMER_CONFIG,
        "hidden_size": spec.qformer_hidden,
        "num_hidden_layers": spec.qformer_layers,
        "num_attention_heads": spec.qformer_heads,
        "intermediate_size": spec.qformer_hidden * 4,
        "cross_attention_frequency": spec.cross_attention_frequency,
        "encoder_hidden_size": spec.vision_hidden,
        "vocab_size": 512,
        "max_position_embeddings": 64,
        # A trained Q-Former passes the image through; at std 0.02 a random one averages it away.
        "initializer_range": 0.1,
        "hidden_dropout_prob": spec.dropout,
        "attention_probs_dropout_prob": spec.dropout,
    }
    # The published text configs at tiny sizes; special ids by role, from this tokenizer.
    if spec.family == "opt":
        text = OPTConfig(**{
            **opt_text_config(spec.lm_hidden, spec.lm_ffn, spec.lm_layers, spec.lm_heads),
            "vocab_size": vocab,
            "max_position_embeddings": spec.max_positions + spec.num_query_tokens,
            "dropout": spec.dropout,
            "attention_dropout": spec.dropout,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": caption_end_id(tokenizer, "opt"),  # "\n", as in the published checkpoints
        })
    else:
        text = T5Config(**{
            **flan_t5_text_config(spec.lm_hidden, spec.lm_ffn, spec.lm_layers, spec.lm_heads),
            "vocab_size": vocab,
            "d_kv": spec.lm_hidden // spec.lm_heads,
            "dropout_rate": spec.dropout,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.eos_token_id,  # T5 has no BOS; the releases name `</s>`
            "eos_token_id": tokenizer.eos_token_id,
            "decoder_start_token_id": tokenizer.pad_token_id,
        })
    return Blip2Config(
        vision_config=vision,
        qformer_config=qformer,
        text_config=text.to_dict(),
        num_query_tokens=spec.num_query_tokens,
        image_token_index=image_token_index,
    )


def _init_like_trained(model: Blip2ForConditionalGeneration, spec: TinySpec) -> None:
    """Give a random model the scales of a trained one (see module docstring)."""
    generator = torch.Generator().manual_seed(spec.seed + 1)
    with torch.no_grad():
        model.query_tokens.copy_(torch.randn(model.query_tokens.shape, generator=generator) * 0.02)
        embeddings = model.language_model.get_input_embeddings()
        embeddings.weight.copy_(torch.randn(embeddings.weight.shape, generator=generator) * spec.embed_std)
        # Image inputs on the same scale as token embeddings, as in a trained BLIP-2.
        proj = model.language_projection.weight
        proj.copy_(torch.randn(proj.shape, generator=generator) * spec.embed_std / proj.shape[1] ** 0.5)


def build_tiny_blip2(
    spec: TinySpec | None = None, texts: Iterable[str] | None = None
) -> tuple[Blip2ForConditionalGeneration, Blip2Processor]:
    """Build a tiny, deterministic (by `spec.seed`) BLIP-2 and its processor, entirely offline."""
    spec = spec or TinySpec()
    tokenizer = build_tokenizer(spec, texts)
    processor = build_processor(spec, tokenizer)
    config = build_config(spec, processor.tokenizer)
    torch.manual_seed(spec.seed)
    model = Blip2ForConditionalGeneration(config)
    _init_like_trained(model, spec)
    model.eval()
    return model, processor


def save_tiny(
    out_dir: str | Path,
    spec: TinySpec | None = None,
    texts: Iterable[str] | None = None,
    model: Blip2ForConditionalGeneration | None = None,
    processor: Blip2Processor | None = None,
) -> Path:
    """Save a tiny model in Hugging Face layout (safetensors) that `from_pretrained` loads."""
    from captune.io import atomic_directory, atomic_write_json

    if model is None or processor is None:
        model, processor = build_tiny_blip2(spec, texts)
    out = Path(out_dir)
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        if spec is not None:
            atomic_write_json(tmp / "captune_tiny_spec.json", asdict(spec))
    return out
