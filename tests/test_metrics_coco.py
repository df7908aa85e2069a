"""COCO metrics equal pycocoevalcap's; METEOR's JVM handling is safe on hostile input."""

from __future__ import annotations

import contextlib
import io
import json
import random
import stat
import threading
from pathlib import Path

import numpy as np
import pytest

from captune.metrics import coco
from captune.metrics.java import JavaRuntime, find_java
from captune.metrics.meteor import (
    MeteorError,
    MeteorProcess,
    aggregable,
    clean_segment,
    meteor_from_stats,
    score_line,
)
from captune.metrics.spice import spice_status
from captune.metrics.suite import Scorer
from captune.metrics.tokenize import fallback_tokenize, ptb_tokenize

pycoco = pytest.importorskip("pycocoevalcap")
needs_java = pytest.mark.skipif(not find_java().available, reason=f"no Java runtime: {find_java().source}")

VOCAB = [
    "a", "an", "the", "dog", "dogs", "man", "woman", "child", "boy", "girl", "runs", "running", "jumps", "on",
    "in", "at", "with", "red", "blue", "ball", "grass", "water",
]


@pytest.fixture(scope="module")
def meteor() -> MeteorProcess:
    process = MeteorProcess.shared()
    if not process.available:
        pytest.skip(process.unavailable_reason or "METEOR unavailable")
    return process


@pytest.fixture(scope="module")
def flickr(flickr8k_dir: Path) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """300 Flickr8K test images: raw refs, and hypotheses (another image's caption or a perturbed ref)."""
    data = json.loads((flickr8k_dir.parent / "flickr8k" / "dataset_flickr8k.json").read_text(encoding="utf-8"))
    images = [im for im in data["images"] if im["split"] == "test"][:300]
    refs = {k: [s["raw"] for s in im["sentences"]] for k, im in enumerate(images)}
    rng = random.Random(0)
    hyps = {}
    for k in refs:
        if k % 2:
            hyps[k] = [refs[(k + 3) % len(refs)][rng.randrange(5)]]
        else:
            words = refs[k][rng.randrange(5)].split()
            rng.shuffle(words[: len(words) // 2])
            hyps[k] = [" ".join(words[:-1])]
    return refs, hyps


def _pycoco_tokenize(captions: dict[int, list[str]]) -> dict[int, list[str]]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})


def _generated(n: int = 150, seed: int = 1) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    rng = random.Random(seed)
    refs = {
        i: [" ".join(rng.choices(VOCAB, k=rng.randint(3, 14))) for _ in range(rng.randint(1, 5))] for i in range(n)
    }
    hyps = {i: [" ".join(rng.choices(VOCAB, k=rng.randint(0, 16)))] for i in range(n)}
    hyps[0] = [""]
    hyps[1] = [refs[1][0]]
    return refs, hyps


def _assert_same(ours: tuple, theirs: tuple) -> None:
    for mine, ref in zip(ours[:2], theirs[:2], strict=True):
        np.testing.assert_allclose(
            np.asarray(mine, dtype=float), np.asarray(ref, dtype=float), rtol=0, atol=1e-12
        )


def _compare_python_metrics(gts: dict[int, list[str]], res: dict[int, list[str]]) -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    with contextlib.redirect_stdout(io.StringIO()):
        _assert_same(coco.Bleu(4).compute_score(gts, res), Bleu(4).compute_score(gts, res))
    _assert_same(coco.Cider().compute_score(gts, res), Cider().compute_score(gts, res))
    _assert_same(coco.RougeL().compute_score(gts, res), Rouge().compute_score(gts, res))


@needs_java
def test_ptb_tokenizer_matches_pycocoevalcap(flickr) -> None:
    refs, hyps = flickr
    theirs = _pycoco_tokenize({k: refs[k] + hyps[k] for k in list(refs)[:100]})
    texts = [t for k in list(refs)[:100] for t in refs[k] + hyps[k]]
    assert ptb_tokenize(texts) == [t for k in list(refs)[:100] for t in theirs[k]]


def test_fallback_tokenizer_agrees_with_ptb_on_plain_captions() -> None:
    got = fallback_tokenize(["A dog, running (fast) in the \"park\"!"])
    assert got == ["a dog running -lrb- fast -rrb- in the park"]


@needs_java
def test_bleu_cider_rouge_equal_pycocoevalcap_on_flickr8k(flickr) -> None:
    refs, hyps = flickr
    tokens = _pycoco_tokenize({k: refs[k] + hyps[k] for k in refs})
    gts = {k: v[:-1] for k, v in tokens.items()}
    res = {k: v[-1:] for k, v in tokens.items()}
    _compare_python_metrics(gts, res)


def test_bleu_cider_rouge_equal_pycocoevalcap_on_generated_data() -> None:
    gts, res = _generated()
    _compare_python_metrics(gts, res)


@needs_java
def test_meteor_equals_pycocoevalcap_end_to_end(flickr, meteor: MeteorProcess) -> None:
    """pycocoevalcap's own Meteor (its own JVM) against ours on 60 Flickr8K images."""
    from pycocoevalcap.meteor.meteor import Meteor

    refs, hyps = flickr
    tokens = _pycoco_tokenize({k: refs[k] + hyps[k] for k in list(refs)[:60]})
    gts = {k: v[:-1] for k, v in tokens.items()}
    res = {k: v[-1:] for k, v in tokens.items()}
    theirs = Meteor()
    try:
        expected = theirs.compute_score(gts, res)
    finally:
        theirs.__del__()
    got = coco.Meteor(meteor).compute_score(gts, res)
    assert abs(got[0] - expected[0]) < 1e-9
    np.testing.assert_allclose(got[1], expected[1], rtol=0, atol=1e-9)


def test_score_line_is_what_pycocoevalcap_sends() -> None:
    from pycocoevalcap.meteor.meteor import Meteor

    class _Pipe:
        def __init__(self) -> None:
            self.sent = b""

        def write(self, data: bytes) -> None:
            self.sent += data

        def flush(self) -> None:
            pass

        def readline(self) -> bytes:
            return b"0 0\n"

        def close(self) -> None:
            pass

    fake = object.__new__(Meteor)
    fake.lock = threading.Lock()  # what its __del__ needs
    fake.meteor_p = type("P", (), {"stdin": _Pipe(), "stdout": _Pipe(), "kill": lambda self: None,
                                   "wait": lambda self: 0})()
    refs = ["a dog runs on the grass", "the dog is running"]
    fake._stat("a dog running on grass", refs)
    assert fake.meteor_p.stdin.sent.decode() == score_line("a dog running on grass", refs) + "\n"


@needs_java
def test_meteor_formula_equals_the_jar(flickr, meteor: MeteorProcess) -> None:
    """meteor_from_stats reproduces the jar's EVAL per segment and for the aggregate."""
    refs, hyps = flickr
    tokens = _pycoco_tokenize({k: refs[k] + hyps[k] for k in list(refs)[:120]})
    pairs = [(v[-1], v[:-1]) for v in tokens.values()]
    pairs += [("", ["a dog"]), ("a dog", ["a dog"]), ("a dog runs", [""]), ("x y z", ["a b c"])]
    pairs += [(p[1][0], p[1]) for p in pairs[:20]]  # perfect matches: they add no chunk to the aggregate
    stats = meteor.segment_stats(pairs)
    per_segment, aggregate = meteor.eval_stats(stats)
    np.testing.assert_allclose(meteor_from_stats(stats), per_segment, rtol=0, atol=1e-12)
    np.testing.assert_allclose(meteor_from_stats(aggregable(stats)), per_segment, rtol=0, atol=1e-12)
    assert abs(float(meteor_from_stats(aggregable(stats).sum(0))) - aggregate) < 1e-12
    assert abs(float(meteor_from_stats(stats.sum(0))) - aggregate) > 1e-6  # the plain sum would be wrong


@needs_java
def test_hostile_captions_give_numbers_not_hangs(meteor: MeteorProcess) -> None:
    refs = {1: ["a dog runs on the grass", "a brown dog"], 2: ["two people ||| walk"], 3: ["café crème — “naïve”"],
            4: ["a man\nwith a hat"], 5: ["a cat"]}
    long_caption = " ".join(random.Random(0).choices(VOCAB, k=1000))
    captions = {1: "", 2: "people ||| walking |||", 3: "un café crème 😀", 4: "a man\r\nin a hat\u2028ok",
                5: long_caption}
    with Scorer(refs, metrics=["coco", "rouge", "nltk", "diversity"], bootstrap_samples=50, meteor=meteor) as scorer:
        result = scorer.score({"edge": captions})["edge"]
    assert "coco/METEOR" not in scorer.unavailable
    for name in ("coco/BLEU-4", "coco/METEOR", "coco/CIDEr", "coco/ROUGE-L", "rouge/ROUGE-L"):
        per_image = result.metrics[name].per_image
        assert per_image is not None and np.isfinite(per_image).all(), name
    assert result.metrics["coco/METEOR"].per_image[0] == 0.0  # the empty caption


@needs_java
def test_single_image(meteor: MeteorProcess) -> None:
    with Scorer({7: ["a dog runs"]}, metrics=["coco"], bootstrap_samples=20, meteor=meteor) as scorer:
        result = scorer.score({"one": {7: "a dog runs"}})["one"]
    assert result.metrics["coco/BLEU-1"].value == pytest.approx(1.0)
    assert result.metrics["coco/METEOR"].value > 0.9
    assert result.metrics["coco/CIDEr"].value == 0.0  # one image: every n-gram has idf log(1/1) = 0


def test_clean_segment_keeps_protocol_intact() -> None:
    assert clean_segment("a ||| b\nc\r\nd  e") == "a b c d e"
    assert "\n" not in score_line("x\ny", ["a\u2028b", "c ||| d"])
    assert score_line("x\ny", ["a\u2028b", "c ||| d"]).count("|||") == 3


def _fake_java(tmp_path: Path, body: str) -> JavaRuntime:
    script = tmp_path / "java"
    script.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return JavaRuntime(str(script), "test")


def test_dying_jvm_is_an_error_not_a_hang(tmp_path: Path) -> None:
    process = MeteorProcess(_fake_java(tmp_path, "echo boom >&2; exit 3"), startup_timeout=20)
    with pytest.raises(MeteorError, match=r"exited|closed its input"):
        process.segment_stats([("a", ["a"])])
    assert process.unavailable_reason and "boom" in process.unavailable_reason


def test_silent_jvm_times_out_and_is_killed(tmp_path: Path) -> None:
    process = MeteorProcess(_fake_java(tmp_path, "exec sleep 60"), startup_timeout=1)
    with pytest.raises(MeteorError, match="no answer"):
        process.warm_up()
    assert process._proc is None


def test_without_java_meteor_is_unavailable_and_the_rest_computes() -> None:
    no_java = JavaRuntime(None, "no Java runtime found (test)")
    refs = {1: ["a dog runs"], 2: ["a cat sleeps"]}
    with Scorer(refs, metrics=["coco"], bootstrap_samples=20, java=no_java, meteor=MeteorProcess(no_java)) as scorer:
        result = scorer.score({"s": {1: "a dog", 2: "a cat"}})["s"]
    assert scorer.unavailable["coco/METEOR"].startswith("METEOR unavailable: no Java runtime")
    assert scorer.unavailable["coco/SPICE"].startswith("SPICE unavailable")
    assert "coco/BLEU-1" in result.metrics and "coco/CIDEr" in result.metrics
    assert any("NLTK Treebank fallback" in note for note in scorer.notes)


def test_reduced_paraphrase_table_keeps_what_can_match(tmp_path: Path, monkeypatch) -> None:
    import gzip

    from captune.metrics import meteor_tables as meteor_module

    source = tmp_path / "paraphrase-en.gz"
    source.write_bytes(gzip.compress(b"0.5\nbig dog\nlarge dog\n0.4\nzebra\nokapi\n0.3\nokapi\n3.5-inch\n"))
    monkeypatch.setattr(meteor_module, "meteor_paraphrase", lambda: source)
    monkeypatch.setenv("CAPTUNE_CACHE_DIR", str(tmp_path / "cache"))
    vocab = meteor_module.paraphrase_vocabulary(["a big dog", "a 3.5-inch screen"])
    assert {"big", "dog", "3.5-inch", "3.5", "3", "5", "inch", "-"} <= vocab
    assert meteor_module.cached_paraphrase_table(vocab) is None
    table = meteor_module.build_paraphrase_table(vocab)
    # kept: an entry one of whose phrases lies wholly in the reference vocabulary
    assert gzip.decompress(table.read_bytes()) == b"0.5\nbig dog\nlarge dog\n0.3\nokapi\n3.5-inch\n"
    assert meteor_module.cached_paraphrase_table({"big", "dog"}) == table  # a covered vocabulary reuses it
    assert meteor_module.cached_paraphrase_table(vocab | {"cat"}) is None


def test_spice_reports_why_it_cannot_run() -> None:
    reason = spice_status()
    if reason is not None:  # here: CoreNLP jars absent, and we never download them
        assert reason.startswith("SPICE unavailable: ") and "\n" not in reason
