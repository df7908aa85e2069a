"""Paper-style scores through NLTK, labelled `nltk/...` so nobody mistakes them for COCO's.

- `nltk/BLEU-1..4`: `nltk.translate.bleu_score.corpus_bleu` with uniform cumulative weights, no
  smoothing, on `word_tokenize` tokens lower-cased (many captioning papers compute BLEU this way;
  it differs from COCO's BLEU in tokenisation, in counting at least one n-gram per short caption,
  and in its zero-match rule). Computed from per-image counts with NLTK's arithmetic; tests compare
  with `corpus_bleu`.
- `nltk/METEOR`: `nltk.translate.meteor_score.meteor_score` per image against all references on
  `word_tokenize` tokens, averaged — what Hugging Face `evaluate`'s "meteor" returns. Not METEOR
  1.5: another matcher, other parameters, no paraphrases. `NltkMeteor` redoes NLTK 3.10's matching
  over cached stems and synonym sets (NLTK rebuilds them for every reference); tests compare with
  NLTK's `meteor_score` itself.

Data: WordNet 3.0 for the synonym stage (found offline by `captune.metrics.nltk_wordnet`).
`word_tokenize` needs the Punkt model; without `punkt_tab` data, sentences are split by
NLTK's untrained Punkt, which gives the same tokens for ordinary one-sentence captions (a note says so).
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from captune.metrics.nltk_wordnet import WordNetFiles

BLEU_STATS = 10  # hyp_len, closest_ref_len, numerator_1..4, denominator_1..4
_LOG_MIN = math.log(sys.float_info.min)


@lru_cache(maxsize=1)
def _sentence_splitter() -> tuple[Any, str | None]:
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        from nltk.tokenize import sent_tokenize

        return sent_tokenize, None
    except LookupError:
        from nltk.tokenize.punkt import PunktSentenceTokenizer

        note = "nltk tokenisation: Punkt model (punkt_tab) not installed; sentences split by untrained Punkt"
        return PunktSentenceTokenizer().tokenize, note


_RE_FLAGS = re.IGNORECASE | re.MULTILINE | re.DOTALL | re.UNICODE | re.VERBOSE | re.ASCII


def _stdlib(obj: Any) -> Any:
    """The same pattern(s) compiled with stdlib `re` (NLTK 3.10 routes every regex through its
    `redos` timeout wrapper, ~15 us per call; these patterns are linear, and tests check that the
    tokens are identical)."""
    if isinstance(obj, tuple):
        return tuple(_stdlib(x) for x in obj)
    if isinstance(obj, list):
        return [_stdlib(x) for x in obj]
    if hasattr(obj, "pattern") and hasattr(obj, "sub"):
        return re.compile(obj.pattern, int(obj.flags) & _RE_FLAGS)
    return obj


@lru_cache(maxsize=1)
def _word_tokenizer() -> Any:
    """NLTK's word tokenizer (its own `tokenize` method), its patterns recompiled with stdlib `re`
    when that is possible (Python >= 3.11 for possessive quantifiers); else NLTK's as is."""
    from nltk.tokenize import NLTKWordTokenizer

    names = ("STARTING_QUOTES", "ENDING_QUOTES", "PUNCTUATION", "PARENS_BRACKETS", "CONVERT_PARENTHESES",
             "DOUBLE_DASHES", "CONTRACTIONS2", "CONTRACTIONS3")
    try:
        fast = type("_StdlibWordTokenizer", (NLTKWordTokenizer,),
                    {n: _stdlib(getattr(NLTKWordTokenizer, n)) for n in names if hasattr(NLTKWordTokenizer, n)})
        tok = fast()
        if tok.tokenize("He said, \"don't\" (twice)... ok?") != NLTKWordTokenizer().tokenize(
            "He said, \"don't\" (twice)... ok?"
        ):
            raise ValueError("stdlib patterns disagree")
        return tok
    except (re.error, ValueError, TypeError):
        return NLTKWordTokenizer()


def word_tokenize(text: str) -> list[str]:
    """`nltk.word_tokenize` (falling back to untrained Punkt for sentence splitting)."""
    split, _ = _sentence_splitter()
    tok = _word_tokenizer()
    return [t for sent in split(text) for t in tok.tokenize(sent)]


def tokenizer_note() -> str | None:
    return _sentence_splitter()[1]


# --------------------------------------------------------------------------- BLEU


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


class NltkReferences:
    """Tokenised references (NLTK tokens) and, per image, the max count of every 1..4-gram over its
    (lower-cased) references — what NLTK's modified_precision recomputes for every hypothesis."""

    def __init__(self, refs: Mapping[Any, Sequence[str]], n: int = 4) -> None:
        self.n = n
        self.tokens = {i: [word_tokenize(r) for r in texts] for i, texts in refs.items()}
        self._max: dict[Any, dict[tuple[str, ...], int]] = {}
        self._lens: dict[Any, list[int]] = {}
        for i, toks in self.tokens.items():
            best: dict[tuple[str, ...], int] = {}
            for t in toks:
                low = [w.lower() for w in t]
                for k in range(1, n + 1):
                    for g, c in _ngrams(low, k).items():
                        if c > best.get(g, 0):
                            best[g] = c
            self._max[i] = best
            self._lens[i] = [len(t) for t in toks]

    def bleu_stats(self, image_id: Any, hyp_tokens: Sequence[str]) -> np.ndarray:
        """NLTK's per-sentence contributions to corpus_bleu: lengths, numerators, denominators."""
        hyp = [t.lower() for t in hyp_tokens]
        best = self._max[image_id]
        out = np.zeros(BLEU_STATS)
        out[0] = len(hyp)
        out[1] = min(self._lens[image_id], key=lambda rl: (abs(rl - len(hyp)), rl))
        for k in range(1, self.n + 1):
            counts = _ngrams(hyp, k)
            out[1 + k] = sum(min(c, best.get(g, 0)) for g, c in counts.items())
            out[5 + k] = max(1, sum(counts.values()))
        return out


def brevity_penalty(hyp_len: float, ref_len: float) -> float:
    """NLTK's `brevity_penalty` (1 for a hypothesis longer than the closest reference, 0 when empty)."""
    if hyp_len > ref_len:
        return 1.0
    return 0.0 if hyp_len == 0 else math.exp(1 - ref_len / hyp_len)


def nltk_bleu(sums: Sequence[float], n: int = 4) -> list[float]:
    """NLTK corpus_bleu (weights (1/k,)*k, no smoothing) from summed stats, in NLTK's arithmetic."""
    hyp_len, ref_len = sums[0], sums[1]
    nums = [round(x) for x in sums[2 : 2 + n]]
    dens = [round(x) for x in sums[6 : 6 + n]]
    if nums[0] == 0:
        return [0.0] * n
    bp = brevity_penalty(hyp_len, ref_len)
    logs = [math.log(nu / de) if nu != 0 else _LOG_MIN for nu, de in zip(nums, dens, strict=True)]
    out = []
    for k in range(1, n + 1):
        w = 1 / k
        out.append(bp * math.exp(math.fsum(w * lg for lg in logs[:k])))
    return out


def nltk_bleu_vec(sums: np.ndarray, n: int = 4) -> np.ndarray:
    """Vectorised `nltk_bleu` for bootstrap replicates (B, 10) -> (B, n); equal to ~1e-15."""
    s = np.asarray(sums, dtype=np.float64)
    hyp_len, ref_len = s[:, 0], s[:, 1]
    nums, dens = s[:, 2 : 2 + n], s[:, 6 : 6 + n]
    with np.errstate(divide="ignore", invalid="ignore"):
        bp = np.where(hyp_len > ref_len, 1.0, np.where(hyp_len == 0, 0.0, np.exp(1 - ref_len / hyp_len)))
        logs = np.where(nums > 0, np.log(nums / dens), _LOG_MIN)
    cum = np.cumsum(logs, axis=1) / np.arange(1, n + 1)
    out = bp[:, None] * np.exp(cum)
    out[nums[:, 0] == 0] = 0.0
    return out


# --------------------------------------------------------------------------- METEOR




def _greedy_match(hyp: list[tuple[int, str]], ref: list[tuple[int, str]], matches: list[tuple[int, int]]
                  ) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """NLTK's `_match_enums`: from the last hypothesis word back, pair it with the last still-free
    equal reference word; returns what is left unmatched."""
    free: dict[str, list[int]] = {}
    for j, (_, w) in enumerate(ref):
        free.setdefault(w, []).append(j)
    used_h, used_r = set(), set()
    for i in range(len(hyp) - 1, -1, -1):
        positions = free.get(hyp[i][1])
        if positions:
            j = positions.pop()
            used_h.add(i)
            used_r.add(j)
            matches.append((hyp[i][0], ref[j][0]))
    return ([p for i, p in enumerate(hyp) if i not in used_h], [p for j, p in enumerate(ref) if j not in used_r])


class NltkMeteor:
    """Hugging Face `evaluate`'s METEOR: NLTK's `meteor_score` (alpha 0.9, beta 3, gamma 0.5) per
    image against all its references, here re-expressed over cached stems and synonym sets.

    The matching is NLTK 3.10's, stage by stage: exact, then Porter stems, then WordNet synonyms,
    each greedy from the last hypothesis word to the last free reference position; chunks counted
    over matches sorted by hypothesis position; the best reference wins. NLTK itself costs ~2 ms per
    image (it rebuilds every synonym set for every reference); tests compare with it directly.
    """

    ALPHA, BETA, GAMMA = 0.9, 3.0, 0.5

    def __init__(self, wordnet: WordNetFiles) -> None:
        from nltk.stem.porter import PorterStemmer

        self.synsets = wordnet
        self.stem = lru_cache(maxsize=None)(PorterStemmer().stem)
        self._refs: dict[Any, list[tuple[list[tuple[int, str]], list[str]]]] = {}

    def _prepared(self, tokens: Sequence[str]) -> tuple[list[tuple[int, str]], list[str]]:
        low = [w.lower() for w in tokens]
        return list(enumerate(low)), [self.stem(w) for w in low]

    def _single(self, ref_p: tuple[list[tuple[int, str]], list[str]],
                hyp_p: tuple[list[tuple[int, str]], list[str]]) -> float:
        hyp, hyp_stems = hyp_p
        ref, ref_stems = ref_p
        matches: list[tuple[int, int]] = []
        hyp_left, ref_left = _greedy_match(hyp, ref, matches)
        stem_h = [(i, hyp_stems[i]) for i, _ in hyp_left]
        stem_r = [(j, ref_stems[j]) for j, _ in ref_left]
        # As in NLTK, the synonym stage sees what the stem stage left: stems, not the words.
        hyp_w, ref_w = _greedy_match(stem_h, stem_r, matches)
        taken: set[int] = set()
        for i in range(len(hyp_w) - 1, -1, -1):
            syns = self.synsets.synonyms(hyp_w[i][1])
            for j in range(len(ref_w) - 1, -1, -1):
                if j not in taken and ref_w[j][1] in syns:
                    taken.add(j)
                    matches.append((hyp_w[i][0], ref_w[j][0]))
                    break
        return self._score(len(hyp), len(ref), sorted(matches, key=lambda m: m[0]))

    def _score(self, hyp_len: int, ref_len: int, matches: list[tuple[int, int]]) -> float:
        m = len(matches)
        try:
            precision = float(m) / hyp_len
            recall = float(m) / ref_len
            fmean = (precision * recall) / (self.ALPHA * precision + (1 - self.ALPHA) * recall)
            chunks = 1
            for k in range(m - 1):
                if not (matches[k + 1][0] == matches[k][0] + 1 and matches[k + 1][1] == matches[k][1] + 1):
                    chunks += 1
            frag = float(chunks) / m
        except ZeroDivisionError:
            return 0.0
        return (1 - self.GAMMA * frag**self.BETA) * fmean

    def score(self, references: Sequence[Sequence[str]], hypothesis: Sequence[str], key: Any = None) -> float:
        """NLTK's meteor_score: the best reference. `key` (e.g. the image id) caches the references'
        preprocessing across hypotheses."""
        refs = self._refs.get(key) if key is not None else None
        if refs is None:
            refs = [self._prepared(r) for r in references]
            if key is not None:
                self._refs[key] = refs
        hyp = self._prepared(hypothesis)
        return max(self._single(r, hyp) for r in refs)
