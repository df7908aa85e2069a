"""The foundation commands as a user types them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from captune.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "captune", *args], capture_output=True, text=True, timeout=300)


def test_help_and_version_from_a_shell() -> None:
    res = _run("--help")
    assert res.returncode == 0 and "inspect" in res.stdout and "tiny-model" in res.stdout
    res = _run("--version")
    assert res.returncode == 0 and res.stdout.startswith("captune ")


def test_exit_skips_teardown_but_runs_exit_handlers_and_waits_for_threads() -> None:
    script = (
        "import atexit, sys, threading, time\n"
        "from captune.cli import run\n"
        "atexit.register(lambda: print('handler ran'))\n"
        "if sys.argv[1:] == ['thread']:\n"
        "    threading.Thread(target=lambda: (time.sleep(0.5), print('thread finished'))).start()\n"
        "sys.argv = ['captune', '--version']\n"
        "run()\n"
    )
    for extra, expected in (([], ["captune ", "handler ran"]), (["thread"], ["captune ", "thread finished",
                                                                              "handler ran"])):
        res = subprocess.run([sys.executable, "-c", script, *extra], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        assert [next(i for i, line in enumerate(lines) if line.startswith(e)) for e in expected] == \
            sorted(range(len(expected))), res.stdout


def test_inspect_real_size_from_a_shell() -> None:
    res = _run("inspect", "--model", "blip2-opt-2.7b", "--lora", "qformer+lm")
    assert res.returncode == 0, res.stderr
    assert "3.745 B" in res.stdout and "vision encoder adapted: False" in res.stdout
    assert "qformer.encoder.layer.0.attention.attention.query" in res.stdout


def test_inspect_unknown_model_is_one_line_user_error() -> None:
    res = _run("inspect", "--model", "no-such-model")
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "not a known preset" in res.stderr
    assert "Traceback" not in res.stderr


def test_tiny_model_then_export_merge(tmp_path: Path, capsys) -> None:
    from peft import PeftModel  # noqa: F401
    from transformers import Blip2ForConditionalGeneration

    from captune.config import LoraConfig
    from captune.model.adapters import save_adapter
    from captune.model.lora import apply_lora

    assert main(["tiny-model", "--family", "t5", "--out", str(tmp_path / "tiny")]) == 0
    base = Blip2ForConditionalGeneration.from_pretrained(tmp_path / "tiny")
    peft_model, _ = apply_lora(base, LoraConfig(), "t5")
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.01)
    save_adapter(peft_model, tmp_path / "adapter")
    assert main(["export", "--adapter", str(tmp_path / "adapter"), "--out", str(tmp_path / "merged"), "--merge"]) == 0
    merged = Blip2ForConditionalGeneration.from_pretrained(tmp_path / "merged")
    name = "language_model.encoder.block.0.layer.0.SelfAttention.q.weight"
    original = Blip2ForConditionalGeneration.from_pretrained(tmp_path / "tiny")
    assert not torch.equal(merged.state_dict()[name], original.state_dict()[name])
    assert main(["export", "--adapter", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 1
    assert "adapter folder not found" in capsys.readouterr().err


def test_tiny_model_rejects_bad_sizes(tmp_path: Path, capsys) -> None:
    assert main(["tiny-model", "--out", str(tmp_path / "t"), "--image-size", "30", "--patch-size", "8"]) == 1
    assert "multiple" in capsys.readouterr().err
