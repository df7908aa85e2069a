"""Multi-process launches: DDP with a shared disk feature cache works; DeepSpeed / FSDP are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from captune.cli import main
from captune.errors import ConfigError
from captune.model import features
from captune.model.features import VisionFeatureStore
from captune.train.distributed import fill_store
from captune.train.loop import train
from train_helpers import colour_dataset, tiny_train_config


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory) -> Path:
    return colour_dataset(tmp_path_factory.mktemp("colours"), per_colour=2)


# --- refused launches -------------------------------------------------------------------------

@pytest.mark.parametrize("var", ["ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP"])
def test_sharded_launch_env_is_refused(var: str, tiny_model_dirs, colour_data: Path, tmp_path: Path,
                                       monkeypatch, capsys) -> None:
    monkeypatch.setenv(var, "true")
    cfg = tiny_train_config(tiny_model_dirs["opt"], colour_data, tmp_path, "refused")
    with pytest.raises(ConfigError, match="accelerate launch --num_processes N"):
        train(cfg, progress=False)
    assert not (tmp_path / "refused").exists()  # refused before anything was written
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(f"model:\n  name_or_path: {tiny_model_dirs['opt']}\ndata:\n  path: {colour_data}\n"
                        f"output_dir: {tmp_path}\ntrain:\n  batch_size: 4\n")
    assert main(["train", str(cfg_path)]) == 1
    err = capsys.readouterr().err
    engine = "DeepSpeed" if "DEEPSPEED" in var else "FSDP"
    assert engine in err and "--num_processes" in err and err.strip().count("\n") == 0


@pytest.mark.parametrize("kind", ["DEEPSPEED", "FSDP"])
def test_sharded_accelerator_state_is_refused(kind: str, tiny_model_dirs, colour_data: Path, tmp_path: Path,
                                              monkeypatch) -> None:
    """A state set up without the env switches (e.g. in a notebook) is refused by its distributed_type."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda self: DistributedType[kind]))
    cfg = tiny_train_config(tiny_model_dirs["opt"], colour_data, tmp_path, "refused")
    with pytest.raises(ConfigError, match=r"not supported.*--num_processes"):
        train(cfg, progress=False)


def test_eval_refuses_sharded_launch(tiny_model_dirs, colour_data: Path, tmp_path: Path, monkeypatch) -> None:
    from captune.grid.run import run_grid

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "1")
    cfg = tiny_train_config(tiny_model_dirs["opt"], colour_data, tmp_path, "refused")
    with pytest.raises(ConfigError, match="FSDP launches are not supported"):
        run_grid(cfg, progress=False, score=False)


def test_plain_env_is_not_refused(monkeypatch) -> None:
    from captune.train.distributed import refuse_unsupported_launch

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "false")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "")
    refuse_unsupported_launch("MULTI_CPU")
    refuse_unsupported_launch(None)


# --- the disk feature cache with several writers -----------------------------------------------

def test_two_writers_never_replace_each_others_shard(tmp_path: Path, monkeypatch) -> None:
    """Two stores on one folder writing at the same moment (B's write lands between A naming its
    shard and renaming it): numbering shards by the count already there gave both the same name."""
    a, b = VisionFeatureStore("ns", tmp_path), VisionFeatureStore("ns", tmp_path)
    original = features.save_file
    nested = []

    def save_file(tensors, path):
        if not nested:
            nested.append(True)
            b.put(["kb"], torch.full((1, 2, 3), 2.0))
        original(tensors, path)

    monkeypatch.setattr(features, "save_file", save_file)
    a.put(["ka"], torch.full((1, 2, 3), 1.0))
    assert torch.equal(b.get(["kb"]), torch.full((1, 2, 3), 2.0, dtype=torch.float16))
    fresh = VisionFeatureStore("ns", tmp_path)
    assert len(fresh) == 2 and float(fresh.get(["ka"]).max()) == 1.0


class _Processor:
    """The image processor interface `encode_readable` uses: mean colour as a 3-value 'image'."""

    size: ClassVar[dict[str, int]] = {"height": 8, "width": 8}

    def __call__(self, images, return_tensors="pt"):
        return {"pixel_values": torch.stack([torch.tensor(img.resize((1, 1)).getpixel((0, 0)), dtype=torch.float32)
                                             for img in images])}


def test_fill_store_splits_the_work_and_shares_it(tmp_path: Path) -> None:
    """Two processes (threads here) each encode half the images, then read the other half."""
    paths = []
    for i in range(7):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (8, 8), (i, 2 * i, 3 * i)).save(paths[-1])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    paths.insert(3, tmp_path / "broken.png")
    keys = [str(p) for p in paths] + [str(paths[0])]  # a repeated image is encoded once
    paths.append(paths[0])
    encoded: list[list[str]] = [[], []]
    errors: list[dict[int, str]] = [{}, {}]
    stores = [VisionFeatureStore("ns", tmp_path / "cache", torch.float32) for _ in range(2)]
    barrier = threading.Barrier(2)

    def process(rank: int) -> None:
        def encode(pix: torch.Tensor) -> torch.Tensor:
            encoded[rank].extend(str(float(v)) for v in pix[:, 0])
            return pix[:, None, :]

        errors[rank] = fill_store(paths, keys, stores[rank], encode, _Processor(), 2, rank, 2, barrier.wait)

    threads = [threading.Thread(target=process, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    # 7 readable images: 4 + 3 (the broken one fell in process 1's share), none encoded twice
    assert sorted(len(e) for e in encoded) == [3, 4] and not set(encoded[0]) & set(encoded[1])
    assert list(errors[0]) == list(errors[1]) == [3]  # each process names the broken file itself
    for store in stores:
        got = store.get([k for i, k in enumerate(keys) if i != 3])
        assert got[:, 0, 0].tolist() == [float(i) for i in range(7)] + [0.0]


# --- DDP: two processes over gloo with the disk cache ------------------------------------------

def test_ddp_two_processes_share_the_disk_cache(tiny_model_dirs, colour_data: Path, tmp_path: Path) -> None:
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(
        f"name: one\noutput_dir: {tmp_path}\nmodel:\n  name_or_path: {tiny_model_dirs['opt']}\n"
        f"data:\n  path: {colour_data}\ntrain:\n  batch_size: 4\n  lr: 0.003\n  warmup_steps: 1\n  max_steps: 4\n"
        "  checkpoint_every: 2\n  tensorboard: false\n  prompt: ''\n  seed: 3\n  feature_cache: disk\n"
        "lora:\n  dropout: 0.0\n"
    )
    assert main(["train", "--no-progress", str(cfg_path), "--set", f"train.feature_cache_dir={tmp_path / 'c1'}"]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", CAPTUNE_NO_PROGRESS="1")
    # torchrun, not `accelerate launch --cpu`: the latter starts one process on CPU (it needs MPI for more)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541",
           "-m", "captune", "train", str(cfg_path), "--no-progress", "--set", "name=two",
           "--set", f"train.feature_cache_dir={tmp_path / 'c2'}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]

    summary = json.loads((tmp_path / "two" / "train" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["feature_cache"] == "disk"
    # Every image encoded once, half by each process, in shards no one replaced or left half-written.
    (namespace,) = (tmp_path / "c2").iterdir()
    keys_by_writer: dict[str, list[str]] = {}
    for shard in namespace.glob("shard-*.safetensors"):
        with safe_open(shard, framework="pt") as fh:
            keys_by_writer.setdefault(shard.name.split("-")[1], []).extend(fh.keys())
    all_keys = [k for ks in keys_by_writer.values() for k in ks]
    assert len(all_keys) == len(set(all_keys)) == 8
    assert sorted(len(ks) for ks in keys_by_writer.values()) == [4, 4]
    assert not list(namespace.glob(".*"))  # no temporary files left behind
    one = load_file(str(tmp_path / "one" / "adapter" / "adapter_model.safetensors"))
    two = load_file(str(tmp_path / "two" / "adapter" / "adapter_model.safetensors"))
    for key in one:
        assert torch.allclose(one[key], two[key], atol=2e-4, rtol=1e-2), key


@pytest.mark.parametrize("argv", [["run", "cfg.yaml"], ["demo"]])
def test_untested_launch_modes_are_refused_in_one_line(argv, monkeypatch, capsys):
    """Under torchrun / accelerate launch only `train`, `eval` and `sweep` are tested (data parallel); the
    other commands that combine stages refuse in one line instead of hanging or writing one report per process."""
    from captune.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"`captune {argv[0]}` runs in one process" in err[0] and "captune train" in err[0]
