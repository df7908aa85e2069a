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
absolute path (or a cached reduced copy, see `captune.metrics.meteor_tables`), every segment made one line
without `|||`, a reader thread with deadlines so a stuck or dead JVM becomes a `MeteorError`
instead of a hang, and the JVM is killed on close, on interpreter exit, and on any error.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import re
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from captune.metrics.java import JavaRuntime, find_java, meteor_jar, meteor_paraphrase
from captune.metrics.tokenize import one_line

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


class MeteorProcess:
    """One METEOR 1.5 JVM in `-stdio` mode. Start it early; it loads while other work runs.

    Thread-safe: requests are serialised by a lock. `close()` (or the context manager, or interpreter
    exit) always ends the JVM.
    """

    def __init__(self, java: JavaRuntime | None = None, jvm_flags: Sequence[str] = DEFAULT_JVM_FLAGS,
                 startup_timeout: float = 180.0, segment_timeout: float = 60.0, start: bool = True,
                 paraphrase: Path | None = None) -> None:
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


def meteor_scores(process: MeteorProcess, pairs: Sequence[tuple[str, Sequence[str]]]
                  ) -> tuple[float, np.ndarray, np.ndarray]:
    """Corpus METEOR, per-pair METEOR and the statistics, as pycocoevalcap's Meteor.compute_score."""
    stats = aggregable(process.segment_stats(pairs))
    return float(meteor_from_stats(stats.sum(0))), meteor_from_stats(stats), stats
