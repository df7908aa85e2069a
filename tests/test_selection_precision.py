"""Issue 16 items 3-5: no adapter selection on evaluated images; Q-Former precision and non-finite
gradients; `lora.adapt_vision` trains the vision LoRA weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from captune.config import load_config
from captune.data import load_dataset_from_config
from captune.data.selection import hold_out, plan_selection
from captune.errors import ConfigError
from captune.train.loop import train
from train_helpers import colour_dataset, tiny_train_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# ----------------------------------------------------------------------------- 3. selection


@pytest.mark.parametrize("name", ["flickr8k-blip2-opt-2.7b.yaml", "flickr8k-blip2-flan-t5-xl.yaml"])
def test_shipped_flickr8k_configs_select_on_held_out_train_images(name: str, flickr8k_dir: Path) -> None:
    cfg = load_config(CONFIGS / name, [f"data.path={flickr8k_dir}"])
    dataset = load_dataset_from_config(cfg.data)
    plan = plan_selection(cfg, dataset)
    evaluated = {r.path for r in dataset.select(cfg.data.eval_split)}
    train_all = dataset.select(cfg.data.train_split)
    assert len(evaluated) == 2000 and len(plan.val) == 300 and plan.overlap == 0
    assert not evaluated & {r.path for r in plan.val}
    assert len(plan.train) == len(train_all) - 300
    assert {r.path for r in plan.train} | {r.path for r in plan.val} == {r.path for r in train_all}
    assert plan.description == f"300 images held out of split 'train' (seed {cfg.train.seed}); none evaluated"
    # The old shipped setting (select on val, evaluate val+test) is refused in one line.
    old = load_config(CONFIGS / name, [f"data.path={flickr8k_dir}", "data.val_from_train=0"])
    with pytest.raises(ConfigError, match=r"^config key 'data.val_split': 300 of the 300 validation images") as err:
        plan_selection(old, dataset)
    assert "\n" not in str(err.value) and "eval.allow_selection_overlap" in str(err.value)


def test_hold_out_is_seeded_and_deterministic(flickr8k_dir: Path) -> None:
    cfg = load_config(CONFIGS / "flickr8k-blip2-opt-2.7b.yaml", [f"data.path={flickr8k_dir}"])
    train_records = load_dataset_from_config(cfg.data).select("train")
    names = [r.name for r in hold_out(train_records, 300, 0)[1]]
    assert names == [r.name for r in hold_out(list(reversed(train_records)), 300, 0)[1]][::-1]
    assert set(names) != {r.name for r in hold_out(train_records, 300, 1)[1]}
    assert len(set(names)) == 300


def test_overlap_opt_out_is_allowed_and_reported(tiny_model_dirs, tmp_path: Path) -> None:
    data = colour_dataset(tmp_path / "data", val=True)  # splits train + val; eval = val + test
    args = ("train.max_steps=2", "train.validate_every=2", "generate.max_new_tokens=3")
    refused = tiny_train_config(tiny_model_dirs["opt"], data, tmp_path, "refused", *args)
    with pytest.raises(ConfigError, match="also evaluated"):
        train(refused, progress=False)
    assert not (tmp_path / "refused" / "train" / "log.jsonl").exists()  # refused before any training
    allowed = tiny_train_config(tiny_model_dirs["opt"], data, tmp_path, "allowed", *args,
                                "eval.allow_selection_overlap=true")
    summary = train(allowed, progress=False).summary
    assert summary["selection"]["overlap_with_eval"] == 4
    assert summary["selection"]["description"] == (
        "4 images of split 'val'; 4 of them also evaluated (allowed by eval.allow_selection_overlap)")
    held = tiny_train_config(tiny_model_dirs["opt"], data, tmp_path, "held", *args, "data.val_from_train=1",
                             "train.batch_size=3")
    summary = train(held, progress=False).summary
    assert summary["train_images"] == 3 and summary["selection"]["images"] == 1
    assert summary["selection"]["overlap_with_eval"] == 0


def test_val_from_train_must_leave_training_images(tmp_path: Path) -> None:
    data = colour_dataset(tmp_path / "data")
    cfg = load_config(None, [f"data.path={data}", "train.validate_every=2", "data.val_from_train=4"])
    with pytest.raises(ConfigError, match=r"data\.val_from_train"):
        plan_selection(cfg, load_dataset_from_config(cfg.data))
    with pytest.raises(ConfigError, match=r"data\.val_from_train"):
        load_config(None, ["data.val_from_train=-1"])


# ----------------------------------------------------------------------------- 4. precision, non-finite gradients


def test_qformer_computes_in_fp32_under_bf16_autocast(tiny_model_dirs) -> None:
    from captune.config import ModelConfig
    from captune.model.features import encode_images, query_features
    from captune.model.load import load_blip2

    blip = load_blip2(ModelConfig(name_or_path=str(tiny_model_dirs["opt"]), dtype="bf16")).model
    seen: dict[str, torch.dtype] = {}

    def record(name: str):
        def hook(module, inputs, output) -> None:
            seen[name] = getattr(output, "last_hidden_state", output).dtype
        return hook

    query = blip.qformer.encoder.layer[0].crossattention.attention.query
    hooks = [blip.qformer.register_forward_hook(record("qformer")),
             query.register_forward_hook(record("cross-attention query"))]
    size = blip.config.vision_config.image_size
    embeds = encode_images(blip, torch.randn(2, 3, size, size))
    assert embeds.dtype == torch.bfloat16  # the frozen ViT stays in model.dtype
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = query_features(blip, embeds)
    for h in hooks:
        h.remove()
    assert seen == {"cross-attention query": torch.float32, "qformer": torch.float32}
    assert torch.isfinite(features).all()


def test_fp16_refused_for_t5_whichever_key_and_without_a_scaler(tiny_model_dirs, tmp_path: Path) -> None:
    from captune.train.setup import check_precision

    with pytest.raises(ConfigError, match=r"^config key 'train\.precision': fp16 overflows in T5"):
        load_config(None, ["model.family=t5", "train.precision=fp16"])
    for key in ("model.dtype", "train.precision"):
        cfg = load_config(None, [f"{key}=fp16", "train.precision=fp16" if key == "model.dtype" else "model.dtype=fp32"])
        with pytest.raises(ConfigError, match=rf"^config key '{key}': fp16 overflows in T5") as err:
            check_precision(cfg, "t5")  # family `auto`, detected as t5 at load time
        assert "\n" not in str(err.value)
    # family auto + tiny T5 + train.precision fp16: refused by train() once the family is known
    data = colour_dataset(tmp_path / "data")
    cfg = tiny_train_config(tiny_model_dirs["t5"], data, tmp_path, "t5fp16", "train.precision=fp16")
    with pytest.raises(ConfigError, match=r"train\.precision': fp16 overflows in T5"):
        train(cfg, progress=False)
    assert not (tmp_path / "t5fp16" / "train" / "log.jsonl").exists()
    # fp16 weights without fp16 mixed precision (the only mode with a gradient scaler) are refused
    for precision in ("fp32", "bf16"):
        cfg = load_config(None, ["model.dtype=fp16", f"train.precision={precision}"])
        with pytest.raises(ConfigError, match=r"^config key 'train\.precision': model\.dtype fp16 .* gradient scaler"):
            check_precision(cfg, "opt")
    check_precision(load_config(None, ["model.dtype=fp16", "train.precision=fp16"]), "opt")  # scaled: allowed


def test_step_with_inf_gradient_is_skipped_and_counted(tiny_model_dirs, tmp_path: Path, monkeypatch) -> None:
    """A finite loss whose gradients are inf (injected by a hook on one LoRA weight at step 2) must not
    reach the optimizer: before, clipping turned them into NaN and the adapter was poisoned."""
    import captune.model.lora as lora_module

    real_apply = lora_module.apply_lora
    calls = {"n": 0}

    def poisoned(model, cfg, family):
        peft_model, placement = real_apply(model, cfg, family)
        param = next(p for n, p in peft_model.named_parameters() if "lora_B" in n)

        def hook(grad: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            return grad + float("inf") if calls["n"] == 2 else grad

        param.register_hook(hook)
        return peft_model, placement

    monkeypatch.setattr(lora_module, "apply_lora", poisoned)
    data = colour_dataset(tmp_path / "data")
    cfg = tiny_train_config(tiny_model_dirs["opt"], data, tmp_path, "inf", "train.max_steps=4",
                            "train.checkpoint_every=1", "train.keep_checkpoints=10")
    result = train(cfg, progress=False)
    assert calls["n"] == 4 and result.bad_steps == 1 and result.steps == 4
    log = [json.loads(x) for x in (tmp_path / "inf" / "train" / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["skipped"]) for r in log if "skipped" in r] == [(2, "non-finite gradient norm")]
    assert json.loads((tmp_path / "inf" / "train" / "summary.json").read_text())["bad_steps"] == 1
    ckpt = tmp_path / "inf" / "train" / "checkpoints"
    weights = [load_file(str(ckpt / f"step-{s}" / "adapter" / "adapter_model.safetensors")) for s in (1, 2, 3)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # step 2 changed nothing
    assert any(not torch.equal(weights[1][k], weights[2][k]) for k in weights[0])  # step 3 trained again
    final = load_file(str(tmp_path / "inf" / "adapter" / "adapter_model.safetensors"))
    assert all(torch.isfinite(v).all() for v in final.values())


# ----------------------------------------------------------------------------- 5. lora.adapt_vision


def test_adapt_vision_trains_the_vision_lora_weights(tiny_model_dirs, tmp_path: Path, capsys, monkeypatch) -> None:
    from captune.generate.captioner import Captioner
    from captune.grid.run import run_grid
    from captune.model.features import encode_images, pixel_values
    from captune.model.load import load_blip2

    data = colour_dataset(tmp_path / "data", val=True)
    refused = tiny_train_config(tiny_model_dirs["opt"], data, tmp_path, "cached", "lora.adapt_vision=true",
                                "train.feature_cache=memory")
    with pytest.raises(ConfigError, match=r"^config key 'train\.feature_cache': lora\.adapt_vision"):
        train(refused, progress=False)
    cfg = tiny_train_config(tiny_model_dirs["opt"], data, tmp_path, "vision", "lora.adapt_vision=true",
                            "train.max_steps=3", "train.checkpoint_every=3", "generate.max_new_tokens=2",
                            "eval.systems=[{name: base}, {name: tuned, adapter: true}]")
    capsys.readouterr()
    summary = train(cfg, progress=False).summary
    out = capsys.readouterr().out
    assert out.count("feature cache off") == 1 and summary["feature_cache"] == "off"
    vision = [m for m in summary["lora_modules"] if m.startswith("vision_model.")]
    assert vision and all(m.endswith("self_attn.qkv") for m in vision)
    weights = load_file(str(tmp_path / "vision" / "adapter" / "adapter_model.safetensors"))
    vision_b = {k: v for k, v in weights.items() if "vision_model" in k and "lora_B" in k}
    assert len(vision_b) == len(vision)
    assert all(v.abs().sum() > 0 for v in vision_b.values())  # peft starts lora_B at zero: these trained

    # The grid: base systems see the base ViT's features, adapter systems the adapted ViT's.
    seen: list[tuple[bool, torch.Tensor]] = []
    real = Captioner.lm_inputs

    def spy(self, image_embeds, adapter):
        seen.append((adapter, image_embeds.clone()))
        return real(self, image_embeds, adapter)

    monkeypatch.setattr(Captioner, "lm_inputs", spy)
    run_grid(cfg, progress=False, score=False)
    records = load_dataset_from_config(cfg.data).select(cfg.data.eval_split)
    loaded = load_blip2(cfg.model)
    base = encode_images(loaded.model, pixel_values([r.path for r in records], loaded.processor.image_processor))
    by_state = {state: torch.cat([e for s, e in seen if s == state]) for state in (False, True)}
    assert torch.allclose(by_state[False], base, atol=1e-5)
    assert not torch.allclose(by_state[True], base, atol=1e-3)


def test_adapt_vision_needs_a_vision_module() -> None:
    from captune.config import LoraConfig
    from captune.model.lora import plan_placement
    from captune.model.tiny import TinySpec, build_tiny_blip2

    model, _ = build_tiny_blip2(TinySpec(family="opt"))
    plain = plan_placement(model, LoraConfig(), "opt").modules
    assert not any(m.startswith("vision_model.") for m in plain)
    with_vision = plan_placement(model, LoraConfig(adapt_vision=True), "opt").modules
    assert set(with_vision) - set(plain) == {f"vision_model.encoder.layers.{i}.self_attn.qkv"
                                              for i in range(model.config.vision_config.num_hidden_layers)}
    custom = LoraConfig(preset="custom", target_regex=r"qformer\..*\.query", adapt_vision=True)
    with pytest.raises(ConfigError, match=r"^config key 'lora\.adapt_vision': .* no vision_model module"):
        plan_placement(model, custom, "opt")
