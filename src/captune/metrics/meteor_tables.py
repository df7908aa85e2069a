"""METEOR's paraphrase table reduced to a reference set's vocabulary, cached between runs.

Loading METEOR's 5.3M-entry paraphrase table is ~90% of the JVM's start-up. A paraphrase match
pairs a hypothesis phrase with a reference phrase, so an entry can only ever match if one of its
two phrases consists of words that occur in the references. Keeping just those entries changes
no alignment (checked on Flickr8K: identical statistics) and cuts start-up ~3x. The reduced table
depends only on the reference vocabulary, so it is built once per reference set and cached.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from captune.cache import cache_path
from captune.io import atomic_write_bytes, atomic_write_text
from captune.metrics.java import meteor_paraphrase
from captune.metrics.meteor import MeteorError

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
    return cache_path("meteor")


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
    meta = table.with_suffix(".json")
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(meta.read_text(encoding="utf-8"))
        if fingerprint not in info.get("references", []):
            info["references"] = [*info.get("references", []), fingerprint][-32:]
            atomic_write_text(meta, json.dumps(info))


def build_paraphrase_table(vocab: set[str]) -> Path:
    """Write (atomically) and return the paraphrase table reduced to entries that can match `vocab`."""
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
