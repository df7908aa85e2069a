"""The one progress bar every waited-on stage uses: rich, on stderr, and only where someone watches.

Results go to stdout and status to stderr, so `captune eval ... > results.md` stays clean; a bar is
drawn only when stderr is a terminal, `--no-progress` was not given and `CAPTUNE_NO_PROGRESS` is not 1
(CI logs and pipes get no escape codes).
"""

from __future__ import annotations

import os
import sys
from types import TracebackType


def bars_wanted(enabled: bool = True) -> bool:
    """Whether a bar should be drawn: asked for, not switched off by the environment, stderr a terminal."""
    if not enabled or os.environ.get("CAPTUNE_NO_PROGRESS") == "1":
        return False
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


class Bar:
    """A labelled bar with a count, an info field and time left; every method is a no-op when disabled."""

    def __init__(self, label: str, total: int | None, enabled: bool = True, completed: int = 0,
                 elapsed: bool = False) -> None:
        self.progress = None
        if not bars_wanted(enabled):
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = [TextColumn(label), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[info]}")]
        columns += [TimeElapsedColumn()] if elapsed else []
        self.progress = Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True))
        self.task = self.progress.add_task(label, total=total, completed=completed, info="")
        self.progress.start()

    def advance(self, n: int = 1, info: str | None = None) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=n, **({"info": info} if info is not None else {}))

    def update(self, completed: int, info: str | None = None) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=completed, **({"info": info} if info is not None else {}))

    def set_total(self, total: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, total=total)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
