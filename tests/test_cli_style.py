"""One CLI style, checked on every subcommand: output is `--out`, `--json` is a switch, `--format` means
output formats, waited-on stages take `--no-progress`, results on stdout and status on stderr."""

from __future__ import annotations

import io

import pytest

from captune.cli import app, main
from captune.progress import Bar, bars_wanted

WAITED_ON = {"demo", "run", "train", "eval", "caption", "score", "report", "data synth"}
OLD_SPELLINGS = {"--out-dir", "--output", "--output-dir", "--outdir", "--r", "--json-out"}


def _commands():
    """(path, click command) for every leaf command, walking groups."""
    import typer.main

    root = typer.main.get_command(app)
    todo = [((), root)]
    while todo:
        path, cmd = todo.pop()
        subs = getattr(cmd, "commands", None)
        if subs:
            todo.extend(((*path, name), sub) for name, sub in subs.items())
        else:
            yield " ".join(path), cmd


COMMANDS = dict(_commands())


def _options(cmd):
    return [p for p in cmd.params if getattr(p, "opts", None) and p.param_type_name == "option"]


def test_every_command_is_walked():
    assert {"demo", "run", "train", "eval", "caption", "score", "report", "data check", "data synth", "inspect",
            "tiny-model", "export"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_follows_the_conventions(name, capsys):
    assert main([*name.split(), "--help"]) == 0
    shown = capsys.readouterr().out
    cmd = COMMANDS[name]
    visible = [p for p in _options(cmd) if not getattr(p, "hidden", False)]
    spellings = {o for p in visible for o in (*p.opts, *p.secondary_opts)}
    assert not spellings & OLD_SPELLINGS, f"{name}: old spelling {spellings & OLD_SPELLINGS} still shown"
    for p in visible:
        if "--json" in p.opts:
            assert p.is_flag, f"{name}: --json must be a switch (write files with --out)"
        if "--format" in p.opts:
            assert name == "report", f"{name}: --format means output formats (report); name an input format else"
        if any(o.startswith("--out") for o in p.opts):
            assert p.opts == ["--out"], f"{name}: output location is spelled --out, not {p.opts}"
    if name in WAITED_ON:
        assert "--no-progress" in spellings and "--no-progress" in shown, f"{name}: no --no-progress"


def test_old_spellings_still_work_with_a_deprecation_line(capsys):
    assert main(["inspect", "--model", "tiny-opt", "--r", "4"]) == 0
    captured = capsys.readouterr()
    assert "--r is deprecated" in captured.err and "--rank" in captured.err
    assert "trainable:" in captured.out
    assert main(["inspect", "--model", "tiny-opt", "-r", "4"]) == 0
    assert "deprecated" not in capsys.readouterr().err


def test_bars_only_on_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("CAPTUNE_NO_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not bars_wanted(True)  # a pipe or a CI log: no escape codes
    assert Bar("x", 3).progress is None
    monkeypatch.setattr("sys.stderr", Tty())
    assert bars_wanted(True) and not bars_wanted(False)  # --no-progress wins
    monkeypatch.setenv("CAPTUNE_NO_PROGRESS", "1")
    assert not bars_wanted(True)
    monkeypatch.delenv("CAPTUNE_NO_PROGRESS")
    with Bar("x", 3) as bar:
        assert bar.progress is not None
        bar.advance(2, "half")
    assert bar.progress is None


def test_results_on_stdout_status_on_stderr(tmp_path, capsys):
    """A script can pipe a command's results: status lines ('wrote ...') never mix into stdout."""
    assert main(["tiny-model", "--out", str(tmp_path / "m")]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "saved tiny BLIP-2" in captured.err
