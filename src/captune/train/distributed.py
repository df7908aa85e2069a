"""Which multi-process launches captune supports, and the feature cache shared by the processes.

Supported: one process, or data parallel (`accelerate launch --num_processes N`, or torchrun): every
process holds the whole model and DDP averages the LoRA gradients. Refused with a one-line error:
DeepSpeed, FSDP and Megatron-LM. The loop prepares no dataloader (accelerate's DeepSpeed `prepare`
then has no micro-batch size), steps the optimizer itself (DeepSpeed's engine would step on every
micro-batch and cast the fp32 Q-Former to bf16), calls the frozen vision/Q-Former halves outside the
wrapped module's forward (FSDP's root forward never sees them) and saves the optimizer from process 0
alone (a sharded optimizer would lose the other shards).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch

from captune.errors import ConfigError
from captune.model.features import VisionFeatureStore, encode_readable

# accelerate's own switches, set by `accelerate launch --use_deepspeed / --use_fsdp` or its config file
REFUSED_ENV = {
    "ACCELERATE_USE_DEEPSPEED": "DeepSpeed",
    "ACCELERATE_USE_FSDP": "FSDP",
    "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM",
}
REFUSED_TYPES = {"DEEPSPEED": "DeepSpeed", "FSDP": "FSDP", "MEGATRON_LM": "Megatron-LM"}
_TRUE = {"1", "true", "yes", "y", "on", "t"}


def refuse_unsupported_launch(distributed_type: object = None) -> None:
    """Raise ConfigError under a DeepSpeed / FSDP / Megatron-LM launch; call before building an Accelerator.

    `distributed_type` is an accelerator's `distributed_type` (checked too, for a state set up in-process).
    """
    engine = next((name for var, name in REFUSED_ENV.items()
                   if os.environ.get(var, "").strip().lower() in _TRUE), None)
    if engine is None and distributed_type is not None:
        engine = REFUSED_TYPES.get(str(getattr(distributed_type, "value", distributed_type)).upper())
    if engine is not None:
        raise ConfigError(
            f"{engine} launches are not supported (the LoRA loop steps and checkpoints a whole, unsharded model); "
            "launch data parallel instead: `accelerate launch --num_processes N -m captune train CONFIG` "
            "(no --use_deepspeed / --use_fsdp, and no deepspeed/fsdp section in the accelerate config)"
        )


def fill_store(paths: Sequence[str | os.PathLike[str]], keys: Sequence[str], store: VisionFeatureStore,
               encode: Callable[[torch.Tensor], torch.Tensor], image_processor, batch_size: int,
               rank: int = 0, world: int = 1, barrier: Callable[[], None] = lambda: None,
               progress: Callable[[int], None] | None = None) -> dict[int, str]:
    """`encode_readable` shared by `world` processes: each encodes the uncached images of its share.

    With a disk store each process writes its share into its own shards; after `barrier` every
    process reads the others' shards and encodes only what is still missing (an unreadable image,
    whose error it then reports itself, or a cache folder that another machine cannot see). A memory
    store cannot be shared, so each process encodes every image. Returns {index: error}.
    """
    if world == 1 or store.directory is None:
        return encode_readable(paths, keys, store, encode, image_processor, batch_size, progress)
    # Shares of all images, not of the missing ones: what each process finds missing depends on when
    # it opened the store (another may already have written), and the shares must not depend on that.
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    mine = sorted(first.values())[rank::world]  # encode_readable skips those already cached
    encode_readable([paths[i] for i in mine], [keys[i] for i in mine], store, encode, image_processor, batch_size,
                    progress)
    barrier()
    store.refresh()
    return encode_readable(paths, keys, store, encode, image_processor, batch_size)
