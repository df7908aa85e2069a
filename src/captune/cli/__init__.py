"""The `captune` command: a thin typer app; each stage's commands live in a module beside this one.

Every command runs through `main()`, which turns errors into one line and a documented exit code
(0 ok, 1 user error, 2 internal error, 130 interrupted) instead of a traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

import typer

from captune import __version__
from captune.env import launched_processes
from captune.errors import EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError

app = typer.Typer(
    name="captune",
    help="LoRA-adapt frozen BLIP-2 captioners to a domain, evaluate a baseline grid, and report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"captune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """captune: train, evaluate and report LoRA-adapted BLIP-2 captioners."""


def say(message: str) -> None:
    """A status line (what was done, where it went): stderr, so stdout carries only results."""
    typer.echo(message, err=True)


def one_process_only(command: str) -> None:
    """Refuse a command under a multi-process launch it is not tested under (WORLD_SIZE > 1, as torchrun and
    `accelerate launch` set it): `train`, `eval` and `sweep` are (data parallel); `run` and `demo` are not."""
    if launched_processes() > 1:
        raise UserError(f"`captune {command}` runs in one process; under torchrun / accelerate launch run "
                        "`captune train CONFIG`, then `captune eval CONFIG` (both data parallel), or `captune sweep`")


def deprecated(old: str, new: str) -> None:
    """One line for a spelling kept one release for old scripts (CLI style: `--out` everywhere, ...)."""
    say(f"captune: warning: {old} is deprecated and goes in the next release; use {new}")


# Command modules register themselves on `app` when imported (one module per pipeline stage).
from captune.cli import (
    data_commands,
    demo_commands,
    eval_commands,
    model_commands,
    report_commands,
    score_commands,
    sweep_commands,
    train_commands,
)

_INTERRUPTED = "captune: interrupted; finished work is on disk and `--resume` continues it."


def _error_line(message: str) -> str:
    first = " ".join(str(message).strip().splitlines()) or "unknown error"
    return f"captune: error: {first}"


def _click_errors() -> tuple[type[Exception], ...]:
    """Usage-error types: click's own, and the copy typer >= 0.26 vendors as `typer._click`."""
    import click

    types: list[type[Exception]] = [click.exceptions.ClickException]
    try:
        from typer._click.exceptions import ClickException as VendoredClickException

        types.append(VendoredClickException)
    except ImportError:  # older typer: click itself
        pass
    return tuple(types)


def _usage_error(exc: Exception) -> int:
    """A bad command line: help for a bare group, else one line naming the problem and where help is."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        exc.show()  # type: ignore[attr-defined]
        return EXIT_USER_ERROR
    ctx = getattr(exc, "ctx", None)
    where = f"; see `{ctx.command_path} --help`" if ctx is not None else "; see `captune --help`"
    typer.echo(_error_line(exc.format_message().rstrip(".") + where), err=True)  # type: ignore[attr-defined]
    return EXIT_USER_ERROR


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and map exceptions to one-line messages and exit codes."""
    args = sys.argv[1:] if argv is None else argv
    # Library deprecation chatter (peft/transformers) is not for users of a CLI.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        code = app(args=args, prog_name="captune", standalone_mode=False)
    except UserError as exc:
        typer.echo(_error_line(str(exc)), err=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        typer.echo(_INTERRUPTED, err=True)
        return EXIT_INTERRUPTED
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("captune: aborted.", err=True)
        return EXIT_INTERRUPTED
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USER_ERROR
    except Exception as exc:  # click usage errors are user errors; anything else is our bug
        if isinstance(exc, _click_errors()):
            return _usage_error(exc)
        if os.environ.get("CAPTUNE_DEBUG"):
            raise
        typer.echo(
            _error_line(f"internal error ({type(exc).__name__}: {exc}). This is a bug in captune: "
                        "rerun with CAPTUNE_DEBUG=1 for the traceback and report it."),
            err=True,
        )
        return EXIT_INTERNAL_ERROR
    if code == EXIT_INTERRUPTED:  # typer >= 0.26 turns Ctrl-C into Exit(130), returned here, not raised
        typer.echo(_INTERRUPTED, err=True)
        return EXIT_INTERRUPTED
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def run() -> None:
    """Console-script wrapper."""
    _exit_without_teardown(main())


def _exit_without_teardown(code: int) -> None:
    """Exit once the command's work is done and written, skipping the interpreter's teardown of
    torch, transformers and peft (~2 s on 2 cores, after the last line is printed). Exit handlers
    still run (the METEOR JVM is ended, logs are flushed); with a non-daemon thread still alive the
    normal exit waits for it instead."""
    import atexit
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()  # the documented handlers, as a normal exit would run them
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
