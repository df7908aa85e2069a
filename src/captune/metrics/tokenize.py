"""PTB tokenisation as COCO caption evaluation does it (Stanford PTBTokenizer, lower-cased,
punctuation dropped), in one JVM call for any number of captions.

Differences from pycocoevalcap's wrapper, all about robustness, none about the tokens of ordinary
captions: the input file lives in a temp directory we own (not the package folder), every character
Java treats as a line break is turned into a space first (otherwise one caption becomes two lines
and every later caption is scored against the wrong image), the line count is checked, and the
call has a timeout. Without Java we fall back to NLTK's Treebank tokenizer, which agrees with the
Stanford one on almost all captions; that choice is recorded with the scores.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from captune.metrics.java import JavaRuntime, corenlp_jar, find_java

# pycocoevalcap's list, kept verbatim so scores match it (note: the upper-case bracket tokens never
# match after -lowerCase, so "-lrb-" survives there too).
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# Everything str.splitlines() or java.io line readers split on.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_SENTINEL = "captunesentinelzq"


class TokenizerError(RuntimeError):
    """The PTB tokenizer process failed; the message says how."""


def one_line(text: str) -> str:
    """Replace line-break characters with spaces so a caption stays one line in any protocol."""
    return _LINE_BREAKS.sub(" ", text)


def _drop_punct(line: str) -> str:
    return " ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS)


def ptb_tokenize(texts: Sequence[str], java: JavaRuntime | None = None, timeout: float = 600.0) -> list[str]:
    """Tokenise `texts` with Stanford PTBTokenizer 3.4.1 (as pycocoevalcap), one JVM for all."""
    if not texts:
        return []
    runtime = java or find_java()
    jar = corenlp_jar()
    if not runtime.available or jar is None:
        why = runtime.source if not runtime.available else "pycocoevalcap's stanford-corenlp jar is missing"
        raise TokenizerError(f"PTB tokenizer unavailable: {why}")
    with tempfile.TemporaryDirectory(prefix="captune-ptb-") as tmp:
        src = Path(tmp) / "captions.txt"
        # A sentinel last line makes the line count checkable even if Java drops a trailing empty line.
        src.write_text("\n".join([*(one_line(t) for t in texts), _SENTINEL]), encoding="utf-8")
        cmd = [
            str(runtime.path), "-Dfile.encoding=UTF-8", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
            "-preserveLines", "-lowerCase", "-encoding", "UTF-8", str(src),
        ]
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise TokenizerError(f"PTB tokenizer timed out after {timeout:.0f} s on {len(texts)} captions") from None
        except OSError as exc:
            raise TokenizerError(f"PTB tokenizer could not start: {exc}") from None
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise TokenizerError(f"PTB tokenizer exited with code {proc.returncode}: {tail[0]}")
    lines = proc.stdout.decode("utf-8", "replace").split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    if len(lines) != len(texts) + 1 or lines[-1].strip() != _SENTINEL:
        raise TokenizerError(
            f"PTB tokenizer returned {len(lines) - 1} lines for {len(texts)} captions; refusing to misalign them"
        )
    return [_drop_punct(line) for line in lines[:-1]]


def fallback_tokenize(texts: Sequence[str]) -> list[str]:
    """Pure-Python stand-in for the PTB tokenizer (NLTK Treebank rules), used only without Java."""
    from nltk.tokenize import TreebankWordTokenizer

    tok = TreebankWordTokenizer()
    out = []
    for text in texts:
        words = [w.lower() for w in tok.tokenize(one_line(text), convert_parentheses=True)]
        out.append(" ".join(w for w in words if w not in PUNCTUATIONS))
    return out


def tokenize_captions(texts: Sequence[str], java: JavaRuntime | None = None) -> tuple[list[str], str]:
    """PTB-tokenise with Java when possible, else the NLTK fallback; also say which was used."""
    runtime = java or find_java()
    if runtime.available and corenlp_jar() is not None:
        return ptb_tokenize(texts, runtime), "Stanford PTBTokenizer 3.4.1 (pycocoevalcap)"
    reason = runtime.source if not runtime.available else "pycocoevalcap's CoreNLP jar is missing"
    return fallback_tokenize(texts), f"NLTK Treebank fallback ({reason}); may differ slightly from COCO's"
