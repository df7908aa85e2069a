"""What a user on a fresh machine meets: one cache root, removed keys named, optional parts said once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from captune.cache import cache_path, cache_root
from captune.config import load_config
from captune.errors import ConfigError


def test_cache_root_honours_override_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.delenv("CAPTUNE_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "captune"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "captune"
    monkeypatch.setenv("CAPTUNE_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_path("features") == tmp_path / "mine" / "features"


def test_every_cache_lives_under_the_root(monkeypatch, tmp_path):
    """Demo data and base, METEOR tables, the human baseline and WordNet all move with the variable."""
    from captune.demo.pipeline import default_cache_dir
    from captune.metrics import human, meteor_tables, nltk_wordnet

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CAPTUNE_CACHE_DIR", raising=False)
    root = tmp_path / "xdg" / "captune"
    assert default_cache_dir() == root / "demo"
    assert meteor_tables._table_dir() == root / "meteor"
    assert nltk_wordnet.wordnet_cache() == root / "nltk_data" / "corpora" / "wordnet"
    assert human.human_cache_path({1: ["a dog"]}, ["rouge"], 10, 0).parent == root / "human"
    assert load_config(None).train.feature_directory() == root / "features"
    assert load_config(None, ["train.feature_cache_dir=/elsewhere"]).train.feature_directory() == Path("/elsewhere")


@pytest.mark.parametrize("key", ["train.num_workers", "train.log_every"])
def test_removed_keys_say_they_were_removed(key):
    with pytest.raises(ConfigError, match=f"'{key}' was removed .*delete it"):
        load_config(None, [f"{key}=2"])


def test_tensorboard_missing_is_said_once(monkeypatch, tmp_path):
    from captune.train.setup import Logger

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    said: list[str] = []
    logger = Logger(tmp_path / "log.jsonl", 0, tmp_path / "tb", say=said.append)
    logger.write({"step": 1, "loss": 0.5})
    logger.write({"step": 2, "loss": 0.4})
    logger.close()
    assert len(said) == 1 and "TensorBoard is not installed" in said[0] and "captune[tensorboard]" in said[0]
    assert [json.loads(x)["step"] for x in Path(tmp_path / "log.jsonl").read_text().splitlines()] == [1, 2]
    assert not (tmp_path / "tb").exists()
