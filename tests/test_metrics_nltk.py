"""Paper-style NLTK scores equal NLTK's own corpus_bleu and meteor_score; WordNet is found offline."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from nltk.tokenize import NLTKWordTokenizer
from nltk.translate.bleu_score import corpus_bleu
from nltk.translate.meteor_score import meteor_score

from captune.metrics import nltk_style, nltk_wordnet
from captune.metrics.nltk_style import NltkMeteor, NltkReferences, nltk_bleu, nltk_bleu_vec, word_tokenize
from captune.metrics.nltk_wordnet import ReaderSynonyms, load_wordnet, nltk_reader_from_files

WEIGHTS = [(1.0,), (1 / 2, 1 / 2), (1 / 3, 1 / 3, 1 / 3), (1 / 4, 1 / 4, 1 / 4, 1 / 4)]
VOCAB = [
    "A", "a", "the", "dog", "dogs", "man", "men", "running", "ran", "runs", "on", "in", "red", "ball", "grass",
    "water", "big", "large", "child", "kids",
]


@pytest.fixture(scope="module")
def wordnet():
    source, where = load_wordnet()
    if source is None:
        pytest.skip(where)
    return source


@pytest.fixture(scope="module")
def nltk_reader(wordnet):
    """NLTK's own WordNet reader over the same files: the reference implementation."""
    if isinstance(wordnet, ReaderSynonyms):
        return wordnet.reader
    return nltk_reader_from_files(wordnet.root)


@pytest.fixture(scope="module")
def captions(flickr8k_dir: Path) -> tuple[list[list[str]], list[str]]:
    data = json.loads((flickr8k_dir / "dataset_flickr8k.json").read_text(encoding="utf-8"))
    images = [im for im in data["images"] if im["split"] == "test"][:250]
    refs = [[s["raw"] for s in im["sentences"]] for im in images]
    rng = random.Random(0)
    hyps = [refs[(k + rng.randint(0, 2)) % len(refs)][rng.randrange(5)] for k in range(len(refs))]
    return refs, hyps


def _bleu_check(refs: list[list[str]], hyps: list[str]) -> None:
    ids = range(len(refs))
    tokenised = NltkReferences(dict(zip(ids, refs, strict=True)))
    stats = np.array([tokenised.bleu_stats(i, word_tokenize(h)) for i, h in zip(ids, hyps, strict=True)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLTK warns about zero n-gram overlaps
        expected = corpus_bleu(
            [[[w.lower() for w in word_tokenize(r)] for r in rs] for rs in refs],
            [[w.lower() for w in word_tokenize(h)] for h in hyps],
            weights=WEIGHTS,
        )
    assert nltk_bleu(stats.sum(0)) == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(nltk_bleu_vec(stats.sum(0, keepdims=True))[0], expected, rtol=0, atol=1e-12)


def test_bleu_equals_corpus_bleu_on_flickr8k(captions) -> None:
    _bleu_check(*captions)


def test_bleu_equals_corpus_bleu_on_edge_cases() -> None:
    _bleu_check([["a dog runs on grass"], ["a cat"], ["two men"]], ["a dog", "", "x"])  # short, empty
    _bleu_check([["a dog runs"], ["a cat sits"]], ["the bird flies", "one fish swims"])  # no overlap at all
    _bleu_check([["a b c d e f"]], ["a b x c d y e f"])  # some 4-gram orders zero


def test_word_tokenize_equals_nltk(captions) -> None:
    refs, hyps = captions
    texts = [t for rs in refs for t in rs] + hyps + ['He said "don\'t" -- (ok) [x] ... U.S.A. 3.88 $5 «q»']
    reference = NLTKWordTokenizer()
    split, _ = nltk_style._sentence_splitter()
    assert [word_tokenize(t) for t in texts] == [[w for s in split(t) for w in reference.tokenize(s)] for t in texts]


def test_wordnet_files_give_nltk_synonyms(wordnet, nltk_reader, captions) -> None:
    refs, _ = captions
    words = sorted({w.lower() for rs in refs for r in rs for w in r.split()})[:600]
    words += ["Dogs", "ran", "geese", "better", "happiest", "axes", "went", "long", "", "U.S."]
    for w in words:
        assert wordnet.names(w) == {lemma.name() for s in nltk_reader.synsets(w) for lemma in s.lemmas()}, w


def test_meteor_equals_nltk_meteor_score(wordnet, nltk_reader, captions) -> None:
    refs, hyps = captions
    ours = NltkMeteor(wordnet)
    ref_tokens = [[word_tokenize(r) for r in rs] for rs in refs]
    hyp_tokens = [word_tokenize(h) for h in hyps]
    hyp_tokens[:4] = [[], ["Dogs", "RAN"], ["a"] * 40, ["the", "large", "kids", "running"]]
    for k, (rs, h) in enumerate(zip(ref_tokens, hyp_tokens, strict=True)):
        assert ours.score(rs, h, key=k) == meteor_score(rs, h, wordnet=nltk_reader), (rs, h)


def test_missing_wordnet_is_reported_with_the_fix(monkeypatch, tmp_path: Path) -> None:
    import nltk

    monkeypatch.delenv("CAPTUNE_WORDNET_DIR", raising=False)  # this test checks the search, not the hiding
    monkeypatch.setattr(nltk_wordnet, "_wordnet_dirs", lambda: [tmp_path])
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    nltk_wordnet._load_wordnet.cache_clear()
    try:
        source, reason = nltk_wordnet.load_wordnet()
    finally:
        nltk_wordnet._load_wordnet.cache_clear()
    assert source is None
    assert reason.startswith("nltk/METEOR unavailable:") and "python -m nltk.downloader wordnet" in reason
