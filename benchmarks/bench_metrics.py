"""Benchmark: all metrics for 8 systems x 2,000 Flickr8K images (val+test), ours vs the naive way.

Systems mimic an evaluation grid: captions of other images, perturbed references, greedy/beam
pairs that agree on most images, and collapsed systems with few distinct captions.

    python benchmarks/bench_metrics.py --mode first     # `captune score`, empty cache (builds the reduced
                                                        # METEOR paraphrase table for these references)
    python benchmarks/bench_metrics.py --mode cold      # `captune score` in a fresh process (JVM cold)
    python benchmarks/bench_metrics.py --mode warm      # score_systems with the METEOR JVM already warm
    python benchmarks/bench_metrics.py --mode naive     # pycocoevalcap COCOEvalCap-style, per system
    python benchmarks/bench_metrics.py --mode verify    # reduced vs full paraphrase table: same METEOR?
    python benchmarks/bench_metrics.py --mode all --repeats 3

Needs ../shared (or $CAPTUNE_SHARED). Prints one line per run and the medians.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CAPTUNE_SHARED", REPO.parent / "shared"))


def cpu_seconds(live_pid: int | None = None) -> float:
    """User+system CPU of this process, its finished children (JVMs, `captune score`) and, if given,
    a still-running child (the warm JVM, read from /proc)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    if live_pid is not None:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{live_pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def load_refs() -> dict[int, list[str]]:
    karpathy = SHARED / "data" / "flickr8k" / "dataset_flickr8k.json"
    data = json.loads(karpathy.read_text(encoding="utf-8"))
    images = [im for im in data["images"] if im["split"] in ("val", "test")]
    return {k: [s["raw"] for s in im["sentences"]] for k, im in enumerate(images)}


def perturb(text: str, rng: random.Random) -> str:
    words = text.split()
    if len(words) > 3:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    if len(words) > 5:
        del words[rng.randrange(len(words))]
    return " ".join(words)


def make_systems(refs: dict[int, list[str]], seed: int = 0) -> dict[str, dict[int, str]]:
    rng = random.Random(seed)
    ids = list(refs)
    n = len(ids)
    other = {i: refs[ids[(k + 7) % n]][0] for k, i in enumerate(ids)}
    pert = {i: perturb(refs[i][0], rng) for i in ids}
    few = ["a dog runs through the grass .", "a man in a red shirt is standing .", "two children play in water ."]
    many = [refs[ids[rng.randrange(n)]][1] for _ in range(25)]
    return {
        "zs-greedy": other,
        "zs-beam": {i: other[i] if rng.random() < 0.7 else perturb(other[i], rng) for i in ids},
        "lora-greedy": pert,
        "lora-beam": {i: pert[i] if rng.random() < 0.7 else perturb(refs[i][1], rng) for i in ids},
        "lora-sample": {i: perturb(refs[i][2], rng) for i in ids},
        "shuffled": {i: refs[ids[rng.randrange(n)]][3] for i in ids},
        "collapsed-3": {i: rng.choice(few) for i in ids},
        "collapsed-25": {i: rng.choice(many) for i in ids},
    }


def write_inputs(folder: Path, refs: dict[int, list[str]], systems: dict[str, dict[int, str]]) -> list[Path]:
    (folder / "refs.json").write_text(json.dumps({str(k): v for k, v in refs.items()}), encoding="utf-8")
    paths = []
    for name, caps in systems.items():
        p = folder / f"{name}.json"
        p.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in caps.items()]), encoding="utf-8")
        paths.append(p)
    return paths


def run_cold(folder: Path, preds: list[Path], families: str, cache: str | None = None) -> float:
    args = ["score", "--refs", str(folder / "refs.json"), "--metrics", families,
            "--out", str(folder / "scores.json"), "-q"]
    for p in preds:
        args += ["--pred", str(p)]
    code = "import sys; from captune.cli import run; sys.argv[0] = 'captune'; run()"  # as the console script
    env = dict(os.environ, **({"CAPTUNE_CACHE_DIR": cache} if cache else {}))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], check=True, env=env)
    elapsed = time.perf_counter() - start
    report = json.loads((folder / "scores.json").read_text(encoding="utf-8"))
    table = report["settings"].get("meteor_paraphrase_table", "-")
    print(f"       paraphrase table: {'reduced (cached)' if table.endswith('.gz') else table}; "
          f"notes: {[n for n in report['notes'] if 'paraphrase' in n]}")
    return elapsed


def verify_table(refs: dict[int, list[str]], systems: dict[str, dict[int, str]]) -> None:
    """METEOR per image with the reduced table equals the full table's, on every benchmark system."""
    from captune.metrics import MeteorProcess, Scorer
    from captune.metrics.meteor_tables import build_paraphrase_table, cached_paraphrase_table, paraphrase_vocabulary
    from captune.metrics.tokenize import ptb_tokenize

    texts = [t for ts in refs.values() for t in ts]
    vocab = paraphrase_vocabulary(ptb_tokenize(texts))
    table = cached_paraphrase_table(vocab) or build_paraphrase_table(vocab)
    scores = []
    for paraphrase in (None, table):
        with MeteorProcess(paraphrase=paraphrase) as process, Scorer(refs, metrics=["coco"], meteor=process) as s:
            result = s.score(systems)
            scores.append({n: r.metrics["coco/METEOR"].per_image for n, r in result.items()})
    same = all((scores[0][n] == scores[1][n]).all() for n in systems)
    print(f"verify: METEOR per image identical with the reduced table ({table.name}): {same}")


def run_warm(refs: dict[int, list[str]], systems: dict[str, dict[int, str]], families: str, meteor) -> float:
    from captune.io import atomic_write_json
    from captune.metrics import score_systems

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = score_systems(systems, refs, metrics=families.split(","), meteor=meteor)
        atomic_write_json(Path(tmp) / "scores.json", report)
        return time.perf_counter() - start


def run_naive(refs: dict[int, list[str]], systems: dict[str, dict[int, str]]) -> float:
    """What pycocoevalcap's COCOEvalCap does, once per system: tokenise refs and results, then
    Bleu, Meteor (a new JVM), Rouge, Cider (SPICE is unavailable here)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    start = time.perf_counter()
    for caps in systems.values():
        gts = {i: [{"caption": r} for r in refs[i]] for i in refs}
        res = {i: [{"caption": caps[i]}] for i in refs}
        tok = PTBTokenizer()
        gts, res = tok.tokenize(gts), tok.tokenize(res)
        with contextlib.redirect_stdout(io.StringIO()):
            for scorer in (Bleu(4), Meteor(), Rouge(), Cider()):
                scorer.compute_score(gts, res)
                del scorer
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["first", "cold", "warm", "naive", "verify", "all"], default="all")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--metrics", default="coco,rouge,nltk,diversity")
    ap.add_argument("--images", type=int, default=0, help="use only the first N images (0 = all 2,000)")
    args = ap.parse_args()
    if not (SHARED / "data" / "flickr8k").is_dir():
        sys.exit(f"needs Flickr8K under {SHARED}")
    refs = load_refs()
    if args.images:
        refs = dict(list(refs.items())[: args.images])
    systems = make_systems(refs)
    pairs = {(i, c) for caps in systems.values() for i, c in caps.items()}
    print(f"{len(systems)} systems x {len(refs)} images; {len(pairs)} distinct (image, caption) pairs")
    if args.mode == "verify":
        verify_table(refs, systems)
        return
    modes = ["first", "cold", "warm", "naive"] if args.mode == "all" else [args.mode]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        preds = write_inputs(folder, refs, systems)
        for mode in modes:
            times = []
            meteor = None
            if mode == "warm":
                from captune.metrics.meteor_pipeline import start_meteor

                meteor, _ = start_meteor(refs, {})
                meteor.warm_up()
            for _ in range(args.repeats if mode not in ("naive", "first") else 1):
                pid = meteor._proc.pid if meteor is not None and meteor._proc is not None else None
                cpu = cpu_seconds(pid)
                if mode == "first":
                    with tempfile.TemporaryDirectory() as cache:
                        t = run_cold(folder, preds, args.metrics, cache=cache)
                elif mode == "cold":
                    t = run_cold(folder, preds, args.metrics)
                elif mode == "warm":
                    t = run_warm(refs, systems, args.metrics, meteor)
                else:
                    t = run_naive(refs, systems)
                times.append(t)
                scope = args.metrics if mode != "naive" else "coco (pycocoevalcap)"
                load = os.getloadavg()[0]
                print(f"{mode:6s} {scope}: {t:6.1f} s wall, {cpu_seconds(pid) - cpu:6.1f} s CPU "
                      f"(load average {load:.1f})", flush=True)
            if meteor is not None:
                meteor.close()
            print(f"{mode:6s} median {statistics.median(times):.1f} s over {len(times)} run(s)")


if __name__ == "__main__":
    main()
