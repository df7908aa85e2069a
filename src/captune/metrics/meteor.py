"""METEOR 1.5 (Denkowski & Lavie 2014) through the jar that pycocoevalcap ships, made safe to run.

The JVM is the expensive part (6-20 s to load the paraphrase table), so one `MeteorProcess` is
started early and shared: it streams `SCORE` segments and returns each segment's sufficient
statistics (23 numbers). Scores are then computed from those statistics in Python by
`meteor_from_stats`, which is the formula of the jar's `MeteorScorer.computeMetrics`
(English defaults alpha=0.85, beta=0.2, gamma=0.6, delta=0.75, module weights exact 1.0,
stem 0.6, synonym 0.8, paraphrase 0.6); tests check it against the jar's own `EVAL` answer.
Working from statistics is what makes bootstrap resampling cheap: a corpus score is the formula
applied to summed statistics, exactly as `EVAL` aggregates them (see `aggregable`).

Robustness: argument lists only (no shell), cwd in a temp dir, the paraphrase table passed by
absolute path (or a cached reduced copy, see `build_paraphrase_table`), every segment made one line
without `|||`, a reader thread with deadlines so a stuck or dead JVM becomes a `MeteorError`
instead of a hang, and the JVM is killed on close, on interpreter exit, and on any error.
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import hashlib
import json
import os
import queue
import re
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from captune.metrics.java import JavaRuntime, find_java, meteor_jar, meteor_paraphrase
from captune.metrics.tokenize import TokenizerError, one_line, ptb_tokenize

ALPHA, BETA, GAMMA, DELTA = 0.85, 0.2, 0.6, 0.75
MODULE_WEIGHTS = (1.0, 0.6, 0.8, 0.6)
N_STATS = 23
# Measured on a 2-core machine (BENCHMARKS.md): C1-only JIT (TieredStopAtLevel=1) scored segments
# ~1.6x cheaper under heavy load; on a quiet machine C2 is faster alone but no faster inside `captune
# score` or the demo, where its compiler threads take the core Python needs. ParallelGC loads the
# paraphrase table faster than G1 or Serial.
DEFAULT_JVM_FLAGS = ("-Xmx2G", "-XX:+UseParallelGC", "-XX:TieredStopAtLevel=1", "-Dfile.encoding=UTF-8")

_WS = re.compile(r"\s+")
_LIVE: weakref.WeakSet[MeteorProcess] = weakref.WeakSet()
_SHARED: MeteorProcess | None = None
_SHARED_LOCK = threading.Lock()


class MeteorError(RuntimeError):
    """METEOR cannot give an answer (no Java, no jar, the JVM died or stopped answering)."""


def clean_segment(text: str) -> str:
    """One line, no `|||` (the protocol's separator), single spaces. pycocoevalcap does the last two
    for hypotheses only; ordinary PTB-tokenised captions are unchanged by this."""
    text = one_line(text).replace("|||", " ")
    return _WS.sub(" ", text).strip()


def score_line(hypothesis: str, references: Sequence[str]) -> str:
    """The `SCORE` request pycocoevalcap sends for one image."""
    return " ||| ".join(("SCORE", " ||| ".join(clean_segment(r) for r in references), clean_segment(hypothesis)))


def meteor_from_stats(stats: np.ndarray) -> np.ndarray:
    """METEOR score for each row of summed statistics, shape (..., 23) -> (...)."""
    s = np.asarray(stats, dtype=np.float64)
    tlen, rlen, tfunc, rfunc = s[..., 0], s[..., 1], s[..., 2], s[..., 3]
    stages = s[..., 4:20].reshape(*s.shape[:-1], 4, 4)  # per stage: test content, ref content, test fn, ref fn
    chunks, twm, rwm = s[..., 20], s[..., 21], s[..., 22]
    w = np.asarray(MODULE_WEIGHTS)
    t_wlen = DELTA * (tlen - tfunc) + (1 - DELTA) * tfunc
    r_wlen = DELTA * (rlen - rfunc) + (1 - DELTA) * rfunc
    t_wm = (stages[..., 0] * w * DELTA).sum(-1) + (stages[..., 2] * w * (1 - DELTA)).sum(-1)
    r_wm = (stages[..., 1] * w * DELTA).sum(-1) + (stages[..., 3] * w * (1 - DELTA)).sum(-1)
    t_total = stages[..., 0].sum(-1) + stages[..., 2].sum(-1)
    r_total = stages[..., 1].sum(-1) + stages[..., 3].sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = t_wm / t_wlen
        recall = r_wm / r_wlen
        fmean = 1.0 / ((1 - ALPHA) / precision + ALPHA / recall)
        exact = (t_total == tlen) & (r_total == rlen) & (chunks == 1)
        frag = np.where(exact, 0.0, chunks / ((twm + rwm) / 2))
        score = fmean * (1 - GAMMA * np.power(frag, BETA))
    return np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))


def aggregable(stats: np.ndarray) -> np.ndarray:
    """Statistics ready to be summed over segments as the jar's EVAL sums them: a segment matched
    perfectly (every word, one chunk) adds no chunk to the aggregate (MeteorStats.addStats).
    Scoring a single such row is unchanged (its fragmentation is 0 either way)."""
    s = np.array(stats, dtype=np.float64, copy=True)
    st = s[..., 4:20].reshape(*s.shape[:-1], 4, 4)
    perfect = (
        (st[..., 0].sum(-1) + st[..., 2].sum(-1) == s[..., 0])
        & (st[..., 1].sum(-1) + st[..., 3].sum(-1) == s[..., 1])
        & (s[..., 20] == 1)
    )
    s[..., 20] = np.where(perfect, 0.0, s[..., 20])
    return s


# ----------------------------------------------------------------------------- paraphrase table
# Loading METEOR's 5.3M-entry paraphrase table is ~90% of the JVM's start-up. A paraphrase match
# pairs a hypothesis phrase with a reference phrase, so an entry can only ever match if one of its
# two phrases consists of words that occur in the references. Keeping just those entries changes
# no alignment (checked on Flickr8K: identical statistics) and cuts start-up ~3x. The reduced table
# depends only on the reference vocabulary, so it is built once per reference set and cached.

_SPLITS = (re.compile(r"[^a-z0-9]+"), re.compile(r"[^a-z0-9.,]+"))
_PUNCT = re.compile(r"[^a-z0-9]")
REDUCE_MIN_IMAGES = 1000  # below this, building (~15 s once) costs more than it saves


def paraphrase_vocabulary(texts: Iterable[str]) -> set[str]:
    """Every token METEOR's normaliser could make of these (tokenised) references: each token, its
    pieces split at punctuation (keeping or splitting decimal points), and the punctuation itself."""
    vocab: set[str] = set()
    for text in texts:
        for w in text.lower().split():
            vocab.add(w)
            for rx in _SPLITS:
                vocab.update(x for x in rx.split(w) if x)
            vocab.update(_PUNCT.findall(w))
    return vocab


def _table_dir() -> Path:
    from captune.metrics.nltk_style import cache_dir

    return cache_dir() / "meteor"


def _source_tag() -> str:
    src = meteor_paraphrase()
    st = src.stat() if src else None
    return f"{src}:{st.st_size if st else 0}"


def _cached_tables() -> Iterator[tuple[Path, dict[str, Any]]]:
    """The cached reduced tables made from this paraphrase source, with their metadata."""
    folder = _table_dir()
    if not folder.is_dir():
        return
    tag = _source_tag()
    for meta in sorted(folder.glob("paraphrase-*.json")):
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        table = meta.with_suffix(".gz")
        if info.get("source") == tag and table.is_file():
            yield table, info


def cached_paraphrase_table(vocab: set[str]) -> Path | None:
    """A reduced table built for a vocabulary that covers `vocab`, if one is cached."""
    return next((table for table, info in _cached_tables() if vocab <= set(info.get("vocabulary", []))), None)


def references_fingerprint(texts: Iterable[str]) -> str:
    """Names a reference set by its raw texts: the same texts give the same PTB tokens, so a table found
    for them once (by vocabulary) can be found again before tokenising."""
    return hashlib.sha1("\n".join(sorted(set(texts))).encode("utf-8")).hexdigest()


def table_for_references(fingerprint: str) -> Path | None:
    """The reduced table recorded for this reference set (`remember_table`), if still valid."""
    return next((table for table, info in _cached_tables() if fingerprint in info.get("references", [])), None)


def remember_table(table: Path, fingerprint: str) -> None:
    """Record that `table` covers the reference set `fingerprint` (best effort: a cache, not a result)."""
    from captune.io import atomic_write_text

    meta = table.with_suffix(".json")
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(meta.read_text(encoding="utf-8"))
        if fingerprint not in info.get("references", []):
            info["references"] = [*info.get("references", []), fingerprint][-32:]
            atomic_write_text(meta, json.dumps(info))


def build_paraphrase_table(vocab: set[str]) -> Path:
    """Write (atomically) and return the paraphrase table reduced to entries that can match `vocab`."""
    from captune.io import atomic_write_bytes, atomic_write_text

    source = meteor_paraphrase()
    if source is None:
        raise MeteorError("METEOR unavailable: pycocoevalcap's data/paraphrase-en.gz is missing")
    words = {w.encode("utf-8") for w in vocab}

    def inside(line: bytes) -> bool:
        return all(w in words for w in line.split())

    keep: list[bytes] = []
    # Streamed, triple by triple (probability, phrase, phrase): the decompressed table is ~10x the
    # archive, and holding it as a list of lines took 1.4 GB.
    with gzip.open(source, "rb") as fh:
        for probability in fh:
            first, second = next(fh, b""), next(fh, b"")
            if not second:
                break
            if inside(first) or inside(second):
                keep.append(probability + first + second)
    digest = hashlib.sha1("\n".join(sorted(vocab)).encode("utf-8")).hexdigest()[:16]
    table = _table_dir() / f"paraphrase-{digest}.gz"
    atomic_write_bytes(table, gzip.compress(b"".join(keep), compresslevel=1))
    info = {"source": _source_tag(), "entries": len(keep), "vocabulary": sorted(vocab)}
    atomic_write_text(table.with_suffix(".json"), json.dumps(info))
    return table


class MeteorProcess:
    """One METEOR 1.5 JVM in `-stdio` mode. Start it early; it loads while other work runs.

    Thread-safe: requests are serialised by a lock. `close()` (or the context manager, or interpreter
    exit) always ends the JVM.
    """

    def __init__(
        self,
        java: JavaRuntime | None = None,
        jvm_flags: Sequence[str] = DEFAULT_JVM_FLAGS,
        startup_timeout: float = 180.0,
        segment_timeout: float = 60.0,
        start: bool = True,
        paraphrase: Path | None = None,
    ) -> None:
        self.java = java or find_java()
        self.paraphrase = paraphrase  # None: pycocoevalcap's full table
        self.jvm_flags = tuple(jvm_flags)
        self.startup_timeout = startup_timeout
        self.segment_timeout = segment_timeout
        self.read_pause = 0.01  # seconds between reads of the JVM's output (see _pump_stdout)
        self._proc: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._lock = threading.Lock()
        self._warm = False
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._stderr_tail: list[str] = []
        self._pumps: list[threading.Thread] = []
        self.unavailable_reason: str | None = self._check()
        if start and self.unavailable_reason is None:
            self.start()

    def _check(self) -> str | None:
        if not self.java.available:
            return f"METEOR unavailable: {self.java.source}"
        if meteor_jar() is None or meteor_paraphrase() is None:
            return "METEOR unavailable: pycocoevalcap's meteor-1.5.jar or data/paraphrase-en.gz is missing"
        return None

    @property
    def available(self) -> bool:
        return self.unavailable_reason is None

    def start(self) -> None:
        """Launch the JVM (returns at once; the paraphrase table loads in the background)."""
        if self._proc is not None or not self.available:
            return
        self._tmp = tempfile.TemporaryDirectory(prefix="captune-meteor-")
        cmd = [
            str(self.java.path), *self.jvm_flags, "-jar", str(meteor_jar()), "-", "-", "-stdio",
            "-l", "en", "-norm", "-a", str(self.paraphrase or meteor_paraphrase()),
        ]
        try:
            self._proc = subprocess.Popen(
                cmd, cwd=self._tmp.name, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as exc:
            self.unavailable_reason = f"METEOR unavailable: could not start Java ({exc})"
            self._cleanup_tmp()
            return
        _LIVE.add(self)
        self._pumps = [
            threading.Thread(target=self._pump_stdout, args=(self._proc,), daemon=True),
            threading.Thread(target=self._pump_stderr, args=(self._proc,), daemon=True),
        ]
        for pump in self._pumps:
            pump.start()

    def _pump_stdout(self, proc: subprocess.Popen[bytes]) -> None:
        """Move the JVM's answers into the line queue, many per wake-up: a thread woken for every
        answer (~700 a second) takes the GIL from the caller's thread as often, which slowed a
        grid's caption decoding by ~20 %; the pause lets answers accumulate while the JVM works on."""
        assert proc.stdout is not None
        fd, rest = proc.stdout.fileno(), b""
        try:
            while chunk := os.read(fd, 1 << 16):
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    self._lines.put(line + b"\n")
                time.sleep(self.read_pause)
        except (OSError, ValueError):
            pass
        finally:
            if rest:
                self._lines.put(rest)
            self._lines.put(None)  # EOF: the JVM exited
            proc.stdout.close()

    def _pump_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                self._stderr_tail = [*self._stderr_tail[-4:], line.decode("utf-8", "replace").strip()]
        except (OSError, ValueError):
            pass
        finally:
            proc.stderr.close()

    def _fail(self, why: str) -> MeteorError:
        self.close()  # ends the JVM and drains its stderr, so the last message below is complete
        detail = next((t for t in reversed(self._stderr_tail) if t), "")
        self.unavailable_reason = f"METEOR unavailable: {why}" + (f" ({detail})" if detail else "")
        return MeteorError(self.unavailable_reason)

    def _read(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise self._fail(f"the JVM gave no answer within {timeout:.0f} s") from None
        if line is None:
            code = self._proc.poll() if self._proc else None
            raise self._fail(f"the JVM exited (code {code})")
        return line.decode("utf-8", "replace").strip()

    def _write(self, text: str) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(text.encode("utf-8"))
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._fail("the JVM closed its input") from None

    def _ensure(self) -> None:
        if not self.available:
            raise MeteorError(self.unavailable_reason or "METEOR unavailable")
        if self._proc is None:
            self.start()
            if not self.available:
                raise MeteorError(self.unavailable_reason or "METEOR unavailable")

    def warm_up(self) -> None:
        """Block until the JVM has loaded and answered one request."""
        with self._lock:
            self._ensure()
            if not self._warm:
                self._write("SCORE ||| a dog ||| a dog\n")
                self._read(self.startup_timeout)
                self._warm = True

    def segment_stats(self, pairs: Sequence[tuple[str, Sequence[str]]], chunk: int = 64,
                      progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Sufficient statistics (n, 23) for (hypothesis, references) pairs, in order; `progress(n)` is
        told after each chunk of n segments (a progress bar's advance)."""
        out = np.zeros((len(pairs), N_STATS))
        if not pairs:
            return out
        self.warm_up()
        starts = list(range(0, len(pairs), chunk))

        def send(k: int) -> None:
            if k < len(starts):
                self._write("".join(score_line(h, refs) + "\n" for h, refs in pairs[starts[k] : starts[k] + chunk]))

        with self._lock:
            self._ensure()
            send(0)
            for k, start in enumerate(starts):
                send(k + 1)  # the JVM always has the next chunk queued: it never waits for this thread
                for i in range(start, min(start + chunk, len(pairs))):
                    line = self._read(self.segment_timeout)
                    values = line.split()
                    if len(values) != N_STATS:
                        raise self._fail(f"unexpected answer {line[:80]!r} for segment {i}")
                    out[i] = [float(v) for v in values]
                if progress is not None:
                    progress(min(start + chunk, len(pairs)) - start)
        return out

    def eval_stats(self, stats: np.ndarray) -> tuple[list[float], float]:
        """The jar's own `EVAL`: per-segment scores and the aggregate (used to verify the formula)."""
        self.warm_up()
        rows = [" ".join(repr(float(v)) for v in row) for row in np.atleast_2d(stats)]
        with self._lock:
            self._ensure()
            self._write("EVAL ||| " + " ||| ".join(rows) + "\n")
            scores = [float(self._read(self.segment_timeout)) for _ in rows]
            return scores, float(self._read(self.segment_timeout))

    def _cleanup_tmp(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def close(self) -> None:
        """End the JVM (idempotent)."""
        proc, self._proc = self._proc, None
        self._warm = False
        if proc is not None:
            with contextlib.suppress(Exception):
                if proc.stdin:
                    proc.stdin.close()
            with contextlib.suppress(Exception):
                proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
            for pump in self._pumps:
                if pump is not threading.current_thread():
                    pump.join(timeout=5)
        self._cleanup_tmp()
        _LIVE.discard(self)

    @classmethod
    def shared(cls, paraphrase: Path | None = None) -> MeteorProcess:
        """One process-wide JVM (started on first use, ended at interpreter exit): for an evaluation
        grid, a CLI run, or a test session. A dead or closed one, or one with another table, is replaced."""
        global _SHARED
        with _SHARED_LOCK:
            current = _SHARED
            if (current is None or current._proc is None or current._proc.poll() is not None
                    or current.paraphrase != paraphrase):
                if current is not None:
                    current.close()
                _SHARED = cls(paraphrase=paraphrase)
            return _SHARED

    def __enter__(self) -> MeteorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


@atexit.register
def _kill_all() -> None:
    for proc in list(_LIVE):
        proc.close()


def meteor_scores(
    process: MeteorProcess, pairs: Sequence[tuple[str, Sequence[str]]]
) -> tuple[float, np.ndarray, np.ndarray]:
    """Corpus METEOR, per-pair METEOR and the statistics, as pycocoevalcap's Meteor.compute_score."""
    stats = aggregable(process.segment_stats(pairs))
    return float(meteor_from_stats(stats.sum(0))), meteor_from_stats(stats), stats


def start_meteor(refs: Mapping[Any, Sequence[str]], token_cache: dict[str, str],
                 java: JavaRuntime | None = None, build: bool = False,
                 captions: Iterable[str] = ()) -> tuple[MeteorProcess, set[str] | None]:
    """Start (or reuse) the shared METEOR JVM for these references, with the cached reduced
    paraphrase table when one covers their vocabulary (`build`: make one first if none does, for a
    reference set of >= REDUCE_MIN_IMAGES images). PTB-tokenises the references, and `captions` about
    to be scored (one tokenizer JVM for both), into `token_cache` (pass it on to the Scorer). Returns
    the process and the vocabulary (None without Java)."""
    runtime = java or find_java()
    if not runtime.available:  # an unavailable process says why; never a JVM left from an earlier run
        return MeteorProcess(runtime), None
    texts = list(dict.fromkeys(t for ts in refs.values() for t in ts))
    fingerprint = references_fingerprint(texts)
    known = table_for_references(fingerprint)
    if known is not None:  # a reference set seen before: its JVM loads while the tokenizer runs
        MeteorProcess.shared(paraphrase=known)
    try:
        todo = [t for t in dict.fromkeys([*texts, *(c for c in captions if isinstance(c, str))])
                if t not in token_cache]
        token_cache.update(zip(todo, ptb_tokenize(todo, runtime), strict=True))
    except TokenizerError:  # the Scorer falls back to another tokenizer: the reduced table may not cover it
        return MeteorProcess.shared(), None
    vocab = paraphrase_vocabulary(token_cache[t] for t in texts)
    table = known or cached_paraphrase_table(vocab)
    if table is None and build and len(refs) >= REDUCE_MIN_IMAGES:
        with contextlib.suppress(MeteorError, OSError):
            table = build_paraphrase_table(vocab)
    if table is not None and known is None:
        remember_table(table, fingerprint)
    return MeteorProcess.shared(paraphrase=table), vocab


def remember_references(vocab: set[str] | None, n_images: int, process: MeteorProcess) -> str | None:
    """After a run on a large reference set without a reduced paraphrase table, build one so later
    runs start the JVM ~3x faster. Returns a note, or None when nothing was done."""
    if vocab is None or process.paraphrase is not None or n_images < REDUCE_MIN_IMAGES or not process.available:
        return None
    start = time.perf_counter()
    table = build_paraphrase_table(vocab)
    return f"built a reduced METEOR paraphrase table for these references in {time.perf_counter() - start:.0f} s " \
           f"({table}); later runs on them start faster"
