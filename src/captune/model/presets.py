"""Configs of the released BLIP-2 checkpoints, written from their published config values, so that
real sizes can be built on the `meta` device (parameter counts, LoRA shares) without any weights.

The conventions are the published ones (transformers' BLIP-2 conversion script, LAVIS), and the tiny
models (`captune.model.tiny`) are built from these same dicts with only the sizes changed:
- OPT ends a caption with "\n": `eos_token_id` 50118 (the conversion script sets it to the id of "\n",
  as LAVIS stops OPT there); `</s>` (2) is BOS, `<pad>` 1;
- Flan-T5: `<pad>` 0 (also the decoder start), `</s>` 1 as EOS and BOS, `dense_act_fn` "gelu";
- images: 224 px (364 px for the COCO-finetuned checkpoints), bicubic resize, CLIP mean/std.
"""

from __future__ import annotations

from typing import Any

from transformers import Blip2Config

# ViT-g/14 (EVA-CLIP) and the Q-Former are shared by every BLIP-2 release.
VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 1408,
    "intermediate_size": 6144,
    "num_hidden_layers": 39,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "qkv_bias": True,
    "layer_norm_eps": 1e-6,
    # Keys the published files still carry from transformers 4 (read by no current class; kept so that a
    # preset equals the published config.json field by field).
    "dropout": 0.0,
    "initializer_factor": 1.0,
    "num_channels": 3,
    "projection_dim": 512,
}
QFORMER_CONFIG: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "vocab_size": 30522,
    "max_position_embeddings": 512,
    "cross_attention_frequency": 2,
    "encoder_hidden_size": 1408,
    "classifier_dropout": None,
}

# Image preprocessing of every BLIP-2 release (LAVIS's eval transform: bicubic resize to a square, CLIP
# mean/std). `size` is the vision config's `image_size`.
IMAGE_PROCESSOR: dict[str, Any] = {
    "do_resize": True,
    "resample": 3,  # PIL.Image.BICUBIC
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "do_convert_rgb": True,
}
OPT_NEWLINE_ID = 50118  # "\n" in OPT's BPE: the published `eos_token_id`


def opt_text_config(hidden: int, ffn: int, layers: int, heads: int) -> dict[str, Any]:
    """OPT text config of a BLIP-2 release (the tiny models call it with their own sizes)."""
    return {
        "model_type": "opt",
        "vocab_size": 50304,  # 50,265 BPE entries + `<image>`, padded to a multiple of 64
        "hidden_size": hidden,
        "word_embed_proj_dim": hidden,
        "ffn_dim": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": 2048,
        "do_layer_norm_before": True,
        "activation_dropout": 0.0,
        "pad_token_id": 1,
        "bos_token_id": 2,  # `</s>` starts every sequence (OPT's tokenizer prepends it)
        "eos_token_id": OPT_NEWLINE_ID,
        "prefix": "</s>",
        "tie_word_embeddings": True,
    }


def flan_t5_text_config(d_model: int, d_ff: int, layers: int, heads: int) -> dict[str, Any]:
    """Flan-T5 text config of a BLIP-2 release (the tiny models call it with their own sizes)."""
    return {
        "model_type": "t5",
        "vocab_size": 32128,
        "d_model": d_model,
        "d_kv": 64,
        "d_ff": d_ff,
        "num_layers": layers,
        "num_decoder_layers": layers,
        "num_heads": heads,
        "feed_forward_proj": "gated-gelu",
        # The conversion script overrides T5's `gelu_new` (tanh approximation) for the gated FFN.
        "dense_act_fn": "gelu",
        "tie_word_embeddings": False,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
    }


# Published totals (Hugging Face model pages), used by tests to check the configs.
PUBLISHED_PARAMS: dict[str, float] = {
    "Salesforce/blip2-opt-2.7b": 3.745e9,
    "Salesforce/blip2-opt-6.7b": 7.75e9,
    "Salesforce/blip2-flan-t5-xl": 3.94e9,
    "Salesforce/blip2-flan-t5-xxl": 12.2e9,
}

_OPT_27 = opt_text_config(2560, 10240, 32, 32)
_OPT_67 = opt_text_config(4096, 16384, 32, 32)
_T5_XL = flan_t5_text_config(2048, 5120, 24, 32)
_T5_XXL = flan_t5_text_config(4096, 10240, 24, 64)
REAL_CONFIGS: dict[str, dict[str, Any]] = {
    "Salesforce/blip2-opt-2.7b": {"text_config": _OPT_27, "image_token_index": 50265},
    "Salesforce/blip2-opt-6.7b": {"text_config": _OPT_67, "image_token_index": 50265},
    "Salesforce/blip2-flan-t5-xl": {"text_config": _T5_XL, "image_token_index": 32100},
    "Salesforce/blip2-flan-t5-xxl": {"text_config": _T5_XXL, "image_token_index": 32100},
    # The COCO-finetuned checkpoints see 364 px images (conversion script: `364 if "coco" in name`).
    "Salesforce/blip2-opt-2.7b-coco": {"text_config": _OPT_27, "image_token_index": 50265, "image_size": 364},
    "Salesforce/blip2-opt-6.7b-coco": {"text_config": _OPT_67, "image_token_index": 50265, "image_size": 364},
    "Salesforce/blip2-flan-t5-xl-coco": {"text_config": _T5_XL, "image_token_index": 32100, "image_size": 364},
}


def known_name(name: str) -> str | None:
    """Match `blip2-opt-2.7b`, `Salesforce/blip2-opt-2.7b` (any case) to a preset key."""
    lowered = name.lower().rstrip("/")
    for key in REAL_CONFIGS:
        if lowered in (key.lower(), key.split("/")[1].lower()):
            return key
    return None


def real_config(name: str) -> Blip2Config:
    """The Blip2Config of a released checkpoint, from its published values."""
    key = known_name(name)
    if key is None:
        raise KeyError(name)
    preset = REAL_CONFIGS[key]
    return Blip2Config(
        vision_config={**VISION_CONFIG, "image_size": preset.get("image_size", VISION_CONFIG["image_size"])},
        qformer_config=dict(QFORMER_CONFIG),
        text_config=dict(preset["text_config"]),
        num_query_tokens=32,
        image_token_index=preset["image_token_index"],
    )


def image_processor_settings(name: str) -> dict[str, Any]:
    """The published image-processor settings of a released checkpoint (its image size included)."""
    size = real_config(name).vision_config.image_size
    return {**IMAGE_PROCESSOR, "size": {"height": size, "width": size}}


def build_meta_model(name_or_config: str | Blip2Config):
    """Build a real-size BLIP-2 on the `meta` device: shapes and counts only, no memory, ~1 s.

    Flan-T5 checkpoints store an untied `lm_head`; transformers builds T5 with it tied to the input
    embeddings until a checkpoint says otherwise, so for the Flan presets it is untied here to count
    what a loaded model holds.
    """
    import torch
    from transformers import Blip2ForConditionalGeneration

    config = real_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    with torch.device("meta"):
        model = Blip2ForConditionalGeneration(config)
        if config.text_config.model_type == "t5" and not getattr(config.text_config, "scale_decoder_outputs", True):
            lm = model.language_model
            lm.lm_head.weight = torch.nn.Parameter(torch.empty_like(lm.get_input_embeddings().weight))
    return model
