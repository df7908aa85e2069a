"""Karpathy split JSON (`dataset_flickr8k.json`, `dataset_flickr30k.json`, `dataset_coco.json`).

`images[].{filename, filepath?, split, sentences[].raw, imgid, cocoid?}`. COCO's `restval` split
(30k images Karpathy moved out of val) stays `restval` unless folded into train on request.
Ids: `cocoid` when present (so predictions line up with COCO annotation files), else `imgid`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from captune.data.records import (
    Entry,
    LoadedDataset,
    ProblemLog,
    canonical_split,
    clean_captions,
    finish_dataset,
    name_of,
)
from captune.errors import DataError

IMAGE_DIR_NAMES = ("Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k-images", "flickr30k_images", "images",
                   "Images", "coco")


def read_json(path: Path) -> Any:
    """Parse a JSON file (BOM tolerated) or raise DataError naming the file and the position."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; check data.path")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 (byte {exc.start}); save the file as UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}); "
                        "fix or re-download the file") from None


def is_karpathy(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and isinstance(data.get("images"), list)
        and any(isinstance(i, dict) and "sentences" in i for i in data["images"][:10])
    )


def _caption_text(sentence: Any) -> str | None:
    if isinstance(sentence, str):
        return sentence
    if isinstance(sentence, dict):
        raw = sentence.get("raw")
        if isinstance(raw, str):
            return raw
        tokens = sentence.get("tokens")
        if isinstance(tokens, list):
            return " ".join(str(t) for t in tokens)
    return None


def load_karpathy(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    restval_to_train: bool = False,
    data: Any = None,
) -> LoadedDataset:
    """Read a Karpathy split JSON; `data` lets format detection pass the already-parsed file."""
    path = Path(os.path.abspath(path))
    if data is None:
        data = read_json(path)
    if not is_karpathy(data):
        raise DataError(f"{path}: not a Karpathy split JSON (needs images[].sentences); "
                        "set the right data.format (--data-format)")
    log = ProblemLog()
    label = path.name
    entries: list[Entry] = []
    for position, item in enumerate(data["images"]):
        where = f"{label} images[{position}]"
        if not isinstance(item, dict) or not isinstance(item.get("filename"), str) or not item["filename"].strip():
            log.add("malformed_entry", f"{where}: no 'filename'; skipped")
            continue
        split = canonical_split(item.get("split", ""), restval_to_train)
        if split is None:
            log.add("unknown_split", f"{where}: unknown split {item.get('split')!r}; skipped")
            continue
        sentences = item.get("sentences")
        if not isinstance(sentences, list):
            log.add("malformed_entry", f"{where}: 'sentences' is not a list; skipped")
            continue
        texts = []
        for k, sentence in enumerate(sentences):
            text = _caption_text(sentence)
            if text is None:
                log.add("malformed_entry", f"{where}.sentences[{k}]: no 'raw' text; skipped")
                continue
            texts.append(text)
        refs = clean_captions(texts, log, where)
        filepath = item.get("filepath")
        file = f"{filepath}/{item['filename']}" if isinstance(filepath, str) and filepath else item["filename"]
        raw_id = item.get("cocoid", item.get("imgid"))
        image_id = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else None
        entries.append(Entry(file=file, split=split, refs=refs, where=where, image_id=image_id,
                             name=name_of(item["filename"])))
    base = path.parent
    return finish_dataset(entries, image_root, [base, *(base / n for n in IMAGE_DIR_NAMES)], log, path, "karpathy")
