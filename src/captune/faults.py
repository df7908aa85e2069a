"""Fault injection for tests of the resume and skip guarantees (hard kills, non-finite losses, full disks).

Set `CAPTUNE_FAULT` to a comma-separated list of `ACTION@POINT:N`, e.g. `kill@after-step:3`,
`kill@checkpoint-write:2`, `nan@step:4`, `diskfull@checkpoint:2`, `kill@grid-system:2`. Unset in
normal use; each check is one dict lookup.
"""

from __future__ import annotations

import errno
import os
import signal


def _parse() -> dict[tuple[str, str], set[int]]:
    spec = os.environ.get("CAPTUNE_FAULT", "")
    out: dict[tuple[str, str], set[int]] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        action, _, rest = item.partition("@")
        point, _, n = rest.partition(":")
        if n.isdigit():
            out.setdefault((action, point), set()).add(int(n))
    return out


def _armed(action: str, point: str, n: int) -> bool:
    return n in _parse().get((action, point), set())


def maybe_kill(point: str, n: int) -> None:
    """SIGKILL this process at `point` number `n` if asked (no cleanup runs, as in a real crash)."""
    if _armed("kill", point, n):
        os.kill(os.getpid(), signal.SIGKILL)


def nonfinite_loss(step: int) -> bool:
    return _armed("nan", "step", step)


def maybe_disk_full(point: str, n: int) -> None:
    if _armed("diskfull", point, n):
        raise OSError(errno.ENOSPC, "No space left on device (injected)")
