"""Checkpoints: complete or absent (temp dir + rename), tensors in safetensors, everything else JSON.

A checkpoint holds the LoRA weights (PEFT layout), AdamW state, scheduler, gradient-scaler and RNG
states, and the loop position, so that `--resume` ends with the same tensors as an unbroken run.
No pickle is written or read.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from captune.errors import UserError
from captune.faults import maybe_disk_full, maybe_kill
from captune.io import atomic_directory
from captune.model.adapters import PICKLE_SUFFIXES

STEP_DIR = re.compile(r"^step-(\d+)$")


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                          meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npm = meta["numpy"]
    np.random.set_state((npm[0], np.array(npm[1], dtype=np.uint32), npm[2], npm[3], npm[4]))


def save_checkpoint(directory: Path, step: int, peft_model, optimizer, scheduler, scaler, loop_state: dict,
                    count: int) -> Path:
    """Write `directory/step-N` atomically; a kill or a full disk leaves the previous one intact."""
    target = directory / f"step-{step}"
    try:
        with atomic_directory(target) as tmp:
            peft_model.save_pretrained(tmp / "adapter", safe_serialization=True)
            maybe_kill("checkpoint-write", count)
            maybe_disk_full("checkpoint", count)
            opt_tensors, opt_meta = _optimizer_to_files(optimizer)
            save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
            rng_tensors, rng_meta = rng_state()
            save_file(rng_tensors, str(tmp / "rng.safetensors"))
            state = {
                "step": step,
                "loop": loop_state,
                "optimizer": opt_meta,
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": rng_meta,
            }
            (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
    except OSError as exc:
        raise UserError(
            f"{target}: could not write checkpoint ({exc.strerror or exc}); the previous checkpoint is intact — "
            "free disk space and rerun with --resume"
        ) from None
    return target


def refuse_pickles(directory: Path) -> None:
    """captune never writes pickles, so one among the checkpoints is foreign: refuse it by name, never load it."""
    for path in directory.rglob("*"):
        if path.suffix in PICKLE_SUFFIXES and path.is_file():
            raise UserError(
                f"{path}: pickle checkpoint refused (loading it could run code); captune checkpoints are "
                "safetensors + JSON — move the file away, or start a new run with --set name=..."
            )


def complete_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """Finished checkpoints, oldest first (temp dirs and half-written ones are ignored; pickles refused)."""
    if not directory.is_dir():
        return []
    refuse_pickles(directory)
    found = []
    for child in directory.iterdir():
        m = STEP_DIR.match(child.name)
        if m and (child / "state.json").is_file() and (child / "adapter" / "adapter_model.safetensors").is_file():
            found.append((int(m.group(1)), child))
    return sorted(found)


def prune_checkpoints(directory: Path, keep: int) -> None:
    found = complete_checkpoints(directory)
    for _, path in found[: max(0, len(found) - keep)]:
        shutil.rmtree(path, ignore_errors=True)
    for leftover in directory.glob(".step-*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)


def load_checkpoint(path: Path, peft_model, optimizer, scheduler, scaler) -> dict:
    """Restore everything `save_checkpoint` wrote; returns the loop state."""
    from peft import set_peft_model_state_dict

    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    weights = load_file(str(path / "adapter" / "adapter_model.safetensors"))
    set_peft_model_state_dict(peft_model, weights)
    _optimizer_from_files(optimizer, load_file(str(path / "optimizer.safetensors")), state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(load_file(str(path / "rng.safetensors")), state["rng"])
    return state["loop"]
