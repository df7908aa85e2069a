"""`Scorer`: every metric family for many systems over one reference set, paying for shared work once.

Created once per reference set (e.g. at the start of an evaluation grid, while captions are still
being generated), it builds every reference-side structure in a background thread (PTB tokens,
BLEU max-counts, CIDEr-D document frequencies, ROUGE n-grams, NLTK tokens, WordNet). `score()` takes
any number of systems: identical (image, caption) pairs are scored once, METEOR runs in the Java
pipeline's worker (`meteor_pipeline`) while Python computes the other metrics, and bootstrap CIs come
from one matrix product per system. Results are cached: scoring systems one by one costs the same.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from captune.errors import DataError
from captune.metrics import FAMILIES
from captune.metrics import diversity as div
from captune.metrics.coco import BLEU_STATS, CocoReferences, bleu_from_stats
from captune.metrics.java import JavaRuntime, find_java
from captune.metrics.meteor import N_STATS, MeteorProcess, aggregable, meteor_from_stats
from captune.metrics.meteor_pipeline import MeteorPipeline, timed
from captune.metrics.nltk_style import BLEU_STATS as NLTK_BLEU_STATS
from captune.metrics.nltk_style import NltkMeteor, NltkReferences, nltk_bleu, nltk_bleu_vec
from captune.metrics.nltk_style import tokenizer_note as nltk_tokenizer_note
from captune.metrics.nltk_style import word_tokenize as nltk_word_tokenize
from captune.metrics.nltk_wordnet import load_wordnet
from captune.metrics.results import MetricResult, SystemResult, build_report, metric_order
from captune.metrics.rouge import RougeReferences
from captune.metrics.spice import compute_spice, spice_status
from captune.metrics.stats import (
    PairedResult,
    Statistic,
    bootstrap_weights,
    mean_statistic,
    paired_test,
    percentile_ci,
    swap_masks,
)

CI_BLEU = "percentile bootstrap over images: corpus BLEU recomputed from resampled per-image lengths and clipped counts"
CI_METEOR = "percentile bootstrap over images: METEOR recomputed from resampled per-image alignment statistics"
CI_CIDER = "percentile bootstrap of the mean per-image CIDEr-D (document frequencies fixed to the full image set)"
CI_NLTK_BLEU = "percentile bootstrap over images: NLTK corpus_bleu recomputed from resampled per-image counts"


def _normalise_refs(refs: Mapping[Any, Sequence[str]]) -> dict[Any, list[str]]:
    out = {}
    for image_id, texts in refs.items():
        if isinstance(texts, str):
            texts = [texts]
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        if not texts:
            raise DataError(f"references: image {image_id!r} has no reference captions")
        out[image_id] = texts
    if not out:
        raise DataError("references: no images with reference captions")
    return out


class Scorer:
    """All caption metrics for systems scored against one fixed reference set.

    `refs`: image id -> reference captions (raw text). `metrics`: families among
    coco, rouge, nltk, diversity. `spice`: None = run if it can, record why not otherwise.
    Use as a context manager, or call `close()`, to end the JVM.
    """

    def __init__(self, refs: Mapping[Any, Sequence[str]], *, metrics: Iterable[str] = FAMILIES,
                 bootstrap_samples: int = 1000, seed: int = 0, ci_level: float = 0.95, paired_trials: int = 1000,
                 spice: bool | None = None, train_captions: Iterable[str] | None = None, self_bleu: bool = False,
                 meteor: MeteorProcess | None = None, java: JavaRuntime | None = None,
                 token_cache: dict[str, str] | None = None, progress: bool = False) -> None:
        self.families = tuple(dict.fromkeys(m.strip().lower() for m in metrics if m.strip()))
        unknown = [m for m in self.families if m not in FAMILIES]
        if unknown:
            raise DataError(f"unknown metric family {unknown[0]!r}; choose from {', '.join(FAMILIES)}")
        if bootstrap_samples < 1:
            raise DataError("bootstrap_samples must be >= 1")
        self.refs = _normalise_refs(refs)
        self.image_ids = list(self.refs)
        self.samples, self.seed, self.level, self.trials = bootstrap_samples, seed, ci_level, paired_trials
        self.train_captions = list(train_captions) if train_captions is not None else None
        self.self_bleu = self_bleu
        self.java = java or find_java()
        self.unavailable: dict[str, str] = {}
        self.notes: list[str] = []
        self.timings: dict[str, float] = {}
        self._own_meteor = False
        self.meteor: MeteorProcess | None = None
        self.spice = False
        if "coco" in self.families:
            if meteor is None:
                meteor, self._own_meteor = MeteorProcess(self.java), True
            self.meteor = meteor
            if not meteor.available:
                self.unavailable["coco/METEOR"] = meteor.unavailable_reason or "METEOR unavailable"
            if spice is not False:
                reason = spice_status(self.java)
                if reason:
                    self.unavailable["coco/SPICE"] = reason
                self.spice = reason is None
        # Caches keyed by (image id, tokenised or raw caption): identical pairs are scored once.
        self._coco: dict[tuple[Any, str], tuple[np.ndarray, float, float]] = {}
        self._rouge: dict[tuple[Any, str], tuple[float, float, float]] = {}
        self._nltk: dict[tuple[Any, str], tuple[np.ndarray, float | None]] = {}
        self._nltk_tokens: dict[str, list[str]] = {}
        self._weights: np.ndarray | None = None
        self._masks: np.ndarray | None = None
        # PTB tokens and METEOR: the Java side, run in worker threads beside the Python metrics.
        self.pipeline = MeteorPipeline(self.meteor, self.java, token_cache if token_cache is not None else {},
                                       self.timings, self.unavailable, self.notes)
        self.progress = progress  # show the METEOR bar while score() waits for its segments
        self._prep_error: BaseException | None = None
        self._prep = threading.Thread(target=self._prepare_safely, name="captune-scorer-prep", daemon=True)
        self._prep.start()

    # ------------------------------------------------------------------ preparation
    def _prepare_safely(self) -> None:
        try:
            self._prepare()
        except BaseException as exc:  # re-raised in the caller's thread by _ready()
            self._prep_error = exc
        finally:
            self.pipeline.release(self._prep_error)

    def _prepare(self) -> None:
        t = self.timings
        if "coco" in self.families:
            self.pipeline.tokenize_references(self.refs)
            with timed(t, "prep: coco references"):
                self.coco_refs = CocoReferences(self.pipeline.ref_tokens)
        if "rouge" in self.families:
            with timed(t, "prep: rouge references"):
                self.rouge_refs = RougeReferences(self.refs)
        if "nltk" in self.families:
            with timed(t, "prep: nltk references"):
                self.nltk_refs = NltkReferences(self.refs)
            note = nltk_tokenizer_note()
            if note and note not in self.notes:
                self.notes.append(note)
            with timed(t, "prep: load WordNet"):
                reader, where = load_wordnet()
            if reader is None:
                self.unavailable["nltk/METEOR"] = where
                self.nltk_meteor: NltkMeteor | None = None
            else:
                self.nltk_meteor = NltkMeteor(reader)
                self.notes.append(f"nltk/METEOR WordNet: {where}")

    def _ready(self) -> None:
        with timed(self.timings, "score: wait for preparation"):
            self._prep.join()
        if self._prep_error is not None:
            raise self._prep_error

    # ------------------------------------------------------------------ scoring
    def _validate(self, name: str, captions: Mapping[Any, str]) -> dict[Any, str]:
        ids = set(self.image_ids)
        given = set(captions)
        missing, extra = len(ids - given), len(given - ids)
        if missing or extra:
            raise DataError(
                f"system {name!r}: predictions must cover exactly the {len(ids)} reference images "
                f"({missing} missing, {extra} not in the references)"
            )
        out = {}
        for i in self.image_ids:
            c = captions[i]
            if not isinstance(c, str):
                raise DataError(f"system {name!r}: caption for image {i!r} is {type(c).__name__}, not text")
            out[i] = c
        return out

    def prefetch(self, systems: Mapping[str, Mapping[Any, str]]) -> None:
        """Start the Java side of scoring these captions (PTB tokenisation, METEOR) in the background
        and return at once: an evaluation grid calls it after each batch, so METEOR runs on the other
        core while the next captions are generated. `score()` later finds the work done. Captions are
        not validated here; `score()` does that."""
        if "coco" in self.families:
            self.pipeline.prefetch(list(dict.fromkeys((i, c) for caps in systems.values() for i, c in caps.items()
                                                      if i in self.refs and isinstance(c, str))))

    def score(self, systems: Mapping[str, Mapping[Any, str]]) -> dict[str, SystemResult]:
        """Score every system (name -> {image id: caption}) on all families; returns name -> result."""
        if not systems:
            raise DataError("no systems to score")
        t = self.timings
        caps = {name: self._validate(name, c) for name, c in systems.items()}
        raw_pairs = list(dict.fromkeys((i, c) for sys_caps in caps.values() for i, c in sys_caps.items()))
        if "coco" in self.families:
            # METEOR (the longest part) starts as soon as the tokens exist, before the rest of preparation.
            self.pipeline.tokenize_and_queue(raw_pairs)
        self._ready()
        if "coco" in self.families:
            pairs = list(dict.fromkeys((i, self.pipeline.tokens[c]) for i, c in raw_pairs))
            with timed(t, "score: coco BLEU/CIDEr/ROUGE-L"):
                for i, tok in pairs:
                    if (i, tok) not in self._coco:
                        stats = self.coco_refs.bleu_stats(i, tok)
                        self._coco[(i, tok)] = (stats, self.coco_refs.cider(i, tok), self.coco_refs.rouge_l(i, tok))
        if "rouge" in self.families:
            with timed(t, "score: rouge-score"):
                for i, c in raw_pairs:
                    if (i, c) not in self._rouge:
                        self._rouge[(i, c)] = self.rouge_refs.score(i, c)
        if "nltk" in self.families:
            self._score_nltk(raw_pairs)
        with timed(t, "score: diversity, statistics"):  # everything but METEOR, while its JVM still runs
            partial = {name: self._system_stats(c) for name, c in caps.items()}
        with timed(t, "score: wait for METEOR"):
            self.pipeline.wait(self.progress)
        with timed(t, "score: bootstrap"):
            return {name: self._finish(name, self._with_meteor(caps[name], stats), fixed, top)
                    for name, (stats, fixed, top) in partial.items()}

    def _score_nltk(self, raw_pairs: Sequence[tuple[Any, str]]) -> None:
        t = self.timings
        todo = [(i, c) for i, c in raw_pairs if (i, c) not in self._nltk]
        with timed(t, "score: nltk tokenise"):
            for _, c in todo:
                if c not in self._nltk_tokens:
                    self._nltk_tokens[c] = nltk_word_tokenize(c)
        with timed(t, "score: nltk BLEU"):
            bleu = [self.nltk_refs.bleu_stats(i, self._nltk_tokens[c]) for i, c in todo]
        with timed(t, "score: nltk METEOR"):
            if self.nltk_meteor is not None:
                met: list[float | None] = [
                    self.nltk_meteor.score(self.nltk_refs.tokens[i], self._nltk_tokens[c], key=i) for i, c in todo
                ]
            else:
                met = [None] * len(todo)
        for key, b, m in zip(todo, bleu, met, strict=True):
            self._nltk[key] = (b, m)

    def _system_stats(
        self, caps: dict[Any, str]
    ) -> tuple[dict[str, Statistic], dict[str, MetricResult], list[tuple[str, int]]]:
        """One system's statistics for every metric but METEOR (added by `_with_meteor` once its JVM is done)."""
        ids = self.image_ids
        stats: dict[str, Statistic] = {}
        fixed: dict[str, MetricResult] = {}
        top: list[tuple[str, int]] = []
        if "coco" in self.families:
            keys = [(i, self.pipeline.tokens[caps[i]]) for i in ids]
            bleu = np.array([self._coco[k][0] for k in keys]).reshape(len(ids), BLEU_STATS)
            per_bleu = bleu_from_stats(bleu)
            for n in range(1, 5):
                stats[f"coco/BLEU-{n}"] = Statistic(
                    f"coco/BLEU-{n}", bleu, lambda s, _n, k=n: bleu_from_stats(s)[:, k - 1], CI_BLEU, per_bleu[:, n - 1]
                )
            stats["coco/ROUGE-L"] = mean_statistic("coco/ROUGE-L", np.array([self._coco[k][2] for k in keys]))
            stats["coco/CIDEr"] = mean_statistic("coco/CIDEr", np.array([self._coco[k][1] for k in keys]), CI_CIDER)
            if self.spice:
                try:
                    gts = {i: self.pipeline.ref_tokens[i] for i in ids}
                    _, per = compute_spice(gts, {i: [self.pipeline.tokens[caps[i]]] for i in ids}, self.java)
                    stats["coco/SPICE"] = mean_statistic("coco/SPICE", np.nan_to_num(per))
                except RuntimeError as exc:
                    self.unavailable["coco/SPICE"] = str(exc)
                    self.spice = False
        if "rouge" in self.families:
            table = np.array([self._rouge[(i, caps[i])] for i in ids]).reshape(len(ids), 3)
            for k, kind in enumerate(("ROUGE-1", "ROUGE-2", "ROUGE-L")):
                stats[f"rouge/{kind}"] = mean_statistic(f"rouge/{kind}", table[:, k])
        if "nltk" in self.families:
            rows = [self._nltk[(i, caps[i])] for i in ids]
            nb = np.array([r[0] for r in rows]).reshape(len(ids), NLTK_BLEU_STATS)
            exact = nltk_bleu(nb.sum(0))
            for n in range(1, 5):
                stats[f"nltk/BLEU-{n}"] = Statistic(
                    f"nltk/BLEU-{n}", nb, lambda s, _n, k=n: nltk_bleu_vec(s)[:, k - 1], CI_NLTK_BLEU
                )
                fixed[f"nltk/BLEU-{n}"] = MetricResult(f"nltk/BLEU-{n}", exact[n - 1], ci_method=CI_NLTK_BLEU)
            if self.nltk_meteor is not None:
                stats["nltk/METEOR"] = mean_statistic("nltk/METEOR", np.array([r[1] for r in rows], dtype=float))
        if "diversity" in self.families:
            d = div.diversity([caps[i] for i in ids], self.train_captions, with_self_bleu=self.self_bleu)
            top = d.top_captions
            for key, value in d.values.items():
                if key in d.per_image:
                    stats[key] = mean_statistic(key, d.per_image[key])
                else:
                    fixed[key] = MetricResult(key, value)
        return stats, fixed, top

    def _with_meteor(self, caps: dict[Any, str], stats: dict[str, Statistic]) -> dict[str, Statistic]:
        """`stats` with METEOR's statistic inserted after BLEU-4 (the report's order), when it was scored."""
        if "coco" not in self.families or "coco/METEOR" in self.unavailable:
            return stats
        keys = [(i, self.pipeline.tokens[caps[i]]) for i in self.image_ids]
        if not all(k in self.pipeline.stats for k in keys):
            return stats
        m = aggregable(np.array([self.pipeline.stats[k] for k in keys]).reshape(len(keys), N_STATS))
        meteor = Statistic("coco/METEOR", m, lambda s, _n: meteor_from_stats(s), CI_METEOR, meteor_from_stats(m))
        out: dict[str, Statistic] = {}
        for key, value in stats.items():
            out[key] = value
            if key == "coco/BLEU-4":
                out[meteor.name] = meteor
        return out

    def _bootstrap(self) -> np.ndarray:
        if self._weights is None:
            self._weights = bootstrap_weights(len(self.image_ids), self.samples, self.seed)
        return self._weights

    def _finish(self, name: str, stats: dict[str, Statistic], fixed: dict[str, MetricResult],
                top: list[tuple[str, int]]) -> SystemResult:
        weights = self._bootstrap()
        # One matrix product for all metrics: stack their stats side by side.
        blocks = list(stats.values())
        sums = weights @ np.concatenate([s.stats for s in blocks], axis=1) if blocks else None
        metrics: dict[str, MetricResult] = {}
        replicates: dict[str, np.ndarray] = {}
        col = 0
        for s in blocks:
            k = s.stats.shape[1]
            assert sums is not None
            reps = s.aggregate(sums[:, col : col + k], s.n)
            col += k
            replicates[s.name] = reps
            lo, hi = percentile_ci(reps, self.level)
            value = fixed[s.name].value if s.name in fixed else s.value()
            metrics[s.name] = MetricResult(s.name, value, lo, hi, s.ci_method, s.per_image)
        for key, res in fixed.items():
            metrics.setdefault(key, res)
        ordered = dict(sorted(metrics.items(), key=lambda kv: metric_order(kv[0])))
        return SystemResult(name, list(self.image_ids), ordered, stats, replicates, top)

    def compare(self, a: SystemResult, b: SystemResult) -> list[PairedResult]:
        """Paired approximate-randomisation test of a vs b on every metric both have statistics for."""
        if self._masks is None:
            self._masks = swap_masks(len(self.image_ids), self.trials, self.seed + 1)
        return [paired_test(a.statistics[k], b.statistics[k], masks=self._masks) for k in a.statistics
                if k in b.statistics]

    def close(self) -> None:
        self.pipeline.close()
        if self._own_meteor and self.meteor is not None:
            self.meteor.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def settings(self) -> dict[str, Any]:
        return {
            "families": list(self.families),
            "bootstrap_samples": self.samples,
            "seed": self.seed,
            "ci_level": self.level,
            "paired_test": f"approximate randomisation, {self.trials} trials, two-sided",
            "coco_tokenizer": self.pipeline.tokenizer_name or None,
            "java": self.java.path if self.java.available else None,
        }


def score_systems(systems: Mapping[str, Mapping[Any, str]], refs: Mapping[Any, Sequence[str]], *,
                  baseline: str | None = None, per_image: bool = True, **options: Any) -> dict[str, Any]:
    """Score systems against references and return the scores.json document. `options` are the
    `Scorer`'s. Every system is compared with `baseline` (default: the first system) by a paired test."""
    with Scorer(refs, **options) as scorer:
        results = scorer.score(systems)
        names = list(results)
        base = baseline if baseline is not None else names[0]
        if base not in results:
            raise DataError(f"baseline system {base!r} is not among the systems ({', '.join(names)})")
        comparisons = [(n, base, scorer.compare(results[n], results[base])) for n in names if n != base]
        return build_report(scorer, results, comparisons, per_image=per_image)
