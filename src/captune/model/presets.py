"""Configs of the released BLIP-2 checkpoints, written from their published config values, so that
real sizes can be built on the `meta` device (parameter counts, LoRA shares) without any weights.
"""

from __future__ import annotations

from typing import Any

from transformers import Blip2Config

# ViT-g/14 (EVA-CLIP) and the Q-Former are shared by every BLIP-2 release.
_VISION: dict[str, Any] = {
    "hidden_size": 1408,
    "intermediate_size": 6144,
    "num_hidden_layers": 39,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "qkv_bias": True,
    "layer_norm_eps": 1e-6,
}
_QFORMER: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "vocab_size": 30522,
    "max_position_embeddings": 512,
    "cross_attention_frequency": 2,
    "encoder_hidden_size": 1408,
}


def _opt(hidden: int, ffn: int, layers: int, heads: int) -> dict[str, Any]:
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
        "pad_token_id": 1,
        "bos_token_id": 2,
        "eos_token_id": 2,
        "tie_word_embeddings": True,
    }


def _flan_t5(d_model: int, d_ff: int, layers: int, heads: int) -> dict[str, Any]:
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
        "tie_word_embeddings": False,
        "pad_token_id": 0,
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

REAL_CONFIGS: dict[str, dict[str, Any]] = {
    "Salesforce/blip2-opt-2.7b": {"text_config": _opt(2560, 10240, 32, 32), "image_token_index": 50265},
    "Salesforce/blip2-opt-6.7b": {"text_config": _opt(4096, 16384, 32, 32), "image_token_index": 50265},
    "Salesforce/blip2-flan-t5-xl": {"text_config": _flan_t5(2048, 5120, 24, 32), "image_token_index": 32100},
    "Salesforce/blip2-flan-t5-xxl": {"text_config": _flan_t5(4096, 10240, 24, 64), "image_token_index": 32100},
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
        vision_config=dict(_VISION),
        qformer_config=dict(_QFORMER),
        text_config=dict(preset["text_config"]),
        num_query_tokens=32,
        image_token_index=preset["image_token_index"],
    )


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
