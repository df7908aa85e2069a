"""The machine and library versions a run used, recorded in its outputs so a report says what ran where."""

from __future__ import annotations

import os
import platform
from importlib import metadata

LIBRARIES = ("torch", "transformers", "peft", "accelerate", "captune")


def launched_processes() -> int:
    """How many processes `accelerate launch` / torchrun started for this job (WORLD_SIZE; 1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1").strip() or 1)


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_name() -> str:
    """NVIDIA GPUs from the driver's /proc files (no torch import: that costs seconds), else torch if loaded."""
    import glob
    import sys

    names = []
    for info in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
        try:
            with open(info, encoding="utf-8") as fh:
                names += [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("Model:")]
        except OSError:
            continue
    if names:
        return ", ".join(names)
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # a broken CUDA install must not stop a report
        return "unknown (CUDA query failed)"
    return "none found"


def environment_info() -> dict[str, str]:
    """CPU, GPU, Python, OS and library versions (flat strings, JSON-ready)."""
    info = {"CPU": f"{_cpu_name()} ({os.cpu_count() or 1} cores)", "GPU": _gpu_name(),
            "Python": platform.python_version(), "OS": platform.platform(terse=True)}
    info.update(library_versions())
    return info
