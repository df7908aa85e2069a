"""Sharded evaluation: under `accelerate launch` / torchrun each process captions a share of the batches.

Batches, not images, are shared out: a batch's captions depend on its position (sampling seeds are
`seed + 1000 * k + start`) and on which images it holds (padding, fused generate calls), so process r
takes the global batches r, r + N, r + 2N, ... and each is exactly the batch one process would caption.
Process 0 gathers the captions, writes them in image order, scores and writes the report; the others
return once their captions are handed over. In one process nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from captune.env import launched_processes

Batches = dict[str, dict[int, list[str]]]  # prediction file -> {batch start: captions}


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1
    state: Any = None  # accelerate's PartialState under a launch (the process's device), else None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def starts(self, n_images: int, batch_size: int) -> list[int]:
        """The first image index of each batch this process captions."""
        return list(range(self.rank * batch_size, n_images, self.world * batch_size))

    def gather(self, obj: Any) -> list[Any] | None:
        """Every process's `obj` in rank order on process 0; None on the others (a collective call)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world if self.main else None
        dist.gather_object(obj, out, dst=0)
        return out


def current_shard() -> Shard:
    """This process's share: one process unless launched with WORLD_SIZE > 1 (then the process group
    is set up by accelerate, gloo on CPUs, each process on its own GPU otherwise)."""
    if launched_processes() <= 1:
        return Shard()
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return Shard(state.process_index, state.num_processes, state)


def merge(parts: list[Batches]) -> dict[str, list[str]]:
    """The processes' batches of each prediction file, joined in image order."""
    out: dict[str, list[str]] = {}
    for name in parts[0]:
        batches = {start: caps for part in parts for start, caps in part[name].items()}
        out[name] = [c for start in sorted(batches) for c in batches[start]]
    return out
