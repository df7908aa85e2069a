"""Where the model runs: `model.device` (auto | cpu | cuda | cuda:N | mps) resolved in one place.

Train, grid, caption, export and the report all ask `resolve_device`, so a GPU machine never trains
on the GPU and then captions on the CPU. `auto` is the `accelerate` process's device when one is
given (under `accelerate launch` each process its own GPU), else CUDA when torch sees a GPU, else
CPU; MPS only when asked for (some ops fall back to the CPU there).
"""

from __future__ import annotations

import torch

from captune.config import check_device
from captune.env import launched_processes
from captune.errors import ConfigError

WHERE = "config key 'model.device'"


def _cuda(index: int | None, spec: str, where: str) -> torch.device:
    if not torch.cuda.is_available():
        raise ConfigError(f"{where}: {spec!r} asked for but torch sees no CUDA GPU (torch {torch.__version__}); "
                          "set it to cpu or auto")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if index is None else index
    if index >= count:
        raise ConfigError(f"{where}: {spec!r} but this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index)


def _launched() -> bool:
    """True inside `accelerate launch` / torchrun with more than one process."""
    return launched_processes() > 1


def resolve_device(spec: str = "auto", accelerator=None, where: str = WHERE) -> torch.device:
    """The torch device for `spec` (always with an index for CUDA, so records say which GPU)."""
    spec = check_device(spec, where)
    if accelerator is not None and (spec == "auto" or (spec == "cuda" and accelerator.device.type == "cuda")):
        dev = accelerator.device
        return _cuda(dev.index, spec, where) if dev.type == "cuda" else dev
    if spec == "auto":
        return _cuda(None, spec, where) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{where}: 'mps' asked for but torch sees no Apple GPU; set it to cpu or auto")
        return torch.device("mps")
    if ":" in spec and (_launched() or (accelerator is not None and accelerator.num_processes > 1)):
        raise ConfigError(f"{where}: {spec!r} would put every process of `accelerate launch` on one GPU; "
                          "use cuda or auto (each process gets its own)")
    return _cuda(int(spec.split(":")[1]) if ":" in spec else None, spec, where)


def make_accelerator(spec: str, mixed_precision: str):
    """An `accelerate.Accelerator` on the device `spec` names (for cuda:N in one process: GPU N)."""
    from accelerate import Accelerator

    spec = check_device(spec)
    if _launched() and spec in ("auto", "cuda"):  # accelerate gives each process its own GPU (or gloo on CPUs)
        if spec == "cuda":
            resolve_device(spec)  # refused in one line without a GPU
        return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())
    target = resolve_device(spec)
    if target.type == "cuda":
        torch.cuda.set_device(target)  # Accelerator's single-process device is the current CUDA device
    return Accelerator(mixed_precision=mixed_precision, cpu=target.type == "cpu")


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's weights actually are (what a stage records: the fact, not the request)."""
    return next(model.parameters()).device


DTYPE_NAMES = ("fp32", "bf16", "fp16")


def cli_overrides(device: str | None, dtype: str | None) -> list[str]:
    """`--device` / `--dtype` checked (errors name the flag) and turned into `--set` overrides of model.*."""
    out = []
    if device is not None:
        out.append(f"model.device={check_device(device, '--device')}")
    if dtype is not None:
        if dtype not in DTYPE_NAMES:
            raise ConfigError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPE_NAMES)}")
        out.append(f"model.dtype={dtype}")
    return out
