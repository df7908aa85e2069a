"""Foundation: tiny models are structurally real, LoRA goes exactly where presets say, adapters round-trip."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captune.config import LoraConfig, ModelConfig
from captune.errors import ConfigError, ModelError
from captune.model.adapters import check_adapter_fits, export_merged, load_adapter, save_adapter
from captune.model.load import load_blip2
from captune.model.lora import apply_lora, matching_modules, summarize_parameters
from captune.model.presets import PUBLISHED_PARAMS, build_meta_model
from captune.model.tiny import TinySpec, build_tiny_blip2


def _image(seed: int = 0, size: tuple[int, int] = (40, 50)) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (*size, 3), dtype=np.uint8))


def _inputs(processor, family: str):
    enc = processor(images=[_image(0), _image(1)], text=["a photo of", "a dog runs"], return_tensors="pt",
                    padding=True)
    if family == "t5":
        enc["decoder_input_ids"] = torch.tensor([[0, 5, 6], [0, 7, 8]])
    return enc


def _logits(model, enc) -> torch.Tensor:
    with torch.no_grad():
        return model(**enc).logits


@pytest.mark.parametrize("family", ["opt", "t5"])
def test_tiny_is_structurally_real(family: str) -> None:
    model, processor = build_tiny_blip2(TinySpec(family=family))
    assert model.config.image_token_index is not None
    assert processor.num_query_tokens == model.config.num_query_tokens
    enc = processor(images=[_image()], text=["a photo of"], return_tensors="pt")
    n_image = int((enc["input_ids"] == model.config.image_token_index).sum())
    assert n_image == model.config.num_query_tokens
    assert float(model.query_tokens.abs().sum()) > 0
    # The image matters: a different picture changes the logits.
    enc2 = processor(images=[_image(5)], text=["a photo of"], return_tensors="pt")
    if family == "t5":
        enc["decoder_input_ids"] = enc2["decoder_input_ids"] = torch.tensor([[0, 4]])
    assert not torch.allclose(_logits(model, enc), _logits(model, enc2))
    # Logits can be peaked (a trained-LM scale), not near-uniform.
    probs = _logits(model, enc).softmax(-1)
    assert float(probs.max()) > 0.2


@pytest.mark.parametrize("family", ["opt", "t5"])
def test_build_save_reload_identical_logits(family: str, tiny_model_dirs: dict[str, Path]) -> None:
    model, processor = build_tiny_blip2(TinySpec(family=family))
    loaded = load_blip2(ModelConfig(name_or_path=str(tiny_model_dirs[family])))
    assert loaded.family == family
    enc = _inputs(processor, family)
    enc_loaded = _inputs(loaded.processor, family)
    assert torch.equal(enc["input_ids"], enc_loaded["input_ids"])
    assert torch.equal(_logits(model, enc), _logits(loaded.model, enc_loaded))


def _expected(model, family: str, preset: str) -> set[str]:
    q_layers = model.config.qformer_config.num_hidden_layers
    freq = model.config.qformer_config.cross_attention_frequency
    lm_layers = model.config.text_config.num_hidden_layers if family == "opt" else model.config.text_config.num_layers
    names: set[str] = set()
    qkv = ("query", "value") if preset != "qformer+lm-wide" else ("query", "key", "value")
    if preset in ("qformer", "qformer+lm", "qformer+lm-wide"):
        for i in range(q_layers):
            kinds = ["attention"] + (["crossattention"] if i % freq == 0 else [])
            for kind in kinds:
                names |= {f"qformer.encoder.layer.{i}.{kind}.attention.{p}" for p in qkv}
                if preset == "qformer+lm-wide":
                    names.add(f"qformer.encoder.layer.{i}.{kind}.output.dense")
            if preset == "qformer+lm-wide":
                names |= {f"qformer.encoder.layer.{i}.intermediate_query.dense",
                          f"qformer.encoder.layer.{i}.output_query.dense"}
    if preset in ("lm", "qformer+lm", "qformer+lm-wide"):
        for i in range(lm_layers):
            if family == "opt":
                projs = ["q_proj", "v_proj"] if preset != "qformer+lm-wide" else ["q_proj", "k_proj", "v_proj",
                                                                                   "out_proj"]
                names |= {f"language_model.model.decoder.layers.{i}.self_attn.{p}" for p in projs}
                if preset == "qformer+lm-wide":
                    names |= {f"language_model.model.decoder.layers.{i}.{p}" for p in ("fc1", "fc2")}
            else:
                proj = ["q", "v"] if preset != "qformer+lm-wide" else ["q", "k", "v", "o"]
                names |= {f"language_model.encoder.block.{i}.layer.0.SelfAttention.{p}" for p in proj}
                names |= {f"language_model.decoder.block.{i}.layer.0.SelfAttention.{p}" for p in proj}
                names |= {f"language_model.decoder.block.{i}.layer.1.EncDecAttention.{p}" for p in proj}
                if preset == "qformer+lm-wide":
                    for stack, ff in (("encoder", 1), ("decoder", 2)):
                        names |= {f"language_model.{stack}.block.{i}.layer.{ff}.DenseReluDense.{p}"
                                  for p in ("wi_0", "wi_1", "wo")}
    return names


@pytest.mark.parametrize("family", ["opt", "t5"])
@pytest.mark.parametrize("preset", ["qformer", "lm", "qformer+lm", "qformer+lm-wide"])
def test_presets_adapt_exactly_the_expected_modules(family: str, preset: str) -> None:
    model, _ = build_tiny_blip2(TinySpec(family=family))
    expected = _expected(model, family, preset)
    peft_model, placement = apply_lora(model, LoraConfig(preset=preset), family)
    assert set(placement.modules) == expected
    adapted = {n.removeprefix("base_model.model.") for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == expected
    assert not any(n.startswith("vision_model") for n in adapted)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_custom_regex_never_touches_vision_unless_asked() -> None:
    model, _ = build_tiny_blip2(TinySpec(family="opt"))
    regex = r".*fc1"  # a short name: also matches the vision MLP and would silently adapt it in peft
    assert all(not n.startswith("vision_model") for n in matching_modules(model, regex))
    assert any(n.startswith("vision_model") for n in matching_modules(model, regex, adapt_vision=True))
    with pytest.raises(ConfigError, match="matches no module"):
        apply_lora(model, LoraConfig(preset="custom", target_regex=r"nothing\.here"), "opt")


def _randomize_lora(peft_model, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)


@pytest.mark.parametrize("family", ["opt", "t5"])
def test_adapter_round_trip_through_plain_peft_and_merge(family: str, tmp_path: Path,
                                                         tiny_model_dirs: dict[str, Path]) -> None:
    from peft import PeftModel
    from transformers import Blip2ForConditionalGeneration

    base_dir = tiny_model_dirs[family]
    loaded = load_blip2(ModelConfig(name_or_path=str(base_dir)))
    peft_model, _ = apply_lora(loaded.model, LoraConfig(preset="qformer+lm"), family)
    _randomize_lora(peft_model)
    peft_model.eval()
    enc = _inputs(loaded.processor, family)
    adapted = _logits(peft_model, enc)
    base_logits = _logits(Blip2ForConditionalGeneration.from_pretrained(base_dir), enc)
    assert not torch.allclose(adapted, base_logits)

    save_adapter(peft_model, tmp_path / "adapter")
    assert {p.name for p in (tmp_path / "adapter").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    plain = PeftModel.from_pretrained(Blip2ForConditionalGeneration.from_pretrained(base_dir), tmp_path / "adapter")
    plain.eval()
    assert torch.equal(_logits(plain, enc), adapted)

    ours = load_adapter(Blip2ForConditionalGeneration.from_pretrained(base_dir), tmp_path / "adapter")
    ours.eval()
    export_merged(ours, loaded.processor, tmp_path / "merged")
    merged = Blip2ForConditionalGeneration.from_pretrained(tmp_path / "merged")
    assert torch.allclose(_logits(merged, enc), adapted, atol=1e-5, rtol=1e-4)


def test_opt_adapter_on_t5_base_is_refused(tmp_path: Path, tiny_model_dirs: dict[str, Path]) -> None:
    loaded = load_blip2(ModelConfig(name_or_path=str(tiny_model_dirs["opt"])))
    peft_model, _ = apply_lora(loaded.model, LoraConfig(preset="lm"), "opt")
    save_adapter(peft_model, tmp_path / "opt-adapter")
    t5 = load_blip2(ModelConfig(name_or_path=str(tiny_model_dirs["t5"]))).model
    with pytest.raises(ModelError, match="target modules exist"):
        check_adapter_fits(t5, tmp_path / "opt-adapter")


def test_adapter_from_other_sized_base_is_refused(tmp_path: Path) -> None:
    small, _ = build_tiny_blip2(TinySpec(family="opt"))
    peft_model, _ = apply_lora(small, LoraConfig(preset="qformer+lm"), "opt")
    save_adapter(peft_model, tmp_path / "a")
    wide, _ = build_tiny_blip2(TinySpec(family="opt", lm_hidden=96, lm_heads=4, qformer_hidden=96))
    with pytest.raises(ModelError, match="different base"):
        load_adapter(wide, tmp_path / "a")


def test_pickle_adapter_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"target_modules": ["q_proj"]}')
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04not really")
    model, _ = build_tiny_blip2(TinySpec(family="opt"))
    with pytest.raises(ModelError, match="pickle"):
        load_adapter(model, folder)


@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS))
def test_real_configs_match_published_counts_and_presets_stay_small(name: str) -> None:
    model = build_meta_model(name)
    total = sum(p.numel() for p in model.parameters())
    assert abs(total / PUBLISHED_PARAMS[name] - 1) < 0.01
    family = "opt" if "opt" in name else "t5"
    for preset in ("qformer", "lm", "qformer+lm", "qformer+lm-wide"):
        peft_model, placement = apply_lora(build_meta_model(name), LoraConfig(preset=preset), family)
        summary = summarize_parameters(peft_model)
        assert 0 < summary.trainable_share < 0.05
        assert not any(m.startswith("vision_model") for m in placement.modules)


def test_blip2_opt_27b_size_band() -> None:
    total = sum(p.numel() for p in build_meta_model("Salesforce/blip2-opt-2.7b").parameters())
    assert 3.7e9 <= total <= 3.9e9


def test_dtype_policy_keeps_qformer_fp32(tiny_model_dirs: dict[str, Path]) -> None:
    loaded = load_blip2(ModelConfig(name_or_path=str(tiny_model_dirs["opt"]), dtype="bf16"))
    model = loaded.model
    assert model.query_tokens.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.qformer.parameters())
    assert next(model.vision_model.parameters()).dtype == torch.bfloat16
    assert next(model.language_model.parameters()).dtype == torch.bfloat16
    enc = _inputs(loaded.processor, "opt")
    enc["pixel_values"] = enc["pixel_values"].to(torch.bfloat16)
    assert torch.isfinite(_logits(model, enc).float()).all()


def test_fp16_t5_and_cpu_quantization_are_refused(tiny_model_dirs: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="bf16"):
        load_blip2(ModelConfig(name_or_path=str(tiny_model_dirs["t5"]), dtype="fp16"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            load_blip2(ModelConfig(name_or_path=str(tiny_model_dirs["opt"]), quantization="4bit"))


def test_unreachable_hub_gives_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        load_blip2(ModelConfig(name_or_path="Salesforce/blip2-opt-2.7b"))
    msg = str(err.value)
    assert "\n" not in msg and "hub cannot be reached" in msg and "model.name_or_path=DIR" in msg


def test_missing_dir_and_file_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_blip2(ModelConfig(name_or_path=str(tmp_path / "nope" / "x" / "y")))
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="is a file"):
        load_blip2(ModelConfig(name_or_path=str(tmp_path / "f.bin")))
    with pytest.raises(ModelError, match=r"no config\.json"):
        load_blip2(ModelConfig(name_or_path=str(tmp_path)))


@pytest.mark.parametrize("family, sub", [("opt", "opt"), ("t5", "flan-t5")])
def test_tiny_model_on_real_vocabulary_and_captions(family: str, sub: str, shared_dir: Path,
                                                    flickr8k_dir: Path) -> None:
    tok_dir = shared_dir / "tokenizers" / sub
    if not tok_dir.is_dir():
        pytest.skip(f"{tok_dir} absent")
    model, processor = build_tiny_blip2(TinySpec(family=family, tokenizer_dir=str(tok_dir)))
    vocab = len(processor.tokenizer)
    assert vocab >= 32000
    lines = (flickr8k_dir / "Flickr8k_text" / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines()[:4]
    captions = [line.split("\t", 1)[1] for line in lines]
    enc = processor(images=[_image(i) for i in range(4)], text=captions, return_tensors="pt", padding=True)
    ids = enc["input_ids"]
    assert int((ids == model.config.image_token_index).sum()) == 4 * model.config.num_query_tokens
    text_ids = ids[ids != model.config.image_token_index]
    assert int((text_ids == processor.tokenizer.unk_token_id).sum()) == 0
    decoded = processor.tokenizer.decode(processor.tokenizer(captions[0])["input_ids"], skip_special_tokens=True)
    assert re.sub(r"\s+", " ", decoded).strip() == captions[0].strip()
    if family == "t5":
        enc["decoder_input_ids"] = torch.zeros(4, 2, dtype=torch.long)
    assert torch.isfinite(_logits(model, enc)).all()
