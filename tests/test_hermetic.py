"""captune's own lookup variables hide Java and WordNet, so every test can force the condition it checks on a
machine that has them (and CI runs the parts that differ both ways)."""

from __future__ import annotations

from captune.metrics.java import find_java
from captune.metrics.nltk_wordnet import load_wordnet


def test_captune_java_none_hides_java(monkeypatch, tmp_path) -> None:
    java = tmp_path / "java"
    java.write_text("#!/bin/sh\nexit 0\n")
    java.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))  # a java on PATH that the lookup would otherwise find
    monkeypatch.delenv("CAPTUNE_JAVA", raising=False)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert find_java().path == str(java)
    monkeypatch.setenv("CAPTUNE_JAVA", "none")
    runtime = find_java()
    assert not runtime.available and "CAPTUNE_JAVA=none" in runtime.source


def test_captune_java_none_makes_meteor_unavailable(monkeypatch) -> None:
    from captune.metrics import Scorer

    monkeypatch.setenv("CAPTUNE_JAVA", "none")
    with Scorer({1: ["a dog runs"], 2: ["a cat sleeps"]}, metrics=["coco"], bootstrap_samples=10) as scorer:
        result = scorer.score({"s": {1: "a dog", 2: "a cat"}})["s"]
    assert scorer.unavailable["coco/METEOR"].startswith("METEOR unavailable: Java hidden by CAPTUNE_JAVA=none")
    assert "coco/CIDEr" in result.metrics


def test_captune_wordnet_dir_none_hides_wordnet_at_once(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("CAPTUNE_WORDNET_DIR", raising=False)
    before = load_wordnet()  # found or not, depending on the machine; cached
    monkeypatch.setenv("CAPTUNE_WORDNET_DIR", "none")
    source, reason = load_wordnet()
    assert source is None and reason.startswith("nltk/METEOR unavailable: WordNet hidden")
    monkeypatch.delenv("CAPTUNE_WORDNET_DIR")
    assert load_wordnet()[1] == before[1]
