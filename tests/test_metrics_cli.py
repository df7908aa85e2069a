"""`captune score` from the CLI: scores.json written atomically; bad predictions give one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from captune.cli import main

REFS = {"1": ["a dog runs on the grass", "a brown dog"], "2": ["two kids in water", "children swim"],
        "3": ["a man on a bike", "a cyclist"]}


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    (tmp_path / "refs.json").write_text(json.dumps(REFS), encoding="utf-8")
    good = [{"image_id": 1, "caption": "a dog runs"}, {"image_id": 2, "caption": "kids swim"},
            {"image_id": 3, "caption": "a man rides a bike"}]
    (tmp_path / "good.json").write_text(json.dumps(good), encoding="utf-8")
    (tmp_path / "same.json").write_text(json.dumps([{**g, "caption": "a dog"} for g in good]), encoding="utf-8")
    return tmp_path


def _run(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_score_writes_report(files: Path, capsys) -> None:
    out = files / "run" / "scores.json"
    code, text = _run(["score", "--pred", str(files / "good.json"), "--pred", f"flat={files / 'same.json'}",
                       "--refs", str(files / "refs.json"), "--out", str(out), "--bootstrap", "100",
                       "--trials", "100", "--self-bleu"], capsys)
    assert code == 0, text
    report = json.loads(out.read_text(encoding="utf-8"))
    assert set(report["systems"]) == {"good", "flat"}
    assert "coco/BLEU-4" in report["systems"]["good"]["metrics"]
    assert "div/Self-BLEU" in report["systems"]["flat"]["metrics"]
    assert report["predictions"]["flat"].endswith("same.json")
    assert "good" in text and "coco/CIDEr" in text  # the table


def test_human_baseline_command(files: Path, capsys) -> None:
    out = files / "human.json"
    code, text = _run(["score", "--human-baseline", str(files / "refs.json"), "--metrics", "rouge,diversity",
                       "--out", str(out), "--bootstrap", "50", "-q"], capsys)
    assert code == 0, text
    assert "human" in json.loads(out.read_text(encoding="utf-8"))["systems"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        ("[{\"image_id\": 1,", "malformed JSON at line 1"),
        ("{\"1\": \"a dog\"}", "expected a JSON list"),
        ("[]", "no predictions"),
        ("[{\"image_id\": \"1.jpg\", \"caption\": \"x\"}, {\"image_id\": 2.5, \"caption\": \"y\"}]",
         "2 of 2 image_ids are not integers"),
        ("[{\"image_id\": 1, \"caption\": 3}]", "1 of 1 captions are not strings"),
        ("[{\"image_id\": 1}]", "1 of 1 entries are not objects with"),
        ("[{\"image_id\": 1, \"caption\": \"a\"}, {\"image_id\": 1, \"caption\": \"b\"}, "
         "{\"image_id\": 2, \"caption\": \"c\"}, {\"image_id\": 3, \"caption\": \"d\"}]",
         "1 image_ids appear more than once"),
        ("[{\"image_id\": 1, \"caption\": \"a\"}, {\"image_id\": 9, \"caption\": \"b\"}]",
         "2 of 3 reference images have no prediction (first: 2); 1 predicted image_ids are not in the references"),
    ],
)
def test_bad_predictions_are_one_line_errors(files: Path, capsys, content: str, message: str) -> None:
    bad = files / "bad.json"
    bad.write_text(content, encoding="utf-8")
    code, text = _run(["score", "--pred", str(bad), "--refs", str(files / "refs.json"), "--metrics", "rouge"], capsys)
    assert code == 1
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "bad.json" in lines[0] and message in lines[0], text


def test_missing_inputs(files: Path, capsys) -> None:
    code, text = _run(["score", "--pred", str(files / "nope.json"), "--refs", str(files / "refs.json")], capsys)
    assert code == 1 and "nope.json: predictions file not found" in text
    code, text = _run(["score", "--refs", str(files / "refs.json")], capsys)
    assert code == 1 and "--pred" in text


def test_shell_command(files: Path) -> None:
    """`captune score` as a user runs it (a fresh process; no JVM-backed families to keep it quick)."""
    exe = Path(sys.executable).with_name("captune")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys; from captune.cli import run; run()"]
    out = files / "shell.json"
    proc = subprocess.run([*cmd, "score", "--pred", str(files / "good.json"), "--refs", str(files / "refs.json"),
                           "--metrics", "rouge,diversity", "--out", str(out), "-q"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text(encoding="utf-8"))["systems"]["good"]["metrics"]["rouge/ROUGE-1"]["value"] > 0
