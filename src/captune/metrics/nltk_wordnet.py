"""WordNet 3.0 for `nltk/METEOR`'s synonym stage, found and read offline.

`nltk.download` cannot run offline and no PyPI package ships WordNet, so a WordNet 3.0 dict folder
(`$CAPTUNE_WORDNET_DIR`, an unzipped nltk_data `corpora/wordnet`, or Debian's `wordnet-base` in
/usr/share/wordnet) is read directly (`WordNetFiles`), else a zipped nltk_data wordnet through NLTK's
reader (`ReaderSynonyms`); with none, nltk/METEOR is reported unavailable with the fix.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from captune.cache import cache_path
from captune.io import atomic_directory

_MARKER = re.compile(r"\([^()]*\)$")

# WordNet's 45 lexicographer files (wndb(5WN) / lexnames(5WN)); NLTK's reader needs this index,
# which Debian's wordnet-base does not ship.
_LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food",
    "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)
_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_WORDNET_FILES = (
    "adj.exc", "adv.exc", "noun.exc", "verb.exc", "data.adj", "data.adv", "data.noun", "data.verb",
    "index.adj", "index.adv", "index.noun", "index.verb",
)
WORDNET_FIX = (
    "on a connected machine run `python -m nltk.downloader wordnet`, or `apt-get install wordnet-base` "
    "(or point $CAPTUNE_WORDNET_DIR at a WordNet 3.0 dict folder)"
)


def wordnet_cache() -> Path:
    """Where a WordNet dict folder is copied, with the index NLTK's reader needs."""
    return cache_path("nltk_data", "corpora", "wordnet")


def _has_files(folder: Path) -> bool:
    return all((folder / f).is_file() for f in _WORDNET_FILES)


def _prepare_wordnet_dir(source: Path) -> Path:
    """Copy a WordNet 3.0 dict folder into our cache with the `lexnames` file NLTK's reader needs."""
    target = wordnet_cache()
    if (target / "lexnames").is_file() and _has_files(target):
        return target
    with atomic_directory(target) as tmp:
        for name in _WORDNET_FILES:
            shutil.copyfile(source / name, tmp / name)
        lines = [f"{i:02d}\t{name}\t{_POS_NUMBER[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES)]
        (tmp / "lexnames").write_text("".join(lines), encoding="utf-8")
    return target


def nltk_reader_from_files(source: str | Path) -> Any:
    """NLTK's own WordNetCorpusReader over a WordNet 3.0 dict folder (the reference in tests)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _WordNet30(WordNetCorpusReader):
        """WordNet 3.0 itself, so the 3.0->3.0 sense map (which needs index.sense) is the identity."""

        def map_wn(self, version: str = "wordnet") -> None:
            return None

    root = _prepare_wordnet_dir(Path(source))
    if str(root.parent.parent) not in nltk.data.path:  # NLTK only reads data under its search path
        nltk.data.path.append(str(root.parent.parent))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not needed here
        return _WordNet30(str(root), None)


def _wordnet_dirs() -> list[Path]:
    import nltk

    found = [Path(p) for p in [os.environ.get("CAPTUNE_WORDNET_DIR")] if p]
    found += [Path(p) / "corpora" / "wordnet" for p in nltk.data.path]
    found.append(Path("/usr/share/wordnet"))
    return found


def load_wordnet() -> tuple[Any | None, str]:
    """(synonym source, where it came from) or (None, one-line reason with the fix).

    A WordNet 3.0 dict folder (`$CAPTUNE_WORDNET_DIR`, an unzipped nltk_data `wordnet`, or Debian's
    /usr/share/wordnet) is read directly by `WordNetFiles`; a zipped nltk_data `wordnet` goes through
    NLTK's reader (slower to load). `CAPTUNE_WORDNET_DIR=none` hides WordNet (tests and CI check the
    no-WordNet path with it). Cached per value of the variable, so changing it takes effect at once."""
    setting = os.environ.get("CAPTUNE_WORDNET_DIR", "")
    if setting.strip().lower() == "none":
        return None, "nltk/METEOR unavailable: WordNet hidden by CAPTUNE_WORDNET_DIR=none (unset it to use WordNet)"
    return _load_wordnet(setting)


@lru_cache(maxsize=4)
def _load_wordnet(setting: str) -> tuple[Any | None, str]:
    import nltk

    for folder in _wordnet_dirs():
        if _has_files(folder):
            try:
                return WordNetFiles(folder), f"WordNet 3.0 files in {folder}"
            except (OSError, ValueError) as exc:
                return None, f"nltk/METEOR unavailable: could not read WordNet in {folder} ({exc}); {WORDNET_FIX}"
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        return None, f"nltk/METEOR unavailable: WordNet data not found; {WORDNET_FIX}"
    from nltk.corpus import wordnet

    try:
        wordnet.ensure_loaded()
    except Exception as exc:
        return None, f"nltk/METEOR unavailable: nltk's wordnet is unreadable ({exc}); {WORDNET_FIX}"
    return ReaderSynonyms(wordnet), "nltk_data wordnet (NLTK reader)"


class WordNetFiles:
    """WordNet 3.0 synonym look-ups straight from the dict files (index.*, data.*, *.exc).

    Does what NLTK's `wordnet.synsets(word)` + `lemma.name()` do for METEOR — lower-case, NLTK's
    `_morphy` (exception list, else one round of suffix rules; keep forms present in the index),
    then every synset's lemma names without the adjective marker — without building NLTK's full
    reader (~3 s: it parses all 155k index lines through a slow stream reader). Index lines are
    parsed only for the words asked about. Tests compare with NLTK's reader on the same files.
    """

    FILES: ClassVar[dict[str, str]] = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
    # NLTK's MORPHOLOGICAL_SUBSTITUTIONS (WordNet's morphy rules, wnintro(7WN)).
    RULES: ClassVar[dict[str, list[tuple[str, str]]]] = {
        "n": [("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"),
              ("shes", "sh"), ("men", "man"), ("ies", "y")],
        "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
        "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
        "r": [],
    }

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._index: dict[str, dict[str, bytes]] = {}
        self._exc: dict[str, dict[str, list[str]]] = {}
        for pos, name in self.FILES.items():
            lines: dict[str, bytes] = {}
            for line in (self.root / f"index.{name}").read_bytes().split(b"\n"):
                if line and not line.startswith(b" "):
                    key, _, rest = line.partition(b" ")
                    lines[key.decode("utf-8")] = rest
            self._index[pos] = lines
            exc: dict[str, list[str]] = {}
            for line in (self.root / f"{name}.exc").read_text(encoding="utf-8").splitlines():
                terms = line.split()
                if terms:
                    exc[terms[0]] = terms[1:]
            self._exc[pos] = exc
        self._data = {pos: (self.root / f"data.{name}").read_bytes() for pos, name in self.FILES.items()}
        self._offsets: dict[tuple[str, str], list[int]] = {}
        self._names_at: dict[tuple[str, int], tuple[str, ...]] = {}
        self._cache: dict[str, frozenset[str]] = {}

    def _offsets_of(self, form: str, pos: str) -> list[int]:
        key = (form, pos)
        hit = self._offsets.get(key)
        if hit is None:
            fields = self._index[pos][form].split()  # pos n_synsets n_pointers pointers.. n_senses n_tagged offsets..
            n_syn, n_ptr = int(fields[1]), int(fields[2])
            start = 3 + n_ptr + 2
            hit = self._offsets[key] = [int(x) for x in fields[start : start + n_syn]]
        return hit

    def _morphy(self, form: str, pos: str) -> list[str]:
        exceptions = self._exc[pos]
        if form in exceptions:
            forms = exceptions[form]
        else:
            forms = [form[: -len(old)] + new for old, new in self.RULES[pos] if form.endswith(old)]
        index = self._index[pos]
        out: list[str] = []
        for f in [form, *forms]:
            if f in index and f not in out:
                out.append(f)
        return out

    def _synset_names(self, pos: str, offset: int) -> tuple[str, ...]:
        key = (pos, offset)
        hit = self._names_at.get(key)
        if hit is None:
            data = self._data[pos]
            end = data.find(b"\n", offset)
            fields = data[offset : end if end >= 0 else None].decode("utf-8").split()
            count = int(fields[3], 16)
            hit = self._names_at[key] = tuple(_MARKER.sub("", w) for w in fields[4 : 4 + 2 * count : 2])
        return hit

    def names(self, word: str) -> set[str]:
        lemma = word.lower()
        out: set[str] = set()
        for pos in ("n", "v", "a", "r"):
            for form in self._morphy(lemma, pos):
                for offset in self._offsets_of(form, pos):
                    out.update(self._synset_names(pos, offset))
        return out

    def synonyms(self, word: str) -> frozenset[str]:
        """What NLTK's METEOR matches a hypothesis word against: names without "_", plus the word."""
        hit = self._cache.get(word)
        if hit is None:
            hit = self._cache[word] = frozenset({n for n in self.names(word) if "_" not in n} | {word})
        return hit


class ReaderSynonyms(WordNetFiles):
    """The same look-ups through an NLTK WordNet reader (zipped nltk_data, or tests)."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self._cache = {}

    def names(self, word: str) -> set[str]:
        return {lemma.name() for s in self.reader.synsets(word) for lemma in s.lemmas()}

