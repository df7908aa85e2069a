"""The Java side of scoring: PTB tokens and METEOR statistics, fed to one JVM beside the Python work.

`start_meteor` starts (or reuses) the shared METEOR JVM for a reference set, with the reduced
paraphrase table when one is cached, and PTB-tokenises the references while it loads.
`MeteorPipeline` is a `Scorer`'s Java side: the PTB tokens (a cache shared between scorers), and the
METEOR segments of every (image, caption) pair, queued as captions arrive (`prefetch`, e.g. after
each batch an evaluation grid decodes) and run in order by one worker thread while the caller
generates captions or computes the Python metrics; `wait` shows a bar while the last ones finish.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from captune.metrics import meteor_tables as tables
from captune.metrics.java import JavaRuntime, find_java
from captune.metrics.meteor import MeteorError, MeteorProcess
from captune.metrics.tokenize import TokenizerError, fallback_tokenize, ptb_tokenize
from captune.progress import Bar


@contextlib.contextmanager
def timed(store: dict[str, float], key: str) -> Iterator[None]:
    """Adds the block's wall seconds to `store[key]` (reported under "timings" in scores.json)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        store[key] = store.get(key, 0.0) + time.perf_counter() - start


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
    fingerprint = tables.references_fingerprint(texts)
    known = tables.table_for_references(fingerprint)
    if known is not None:  # a reference set seen before: its JVM loads while the tokenizer runs
        MeteorProcess.shared(paraphrase=known)
    try:
        todo = [t for t in dict.fromkeys([*texts, *(c for c in captions if isinstance(c, str))])
                if t not in token_cache]
        token_cache.update(zip(todo, ptb_tokenize(todo, runtime), strict=True))
    except TokenizerError:  # the Scorer falls back to another tokenizer: the reduced table may not cover it
        return MeteorProcess.shared(), None
    vocab = tables.paraphrase_vocabulary(token_cache[t] for t in texts)
    table = known or tables.cached_paraphrase_table(vocab)
    if table is None and build and len(refs) >= tables.REDUCE_MIN_IMAGES:
        with contextlib.suppress(MeteorError, OSError):
            table = tables.build_paraphrase_table(vocab)
    if table is not None and known is None:
        tables.remember_table(table, fingerprint)
    return MeteorProcess.shared(paraphrase=table), vocab


def remember_references(vocab: set[str] | None, n_images: int, process: MeteorProcess) -> str | None:
    """After a run on a large reference set without a reduced paraphrase table, build one so later
    runs start the JVM ~3x faster. Returns a note, or None when nothing was done."""
    if vocab is None or process.paraphrase is not None or n_images < tables.REDUCE_MIN_IMAGES or not process.available:
        return None
    start = time.perf_counter()
    table = tables.build_paraphrase_table(vocab)
    return f"built a reduced METEOR paraphrase table for these references in {time.perf_counter() - start:.0f} s " \
           f"({table}); later runs on them start faster"


class MeteorPipeline:
    """A Scorer's PTB tokens and METEOR statistics, computed in worker threads.

    The Java side answers one request at a time, so each JVM's jobs run in order in one worker thread.
    `timings`, `unavailable` and `notes` are the Scorer's records, written here too.
    """

    def __init__(self, meteor: MeteorProcess | None, java: JavaRuntime, tokens: dict[str, str],
                 timings: dict[str, float], unavailable: dict[str, str], notes: list[str]) -> None:
        self.meteor, self.java, self.tokens = meteor, java, tokens  # tokens: raw text -> PTB tokens
        self.timings, self.unavailable, self.notes = timings, unavailable, notes
        self.tokenizer_name = ""
        self.ref_tokens: dict[Any, list[str]] = {}
        self.stats: dict[tuple[Any, str], np.ndarray] = {}  # (image id, PTB caption) -> 23 statistics
        self.jobs: list[Future[None]] = []  # METEOR jobs, in the order queued
        self._tokenize_jobs: list[Future[None]] = []
        self._queued: set[tuple[Any, str]] = set()  # raw (image id, caption) pairs already queued
        # Threads start on the first job: METEOR's JVM in one, the PTB tokenizer's own JVM in the other.
        self._java_jobs = ThreadPoolExecutor(max_workers=1, thread_name_prefix="captune-java")
        self._ptb_jobs = ThreadPoolExecutor(max_workers=1, thread_name_prefix="captune-ptb")
        # METEOR segments sent / scored, and the bar `wait` shows while it waits for them.
        self._total, self._done = 0, 0
        self._bar: Bar | None = None
        # Set once the references' PTB tokens exist (or their preparation failed: `_error`).
        self._refs_ready = threading.Event()
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ PTB tokens
    def tokenize(self, texts: Sequence[str]) -> None:
        """PTB-tokenise the texts not yet in the cache (one JVM call)."""
        todo = list(dict.fromkeys(t for t in texts if t not in self.tokens))
        if not todo:
            return
        if not self.tokenizer_name.startswith("NLTK"):
            try:
                self.tokens.update(zip(todo, ptb_tokenize(todo, self.java), strict=True))
                self.tokenizer_name = "Stanford PTBTokenizer 3.4.1 (pycocoevalcap)"
                return
            except TokenizerError as exc:
                self.tokenizer_name = f"NLTK Treebank fallback ({exc}); may differ slightly from COCO's"
                self.notes.append(f"coco tokenisation: {self.tokenizer_name}")
        self.tokens.update(zip(todo, fallback_tokenize(todo), strict=True))

    def tokenize_references(self, refs: Mapping[Any, Sequence[str]]) -> None:
        """Called by the Scorer's preparation thread: METEOR needs only these, not the rest of it."""
        with timed(self.timings, "prep: PTB-tokenise references"):
            self.tokenize([t for texts in refs.values() for t in texts])
        self.ref_tokens = {i: [self.tokens[t] for t in texts] for i, texts in refs.items()}
        self._refs_ready.set()

    def release(self, error: BaseException | None) -> None:
        """Preparation ended (`error`: how it failed): nobody waits for reference tokens any longer."""
        self._error = error
        self._refs_ready.set()

    def wait_references(self) -> None:
        with timed(self.timings, "score: wait for reference tokens"):
            self._refs_ready.wait()
        if self._error is not None:
            raise self._error

    def _tokenize_job(self, texts: list[str]) -> None:
        self.wait_references()
        self.tokenize(texts)

    # ------------------------------------------------------------------ METEOR
    def queue(self, raw_pairs: Sequence[tuple[Any, str]], tokenized: Future[None] | None = None) -> None:
        """Queue METEOR for raw (image id, caption) pairs not yet scored or queued; it starts once
        `tokenized` (their PTB tokenisation) is done."""
        if self.meteor is None or not self.meteor.available or "coco/METEOR" in self.unavailable:
            return
        todo = [p for p in dict.fromkeys(raw_pairs) if p not in self._queued]
        if todo:
            self._queued.update(todo)
            self.jobs.append(self._java_jobs.submit(self._meteor_job, todo, tokenized))

    def _meteor_job(self, raw_pairs: list[tuple[Any, str]], tokenized: Future[None] | None = None) -> None:
        if tokenized is not None:
            tokenized.result()
        keys = list(dict.fromkeys((i, self.tokens[c]) for i, c in raw_pairs))
        keys = [k for k in keys if k not in self.stats]
        if not keys or "coco/METEOR" in self.unavailable:
            return
        try:
            assert self.meteor is not None
            with timed(self.timings, "meteor thread: JVM warm-up"):
                self.meteor.warm_up()
            self._total += len(keys)
            if self._bar is not None:
                self._bar.set_total(self._total)
            with timed(self.timings, "meteor thread: segments"):
                stats = self.meteor.segment_stats([(tok, self.ref_tokens[i]) for i, tok in keys],
                                                  progress=self._scored)
            self.timings["meteor thread: segments scored"] = self.timings.get("meteor thread: segments scored", 0) \
                + len(keys)
            self.stats.update(zip(keys, stats, strict=True))
        except MeteorError as exc:
            self.unavailable["coco/METEOR"] = str(exc)
        except Exception as exc:
            self.unavailable["coco/METEOR"] = f"METEOR unavailable: {type(exc).__name__}: {exc}"

    def _scored(self, n: int) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.advance(n)

    def prefetch(self, raw_pairs: Sequence[tuple[Any, str]]) -> None:
        """Tokenise and queue METEOR for these raw (image id, caption) pairs in the background."""
        if not raw_pairs:
            return
        tokenized = self._ptb_jobs.submit(self._tokenize_job, [c for _, c in raw_pairs])
        self._tokenize_jobs.append(tokenized)
        self.queue(raw_pairs, tokenized)

    def tokenize_and_queue(self, raw_pairs: Sequence[tuple[Any, str]]) -> None:
        """`score()`'s start: the captions' PTB tokens (prefetched ones awaited), then METEOR queued for
        the rest, which runs in the Java worker while Python computes the other metrics."""
        self.wait_references()
        with timed(self.timings, "score: PTB-tokenise captions"):
            _wait(self._tokenize_jobs)
            self.tokenize([c for _, c in raw_pairs])
        self.queue(raw_pairs)

    def wait(self, progress: bool) -> None:
        """Wait for every queued METEOR segment, with a bar when `progress`."""
        if progress and self.jobs:
            self._bar = Bar("METEOR segments", self._total, completed=self._done)
        try:
            _wait(self.jobs)
        finally:
            bar, self._bar = self._bar, None
            if bar is not None:
                bar.close()

    def close(self) -> None:
        for jobs in (self._ptb_jobs, self._java_jobs):
            jobs.shutdown(wait=True, cancel_futures=True)


def _wait(jobs: list[Future[None]]) -> None:
    while jobs:
        jobs.pop(0).result()
