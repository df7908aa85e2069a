"""`model.device`: resolved in one place, honoured and recorded by every stage; bad values are one line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from captune.cli import main
from captune.config import config_from_dict, load_config
from captune.errors import ConfigError
from captune.model import device as device_mod
from captune.model.device import resolve_device


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make torch report two CUDA GPUs (resolution logic only; nothing is placed on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def test_auto_picks_cuda_when_present_with_an_index(two_gpus) -> None:
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"model.device.*'cuda:2'.*2 CUDA GPU"):
        resolve_device("cuda:2")


def test_auto_is_cpu_without_a_gpu_and_cuda_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")  # no MPS unless asked for
    for spec in ("cuda", "cuda:0", "mps"):
        with pytest.raises(ConfigError) as info:
            resolve_device(spec)
        assert "model.device" in str(info.value) and "\n" not in str(info.value)


def test_each_launched_process_uses_its_own_device(two_gpus, monkeypatch: pytest.MonkeyPatch) -> None:
    rank1 = SimpleNamespace(device=torch.device("cuda", 1), num_processes=2)
    assert resolve_device("auto", rank1) == torch.device("cuda", 1)
    assert resolve_device("cuda", rank1) == torch.device("cuda", 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="every process"):
        resolve_device("cuda:0", rank1)
    single = SimpleNamespace(device=torch.device("cpu"), num_processes=1)
    assert resolve_device("auto", single) == torch.device("cpu")


def test_make_accelerator_on_cpu() -> None:
    accelerator = device_mod.make_accelerator("cpu", "no")
    assert accelerator.device == torch.device("cpu")
    assert resolve_device("cpu", accelerator) == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "CUDA", "cuda:", ""])
def test_bad_device_value_is_one_line_naming_the_key(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"model": {"device": bad}})
    assert str(info.value).startswith("config key 'model.device'") and "\n" not in str(info.value)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model:\n  device: '{bad}'\n")
    with pytest.raises(ConfigError, match=r"run.yaml: config key 'model.device'.*cuda:N"):
        load_config(cfg)


def test_bad_device_flags_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    for command in (["caption", str(image), "--model", "tiny-opt", "--device", "gpu"],
                    ["caption", str(image), "--model", "tiny-opt", "--dtype", "fp8"],
                    ["export", "--adapter", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "tpu"]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("--device" in err or "--dtype" in err), err
    if not torch.cuda.is_available():
        assert main(["caption", str(image), "--model", "tiny-opt", "--device", "cuda"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--device: 'cuda' asked for but torch sees no CUDA GPU" in err


# ----------------------------------------------------------------------------- every stage, end to end

SYSTEMS = """
eval:
  metrics: [rouge, diversity]
  bootstrap_samples: 50
  human_baseline: false
  systems:
    - {name: zero-shot-greedy}
    - {name: lora-greedy, adapter: true}
    - {name: lora-beam2, adapter: true, num_beams: 2}
"""


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory, tiny_model_dirs) -> tuple[Path, list]:
    """`captune run` with model.device=cpu and the resolver spied on: (config path, resolver calls)."""
    from captune.demo.synth import generate_synth
    from captune.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("device")
    generate_synth(root / "synth", scale=0.01, size=32)
    cfg_path = root / "run.yaml"
    cfg_path.write_text(
        f"name: cpu\noutput_dir: {root / 'runs'}\nmodel:\n  name_or_path: {tiny_model_dirs['opt']}\n  device: cpu\n"
        f"data:\n  path: {root / 'synth'}\ntrain:\n  max_steps: 4\n  batch_size: 8\n  lr: 0.003\n"
        "  tensorboard: false\n  prompt: a photo of\ngenerate:\n  max_new_tokens: 8\n" + SYSTEMS
    )
    calls: list = []
    original = device_mod.resolve_device
    patch = pytest.MonkeyPatch()
    patch.setattr(device_mod, "resolve_device", lambda spec="auto", accelerator=None, where=device_mod.WHERE:
                  calls.append(spec) or original(spec, accelerator, where))
    try:
        run_pipeline(load_config(cfg_path), progress=False)
    finally:
        patch.undo()
    return cfg_path, calls


def test_every_stage_records_the_device_it_ran_on(cpu_run) -> None:
    cfg_path, calls = cpu_run
    run = cfg_path.parent / "runs" / "cpu"
    assert calls and set(calls) == {"cpu"}  # train (accelerator + model) and grid resolved model.device
    assert len(calls) >= 3
    assert json.loads((run / "train" / "summary.json").read_text())["device"] == "cpu"
    assert json.loads((run / "adapter" / "captune_adapter.json").read_text())["trained_on"] == "cpu"
    scores = json.loads((run / "scores.json").read_text())
    assert scores["devices"] == {"zero-shot-greedy": "cpu", "lora-greedy": "cpu", "lora-beam2": "cpu"}
    assert json.loads((run / "grid_meta.json").read_text())["devices"]["lora-greedy"] == "cpu"
    report = (run / "report.md").read_text()
    assert "device: training" in report and "device: captioning" in report and "device asked for" in report


def test_export_records_its_device(cpu_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path, _ = cpu_run
    adapter = cfg_path.parent / "runs" / "cpu" / "adapter"
    assert main(["export", "--adapter", str(adapter), "--out", str(tmp_path / "a"), "--device", "cpu"]) == 0
    meta = json.loads((tmp_path / "a" / "captune_export.json").read_text())
    assert meta["device"] == "cpu" and meta["merged"] is False
    assert json.loads((tmp_path / "a" / "captune_adapter.json").read_text())["train_prompt"] == "a photo of"
    assert main(["export", "--adapter", str(adapter), "--out", str(tmp_path / "m"), "--merge"]) == 0
    assert json.loads((tmp_path / "m" / "captune_export.json").read_text())["device"] == "cpu"
    assert "exported on cpu" in capsys.readouterr().err


def test_eval_device_flag_overrides_the_config(cpu_run, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path, _ = cpu_run
    adapter = cfg_path.parent / "runs" / "cpu" / "adapter"
    assert main(["eval", str(cfg_path), "--set", "name=evalcpu", "--set", "model.device=cuda:7", "--device", "cpu",
                 "--adapter", str(adapter), "--no-progress"]) == 0
    run = cfg_path.parent / "runs" / "evalcpu"
    assert set(json.loads((run / "scores.json").read_text())["devices"].values()) == {"cpu"}
    assert "device: cpu" in (run / "config.yaml").read_text()


# ----------------------------------------------------------------------------- the adapter reproduces its system


def _grid_captions(run: Path, system: str) -> dict[int, str]:
    return {r["image_id"]: r["caption"] for r in json.loads((run / "predictions" / f"{system}.json").read_text())}


def _spy_settings(monkeypatch: pytest.MonkeyPatch) -> list:
    """The Decoding each `caption_paths` call gets."""
    from captune.generate.captioner import Captioner

    seen: list = []
    original = Captioner.caption_paths

    def spy(self, paths, settings, *args, **kwargs):
        seen.append(settings)
        return original(self, paths, settings, *args, **kwargs)

    monkeypatch.setattr(Captioner, "caption_paths", spy)
    return seen


def _caption_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[list[str], str]:
    assert main(["caption", *args, "--json"]) == 0
    out = capsys.readouterr()
    return [row["captions"][0] for row in json.loads(out.out)], out.err


def test_adapter_folder_records_what_was_evaluated(cpu_run, tiny_model_dirs) -> None:
    cfg_path, _ = cpu_run
    run = cfg_path.parent / "runs" / "cpu"
    record = json.loads((run / "adapter" / "captune_adapter.json").read_text())
    assert record["base_model"] == str(tiny_model_dirs["opt"]) and record["revision"] is None
    assert record["train_prompt"] == "a photo of" and record["generate"]["max_new_tokens"] == 8
    assert set(record["systems"]) == {"lora-greedy", "lora-beam2"}
    assert record["systems"]["lora-beam2"]["num_beams"] == 2
    # an adapter system naming no prompt continues the training prompt, as the default grid's LoRA rows do
    settings = json.loads((run / "scores.json").read_text())["system_settings"]
    assert settings["lora-greedy"]["prompt"] == "a photo of" and settings["zero-shot-greedy"]["prompt"] == ""
    assert record["systems"]["lora-greedy"]["prompt"] == settings["lora-greedy"]["prompt"]


def test_caption_with_adapter_gives_the_grids_lora_captions(cpu_run, capsys, monkeypatch) -> None:
    from captune.data import load_dataset_from_config

    cfg_path, _ = cpu_run
    run = cfg_path.parent / "runs" / "cpu"
    records = load_dataset_from_config(load_config(cfg_path).data).select("eval")[:4]
    paths = [str(r.path) for r in records]
    adapter = str(run / "adapter")
    captions, err = _caption_json(capsys, *paths, "--adapter", adapter)  # no --model: the adapter's base
    assert "captioning on cpu" in err
    assert captions == [_grid_captions(run, "lora-greedy")[r.image_id] for r in records]
    captions, _ = _caption_json(capsys, *paths, "--adapter", adapter, "--num-beams", "2", "--device", "cpu")
    assert captions == [_grid_captions(run, "lora-beam2")[r.image_id] for r in records]

    seen = _spy_settings(monkeypatch)
    _caption_json(capsys, paths[0], "--adapter", adapter, "--prompt", "")  # an explicit prompt wins
    assert seen[-1].prompt == "" and seen[-1].max_new_tokens == 8


def test_caption_honours_the_configs_generate_section(cpu_run, capsys, monkeypatch, tmp_path: Path) -> None:
    from captune.data import load_dataset_from_config

    cfg_path, _ = cpu_run
    run = cfg_path.parent / "runs" / "cpu"
    records = load_dataset_from_config(load_config(cfg_path).data).select("eval")[:3]
    paths = [str(r.path) for r in records]
    captions, _ = _caption_json(capsys, *paths, "--config", str(cfg_path))  # its model, its generate section
    assert captions == [_grid_captions(run, "zero-shot-greedy")[r.image_id] for r in records]

    seen = _spy_settings(monkeypatch)
    other = tmp_path / "other.yaml"
    other.write_text(cfg_path.read_text().replace("max_new_tokens: 8",
                                                  "max_new_tokens: 3\n  num_beams: 2\n  prompt: a picture of"))
    _caption_json(capsys, paths[0], "--config", str(other))
    assert (seen[-1].max_new_tokens, seen[-1].num_beams, seen[-1].prompt) == (3, 2, "a picture of")
    _caption_json(capsys, paths[0], "--config", str(other), "--max-new-tokens", "5", "--num-beams", "1")
    assert (seen[-1].max_new_tokens, seen[-1].num_beams) == (5, 1)
    _caption_json(capsys, paths[0], "--model", "tiny-opt")  # no config, no adapter: caption's own defaults
    assert (seen[-1].max_new_tokens, seen[-1].num_beams, seen[-1].prompt) == (30, 1, "")


def test_quantized_loading_needs_the_device_to_be_cuda(two_gpus) -> None:
    from captune.model.load import _quantization_config

    assert _quantization_config("none", torch.device("cpu")) is None
    with pytest.raises(ConfigError, match=r"model.quantization.*model.device is cpu"):
        _quantization_config("4bit", torch.device("cpu"))
