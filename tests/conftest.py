"""Shared test setup: one torch thread (2-core machines slow ~100x with 2 busy threads) and ../shared lookup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """The real-data folder: $CAPTUNE_SHARED, else ../shared beside the checkout."""
    return Path(os.environ.get("CAPTUNE_SHARED", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    root = shared_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set CAPTUNE_SHARED to use a copy)")
    return root


@pytest.fixture(scope="session")
def flickr8k_dir(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "flickr8k"
    if not (path / "Flickr8k_text" / "Flickr8k.token.txt").is_file():
        pytest.skip(f"Flickr8K not found under {path}")
    return path


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny OPT and T5 BLIP-2 models saved once per session in Hugging Face layout."""
    from captune.model.tiny import TinySpec, save_tiny

    root = tmp_path_factory.mktemp("tiny-models")
    return {family: save_tiny(root / family, TinySpec(family=family)) for family in ("opt", "t5")}
