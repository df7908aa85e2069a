"""The published checkpoints' conventions (issue 16, items 2 and 7): presets equal the published config,
tiny models are those configs shrunk, OPT captions end at "\\n" in decoding and in training, and the
dependencies read the real vocabularies."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

from captune.decoding import Decoding
from captune.generate.captioner import Captioner
from captune.model.conventions import caption_end_id, end_token_ids
from captune.model.presets import build_meta_model, image_processor_settings, real_config
from captune.model.tiny import TinySpec, build_tiny_blip2
from captune.model.tokenizers import t5_tokenizer_from_dir
from captune.train.batches import CaptionCollator

REPO_ROOT = Path(__file__).resolve().parents[1]

# Fields left out when a config is compared with the published file, and why.
METADATA = {
    "architectures": "the class that saved the file, not a property of the model",
    "_name_or_path": "where the file was written from",
    "transformers_version": "the version that wrote the file",
    "dtype": "the stored weights' dtype (torch_dtype); captune's model.dtype decides the compute dtype",
}
# Size fields a tiny model shrinks (per sub-config), and only these; every other field must match.
SIZES: dict[str, set[str]] = {
    "": {"num_query_tokens"},
    "vision_config": {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                      "image_size", "patch_size"},
    "qformer_config": {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                       "encoder_hidden_size", "vocab_size", "max_position_embeddings",
                       "cross_attention_frequency"},  # 1 in 2-layer tiny Q-Formers, so that one layer cross-attends
    "text_config": {"hidden_size", "word_embed_proj_dim", "ffn_dim", "num_hidden_layers", "num_attention_heads",
                    "max_position_embeddings", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers",
                    "num_heads"},
}
# Not sizes but tiny-model settings: regularisation and initialisation scales (see `captune.model.tiny`).
TINY_SETTINGS: dict[str, set[str]] = {
    "vision_config": {"initializer_range", "attention_dropout"},
    "qformer_config": {"initializer_range", "hidden_dropout_prob", "attention_probs_dropout_prob"},
    "text_config": {"dropout", "attention_dropout", "dropout_rate"},
}
PRESET = {"opt": "Salesforce/blip2-opt-2.7b", "t5": "Salesforce/blip2-flan-t5-xl"}
TOKENIZER_DIR = {"opt": "opt", "t5": "flan-t5"}
# The token each special id names, by family (the published configs' roles).
ROLES = {
    "opt": {"pad_token_id": "<pad>", "bos_token_id": "</s>", "eos_token_id": "\n"},
    "t5": {"pad_token_id": "<pad>", "bos_token_id": "</s>", "eos_token_id": "</s>", "decoder_start_token_id": "<pad>"},
}


def _differences(a: dict[str, Any], b: dict[str, Any], skip: dict[str, set[str]], path: str = "") -> list[str]:
    """Field paths where two config dicts differ, recursing into sub-configs; `skip[sub-config]` left out."""
    out = []
    for key in sorted(set(a) | set(b)):
        if key in METADATA or key in skip.get(path, set()):
            continue
        x, y = a.get(key, "<absent>"), b.get(key, "<absent>")
        if isinstance(x, dict) and isinstance(y, dict) and key.endswith("_config"):
            out.extend(_differences(x, y, skip, key))
        elif x != y:
            out.append(f"{path}.{key}: {x!r} != {y!r}")
    return out


def _tokenizer_dir(shared_dir: Path, family: str) -> Path:
    path = shared_dir / "tokenizers" / TOKENIZER_DIR[family]
    if not path.is_dir():
        pytest.skip(f"{path} absent")
    return path


def test_opt_preset_equals_published_config(shared_dir: Path) -> None:
    from transformers import Blip2Config

    path = shared_dir / "reference" / "blip2-opt-2.7b.config.json"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    published = Blip2Config.from_json_file(str(path)).to_dict()
    preset = real_config("blip2-opt-2.7b").to_dict()
    assert _differences(published, preset, {}) == []
    assert preset["text_config"]["eos_token_id"] == 50118  # what a difference above would have named


def test_presets_carry_published_conventions() -> None:
    opt, t5 = real_config("blip2-opt-6.7b").text_config, real_config("blip2-flan-t5-xxl").text_config
    assert (opt.eos_token_id, opt.bos_token_id, opt.pad_token_id) == (50118, 2, 1)
    assert (t5.bos_token_id, t5.eos_token_id, t5.pad_token_id, t5.decoder_start_token_id) == (1, 1, 0, 0)
    assert t5.dense_act_fn == "gelu" and t5.is_gated_act
    for name, size in [("blip2-opt-2.7b", 224), ("blip2-opt-2.7b-coco", 364), ("blip2-opt-6.7b-coco", 364),
                       ("blip2-flan-t5-xl-coco", 364)]:
        assert real_config(name).vision_config.image_size == size
        assert image_processor_settings(name)["size"] == {"height": size, "width": size}


@pytest.mark.parametrize("family", ["opt", "t5"])
def test_tiny_configs_are_the_presets_shrunk(family: str, shared_dir: Path) -> None:
    model, processor = build_tiny_blip2(TinySpec(family=family, tokenizer_dir=str(_tokenizer_dir(shared_dir,
                                                                                                 family))))
    skip = {k: SIZES.get(k, set()) | TINY_SETTINGS.get(k, set()) for k in {*SIZES, *TINY_SETTINGS}}
    preset = real_config(PRESET[family])
    assert _differences(preset.to_dict(), model.config.to_dict(), skip) == []
    # The ids themselves, not only their roles: the real vocabularies give the published numbers.
    assert model.config.image_token_index == preset.image_token_index
    assert model.config.text_config.vocab_size == preset.text_config.vocab_size
    assert len(processor.tokenizer) == {"opt": 50266, "t5": 32101}[family]  # + `<image>`
    meta = build_meta_model(PRESET[family])
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        assert getattr(model.language_model.generation_config, key) == getattr(meta.language_model.generation_config,
                                                                               key), key


@pytest.mark.parametrize("family", ["opt", "t5"])
def test_tiny_special_tokens_and_processor_keep_their_roles(family: str) -> None:
    """Without ../shared too: each special id of a tiny model names the token the release's id names."""
    model, processor = build_tiny_blip2(TinySpec(family=family))
    tok, text = processor.tokenizer, model.config.text_config
    for key, token in ROLES[family].items():
        expected = tok(token, add_special_tokens=False)["input_ids"][0] if token == "\n" else \
            tok.convert_tokens_to_ids(token)
        assert getattr(text, key) == expected, key
    assert tok.decode([caption_end_id(tok, family)]) == {"opt": "\n", "t5": "</s>"}[family]
    published = image_processor_settings(PRESET[family])
    mine = processor.image_processor.to_dict()
    for key, value in published.items():
        got = list(mine[key]) if isinstance(mine[key], tuple) else mine[key]
        if key != "size":
            assert got == (pytest.approx(value) if isinstance(value, (float, list)) else value), key
    if family == "t5":
        assert text.dense_act_fn == "gelu" and text.bos_token_id == text.eos_token_id


class _Script:
    """A forward hook on the LM head that makes step k emit `tokens[k]` (the last one from then on)."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens, self.step = tokens, 0

    def __call__(self, module, inputs, output: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(output, -1e4)
        out[..., self.tokens[min(self.step, len(self.tokens) - 1)]] = 1e4
        self.step += 1
        return out


@pytest.mark.parametrize("settings", [
    Decoding(max_new_tokens=8),
    Decoding(max_new_tokens=8, num_beams=3),
    Decoding(max_new_tokens=8, do_sample=True, top_p=0.9, num_return_sequences=2),
    Decoding(max_new_tokens=8, prompt="a photo of", repetition_penalty=1.3),
], ids=["greedy", "beam", "sampling", "prompt"])
def test_opt_systems_stop_at_the_newline(settings: Decoding) -> None:
    """A model that writes "dog\\n cat cat …" gives the caption "dog", as the real checkpoints end at "\\n"."""
    model, processor = build_tiny_blip2(TinySpec(family="opt"))
    tok = processor.tokenizer
    dog, cat, newline = (tok(t, add_special_tokens=False)["input_ids"][0] for t in (" dog", " cat", "\n"))
    captioner = Captioner(model, processor, "opt")
    assert {newline, tok.eos_token_id, model.config.text_config.eos_token_id} <= set(captioner.end_ids)
    handle = model.language_model.lm_head.register_forward_hook(_Script([dog, newline, cat]))
    try:
        features = torch.randn(2, model.config.num_query_tokens, model.config.text_config.hidden_size)
        captions = captioner.generate_from_features(features, settings, adapter=False, seed=0)
    finally:
        handle.remove()
    assert captions == [["dog"] * settings.num_return_sequences] * 2


def test_end_tokens_come_from_every_config_and_the_tokenizer() -> None:
    model, processor = build_tiny_blip2(TinySpec(family="opt"))
    tok = processor.tokenizer
    model.language_model.generation_config.eos_token_id = [7, tok.eos_token_id]
    ids = end_token_ids(model, tok, "opt")
    assert ids[0] == model.config.text_config.eos_token_id == caption_end_id(tok, "opt")
    assert set(ids) == {caption_end_id(tok, "opt"), 7, tok.eos_token_id}


@pytest.mark.parametrize("family", ["opt", "t5"])
def test_fine_tuned_and_zero_shot_models_end_alike(family: str) -> None:
    """Training targets end with the model config's own EOS ("\\n" for OPT), a token decoding stops on."""
    model, processor = build_tiny_blip2(TinySpec(family=family))
    tok = processor.tokenizer
    target = CaptionCollator(tok, family, 0, 0, "a photo of").caption_ids("A dog runs.")
    assert target[-1] == model.config.text_config.eos_token_id
    assert target[-1] in Captioner(model, processor, family).end_ids
    if family == "opt":
        assert tok.decode([target[-1]]) == "\n" and target[-1] != tok.eos_token_id


def test_opt_real_vocabulary_ends_targets_with_50118(shared_dir: Path) -> None:
    from captune.model.tokenizers import opt_tokenizer_from_dir

    tok = opt_tokenizer_from_dir(_tokenizer_dir(shared_dir, "opt"))
    assert caption_end_id(tok, "opt") == 50118 == real_config("blip2-opt-2.7b").text_config.eos_token_id
    assert CaptionCollator(tok, "opt", 0, 0).caption_ids("a dog")[-1] == 50118


# Item 7: dependencies that match the code.
def test_flan_t5_tokenizer_from_shared_has_32100_tokens(shared_dir: Path) -> None:
    tok = t5_tokenizer_from_dir(_tokenizer_dir(shared_dir, "t5"))
    assert len(tok) == 32100
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)


def test_dependencies_name_protobuf_and_the_transformers_apis_used() -> None:
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    deps = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    names = {re.match(r'\s*"([A-Za-z0-9_.-]+)', line).group(1).lower() for line in deps.splitlines()
             if line.strip().startswith('"')}
    assert "protobuf" in names
    lower = re.search(r'"transformers>=(\d+)\.(\d+)', deps)
    assert lower is not None and (int(lower.group(1)), int(lower.group(2))) >= (5, 24)
    import google.protobuf  # noqa: F401  (a dependency now: present wherever captune is installed)
