"""Issue 16 items 3-5: no adapter selection on evaluated images; Q-Former precision and non-finite
gradients; `lora.adapt_vision` trains the vision LoRA weights."""

from __future__ import annotations

from pathlib import Path

import pytest

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
