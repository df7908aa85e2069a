"""Scorer/score_systems: shared work gives the same numbers; the report is complete JSON; human baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from captune.errors import DataError
from captune.metrics import MeteorProcess, Scorer, human_report, score_systems
from captune.metrics.coco import Cider
from captune.metrics.human import rotations
from captune.metrics.java import find_java

REFS = {
    1: ["a dog runs on the grass", "a brown dog is running", "the dog plays outside"],
    2: ["two children play in the water", "kids splash in a pool", "two kids swimming"],
    3: ["a man rides a bike", "a cyclist on a road", "a man on a bicycle"],
    4: ["a woman holds an umbrella", "a lady with an umbrella in the rain", "woman walking in rain"],
}
SYSTEMS = {
    "good": {1: "a dog is running on grass", 2: "two kids play in water", 3: "a man riding a bike",
             4: "a woman with an umbrella"},
    "collapsed": {1: "a man", 2: "a man", 3: "a man", 4: "a man"},
    "same-as-good": {1: "a dog is running on grass", 2: "two kids play in water", 3: "a man riding a bike",
                     4: "a woman with an umbrella"},
}


@pytest.fixture(scope="module")
def meteor() -> MeteorProcess | None:
    return MeteorProcess.shared() if find_java().available else None


def test_report_schema_and_json(meteor) -> None:
    report = score_systems(SYSTEMS, REFS, bootstrap_samples=200, paired_trials=200, meteor=meteor)
    json.dumps(report, allow_nan=False)
    assert report["schema"] == "captune.scores/1" and report["images"] == 4 and report["image_ids"] == [1, 2, 3, 4]
    good = report["systems"]["good"]
    for key in ("coco/BLEU-4", "coco/CIDEr", "coco/ROUGE-L", "rouge/ROUGE-1", "rouge/ROUGE-2", "rouge/ROUGE-L",
                "nltk/BLEU-4", "div/TTR", "div/seq-rep-4", "div/Duplicate Rate", "div/distinct-2"):
        assert key in good["metrics"], key
    assert set(good["metrics"]["coco/CIDEr"]) == {"value", "ci_low", "ci_high", "ci_method"}
    assert len(good["per_image"]["coco/CIDEr"]) == 4
    lo, hi = good["metrics"]["coco/CIDEr"]["ci_low"], good["metrics"]["coco/CIDEr"]["ci_high"]
    assert lo <= good["metrics"]["coco/CIDEr"]["value"] <= hi
    assert report["systems"]["collapsed"]["metrics"]["div/Duplicate Rate"]["value"] == pytest.approx(0.75)
    assert report["systems"]["collapsed"]["top_captions"] == [["a man", 4]]
    assert report["aliases"]["Repetition Rate"] == "div/seq-rep-4"
    same = [c for c in report["comparisons"] if c["a"] == "same-as-good"]
    assert same and all(c["p_value"] == 1.0 and c["delta"] == 0 for c in same)
    for metric, why in report["unavailable"].items():
        assert why.split(":")[0].endswith("unavailable") and "\n" not in why, metric


def test_shared_work_changes_nothing(meteor) -> None:
    with Scorer(REFS, bootstrap_samples=100, meteor=meteor) as scorer:
        together = scorer.score(SYSTEMS)
    with Scorer(REFS, bootstrap_samples=100, meteor=meteor) as scorer:
        alone = {name: scorer.score({name: caps})[name] for name, caps in SYSTEMS.items()}
    for name in SYSTEMS:
        for key, metric in together[name].metrics.items():
            assert alone[name].metrics[key].value == metric.value, (name, key)
            assert alone[name].metrics[key].ci_low == metric.ci_low, (name, key)
    gts = {i: [t.lower() for t in REFS[i]] for i in REFS}
    cider, _ = Cider().compute_score(gts, {i: [SYSTEMS["good"][i]] for i in REFS})
    assert together["good"].metrics["coco/CIDEr"].value == pytest.approx(cider, abs=1e-12)


def test_predictions_must_match_the_references() -> None:
    with Scorer(REFS, metrics=["rouge"], bootstrap_samples=10) as scorer, pytest.raises(DataError, match="1 missing"):
        scorer.score({"partial": {1: "a", 2: "b", 3: "c"}})
    with pytest.raises(DataError, match="unknown metric family"):
        Scorer(REFS, metrics=["bleurt"])


def test_rotations_leave_one_out() -> None:
    rots = rotations({1: ["a", "b", "c"], 2: ["x", "y"], 3: ["only"]})
    assert len(rots) == 3
    rest, held = rots[2]
    assert held == {1: "c", 2: "x"} and rest == {1: ["a", "b"], 2: ["y"]}  # image 3 skipped; 2 cycles
    with pytest.raises(DataError):
        rotations({1: ["alone"]})


def test_human_baseline_report(meteor) -> None:
    report = human_report(REFS, metrics=["coco", "rouge", "diversity"], bootstrap_samples=100, meteor=meteor)
    human = report["systems"]["human"]["metrics"]
    rounds = report["human_baseline"]["rotations"]
    assert len(rounds) == 3
    assert human["rouge/ROUGE-L"]["value"] == pytest.approx(np.mean([r["rouge/ROUGE-L"] for r in rounds]))
    assert 0 < human["coco/BLEU-1"]["value"] < 1
    assert human["coco/BLEU-1"]["ci_low"] <= human["coco/BLEU-1"]["value"] <= human["coco/BLEU-1"]["ci_high"]


def test_prefetch_gives_the_same_numbers(meteor) -> None:
    with Scorer(REFS, bootstrap_samples=100, meteor=meteor) as scorer:
        direct = scorer.score(SYSTEMS)
    with Scorer(REFS, bootstrap_samples=100, meteor=meteor) as scorer:
        scorer.prefetch({"good": {1: SYSTEMS["good"][1], 2: SYSTEMS["good"][2]}})  # a batch at a time
        scorer.prefetch({"good": {3: SYSTEMS["good"][3], 4: SYSTEMS["good"][4]}, "collapsed": SYSTEMS["collapsed"]})
        scorer.prefetch({"extra": {99: "not an image of these references"}})  # ignored; score() validates
        prefetched = scorer.score(SYSTEMS)
        if meteor is not None:  # 8 distinct (image, caption) pairs, each sent to the JVM once
            assert scorer.timings["meteor thread: segments scored"] == 8
    for name in SYSTEMS:
        for key, metric in direct[name].metrics.items():
            assert prefetched[name].metrics[key].value == metric.value, (name, key)


def test_human_baseline_is_cached_by_references_and_settings(tmp_path, monkeypatch) -> None:
    import captune.metrics.human as human

    first = human.cached_human_report(REFS, metrics=["rouge"], bootstrap_samples=50, cache=tmp_path)
    monkeypatch.setattr(human, "human_report", lambda *a, **k: pytest.fail("recomputed a cached human baseline"))
    assert human.cached_human_report(REFS, metrics=["rouge"], bootstrap_samples=50, cache=tmp_path) == first
    monkeypatch.undo()
    other = human.cached_human_report(REFS, metrics=["rouge"], bootstrap_samples=60, cache=tmp_path)
    assert len(list(tmp_path.glob("human-*.json"))) == 2 and other["settings"]["bootstrap_samples"] == 60
    changed = {**REFS, 1: REFS[1][:2]}
    assert human.human_cache_path(changed, ["rouge"], 50, 0, tmp_path) != human.human_cache_path(
        REFS, ["rouge"], 50, 0, tmp_path)


def test_human_families_follow_the_main_table() -> None:
    from captune.metrics.human import human_families

    assert human_families(["coco", "rouge", "nltk", "diversity"], True) == ["coco", "rouge", "diversity"]
    assert human_families(["coco", "nltk"], False) == ["coco", "nltk"]  # no Java: nltk/METEOR stands in


def test_precompute_for_split_fills_the_cache_the_grid_reads(tmp_path, monkeypatch) -> None:
    import captune.metrics.human as human
    from captune.data import load_dataset
    from captune.demo.synth import generate_synth
    from captune.metrics.suite import _normalise_refs

    monkeypatch.setenv("CAPTUNE_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "synth"
    generate_synth(data, split_sizes={"train": 4, "val": 3, "test": 3}, size=24)
    human.precompute_for_split(str(data), "eval", ["rouge", "diversity"], 50, 0, "flickr8k")
    refs = _normalise_refs({r.image_id: list(r.refs) for r in load_dataset(data, format="flickr8k").select("eval")})
    assert human.split_references(str(data), "eval", "flickr8k") == refs
    assert human.human_cache_path(refs, ["rouge", "diversity"], 50, 0).is_file()
    monkeypatch.setattr(human, "human_report", lambda *a, **k: pytest.fail("the grid would recompute it"))
    report = human.cached_human_report(refs, metrics=["rouge", "diversity"], bootstrap_samples=50, seed=0)
    assert report["systems"]["human"]["metrics"]["rouge/ROUGE-L"]["value"] > 0


def test_meteor_starts_before_the_rest_of_preparation(meteor, monkeypatch) -> None:
    """METEOR needs only the PTB tokens: it is queued while the other families are still being prepared,
    and a preparation failure after that is raised by score(), not a hang."""
    import threading

    import captune.metrics.suite as suite

    if meteor is None:
        pytest.skip("no Java: METEOR unavailable")
    real = suite.NltkReferences
    seen: dict[str, bool] = {}

    def slow_references(refs):  # the last preparation step: wait (bounded) for METEOR to be queued
        for _ in range(200):
            if scorer.pipeline.jobs:
                break
            threading.Event().wait(0.05)
        seen["meteor queued during preparation"] = bool(scorer.pipeline.jobs)
        return real(refs)

    monkeypatch.setattr(suite, "NltkReferences", slow_references)
    with Scorer(REFS, bootstrap_samples=50, meteor=meteor, metrics=["coco", "nltk"]) as scorer:
        result = scorer.score(SYSTEMS)
    assert seen == {"meteor queued during preparation": True}
    assert "coco/METEOR" in result["good"].metrics

    def broken(refs):
        raise RuntimeError("preparation failed")

    monkeypatch.setattr(suite, "NltkReferences", broken)
    with Scorer(REFS, bootstrap_samples=50, meteor=meteor, metrics=["coco", "nltk"]) as scorer, \
            pytest.raises(RuntimeError, match="preparation failed"):
        scorer.score(SYSTEMS)


def test_start_meteor_tokenises_the_captions_with_the_references(meteor) -> None:
    from captune.metrics.meteor_pipeline import start_meteor

    if meteor is None:
        pytest.skip("no Java: PTB tokeniser unavailable")
    tokens: dict[str, str] = {}
    process, vocab = start_meteor(REFS, tokens, captions=["A Zebra, galloping!", None])
    assert tokens["A Zebra, galloping!"] == "a zebra galloping" and tokens["a man rides a bike"] == "a man rides a bike"
    assert vocab is not None and "zebra" not in vocab and "cyclist" in vocab  # the vocabulary is the references'
    assert process.available


def test_a_known_reference_set_starts_its_jvm_before_tokenising(meteor, tmp_path, monkeypatch) -> None:
    """The reduced paraphrase table found once by vocabulary is remembered for the raw references, so the
    next run starts METEOR's JVM with it before the PTB tokenizer runs."""
    import gzip

    import captune.metrics.meteor as meteor_module
    import captune.metrics.meteor_pipeline as pipeline
    import captune.metrics.meteor_tables as tables

    if meteor is None:
        pytest.skip("no Java: METEOR unavailable")
    monkeypatch.setenv("CAPTUNE_CACHE_DIR", str(tmp_path))
    folder = tmp_path / "meteor"
    folder.mkdir()
    table = folder / "paraphrase-test.gz"
    table.write_bytes(gzip.compress(b"0.5\nkids\nchildren\n"))
    vocab = [*sorted(tables.paraphrase_vocabulary(t.lower() for ts in REFS.values() for t in ts)), "zebra"]
    (folder / "paraphrase-test.json").write_text(json.dumps(
        {"source": tables._source_tag(), "entries": 1, "vocabulary": vocab}))
    real_tokenize = pipeline.ptb_tokenize
    started: list[bool] = []

    def watching_tokenize(texts, java=None):
        current = meteor_module._SHARED
        started.append(current is not None and current.paraphrase == table and current.available)
        return real_tokenize(texts, java)

    monkeypatch.setattr(pipeline, "ptb_tokenize", watching_tokenize)
    try:
        first, _ = pipeline.start_meteor(REFS, {})  # found by vocabulary, then remembered for these texts
        assert first.paraphrase == table and started == [False]
        MeteorProcess.shared()  # another table in between
        second, _ = pipeline.start_meteor(REFS, {})
        assert second.paraphrase == table and started == [False, True]
        assert tables.table_for_references(tables.references_fingerprint(
            t for ts in {**REFS, 1: ["another text"]}.values() for t in ts)) is None
    finally:
        MeteorProcess.shared()  # back to the full table for the other tests


class _GatedMeteor:
    """A METEOR stand-in whose segments wait (at most 10 s) for the Python side's diversity metrics."""

    available = True
    unavailable_reason = None
    paraphrase = None

    def __init__(self, gate) -> None:
        self.gate, self.saw_diversity_first = gate, None

    def warm_up(self) -> None:
        pass

    def segment_stats(self, pairs, progress=None):
        self.saw_diversity_first = self.gate.wait(timeout=10)
        return np.ones((len(pairs), 23))

    def close(self) -> None:
        pass


def test_python_statistics_are_computed_while_meteor_still_runs(monkeypatch) -> None:
    """Diversity and every other non-METEOR statistic are done before the Scorer waits for METEOR, so
    only METEOR's own bootstrap is left once its JVM finishes."""
    import threading

    import captune.metrics.suite as suite

    gate = threading.Event()
    real = suite.div.diversity

    def diversity(*args, **kwargs):
        gate.set()
        return real(*args, **kwargs)

    monkeypatch.setattr(suite.div, "diversity", diversity)
    fake = _GatedMeteor(gate)
    with Scorer(REFS, bootstrap_samples=50, meteor=fake, metrics=["coco", "diversity"]) as scorer:
        result = scorer.score(SYSTEMS)
    assert fake.saw_diversity_first is True
    names = list(result["good"].metrics)
    assert names.index("coco/BLEU-4") + 1 == names.index("coco/METEOR") < names.index("coco/ROUGE-L")
    assert list(result["good"].statistics).index("coco/METEOR") == list(result["good"].statistics).index(
        "coco/BLEU-4") + 1


def test_captune_score_starts_meteor_before_loading_the_scoring_code(tmp_path) -> None:
    """METEOR's JVM is the longest part of `captune score`; it starts before the scoring modules (and
    the NLTK/SciPy they import) are loaded."""
    import subprocess
    import sys

    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({str(k): v for k, v in REFS.items()}), encoding="utf-8")
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([{"image_id": k, "caption": c} for k, c in SYSTEMS["good"].items()]), encoding="utf-8")
    code = """
import sys
import captune.metrics.meteor_pipeline as m
seen = []
def start_meteor(refs, tokens, captions=()):
    seen.append(sorted(k for k in ("captune.metrics.suite", "nltk", "scipy") if k in sys.modules))
    return m.MeteorProcess(m.JavaRuntime(None, "not needed in this test")), None
m.start_meteor = start_meteor
from captune.cli import main
main(["score", "--refs", sys.argv[1], "--pred", sys.argv[2], "--metrics", "coco,diversity", "-q",
      "--bootstrap", "20", "--trials", "20"])
print("SEEN", seen)
"""
    out = subprocess.run([sys.executable, "-c", code, str(refs), str(pred)], capture_output=True, text=True,
                         timeout=120)
    assert "SEEN [[]]" in out.stdout, out.stdout + out.stderr
