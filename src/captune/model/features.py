"""The frozen halves of BLIP-2 as separate steps, and a store for the vision encoder's output.

The vision encoder is frozen and, without augmentation, sees each image identically every epoch
and in every evaluation system: its `last_hidden_state` is computed once and reused. The store's
key covers the model (name, revision, a digest of the vision weights), the image preprocessing and
the image file (path, size, mtime), so a stale entry is never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from captune.errors import DataError


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The Blip2ForConditionalGeneration under peft / DDP wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "get_base_model"):
            model = model.get_base_model()
        else:
            return model


def encode_images(model: torch.nn.Module, pixel_values: torch.Tensor, grad: bool = False) -> torch.Tensor:
    """ViT forward: `last_hidden_state` (batch, patches + 1, vision hidden). Without gradients unless
    `grad` (training with `lora.adapt_vision`, whose LoRA weights sit inside the ViT)."""
    blip = unwrap(model)
    dtype = next(blip.vision_model.parameters()).dtype
    with torch.set_grad_enabled(grad):
        return blip.vision_model(pixel_values=pixel_values.to(dtype), return_dict=True).last_hidden_state


def query_features(model: torch.nn.Module, image_embeds: torch.Tensor) -> torch.Tensor:
    """Q-Former (fp32, where LoRA lives) + language projection: the LM's image inputs.

    Mirrors `Blip2ForConditionalGeneration.get_image_features` after the vision forward, so the
    cached path computes exactly what the uncached one does. The Q-Former computes in fp32 even
    inside `accelerator.autocast()` (which would run its matmuls in bf16/fp16): fp32 storage alone
    is not fp32 arithmetic, and half-precision Q-Former activations are a known source of NaN losses.
    """
    blip = unwrap(model)
    embeds = image_embeds.to(blip.query_tokens.dtype)  # fp32: load_blip2 keeps Q-Former + query tokens fp32
    mask = torch.ones(embeds.shape[:-1], dtype=torch.long, device=embeds.device)
    kind = embeds.device.type  # `meta` (parameter counting, FLOPs) has no autocast to switch off
    off = torch.autocast(kind, enabled=False) if torch.amp.is_autocast_available(kind) else contextlib.nullcontext()
    with off:
        queries = blip.query_tokens.expand(embeds.shape[0], -1, -1)
        out = blip.qformer(query_embeds=queries, encoder_hidden_states=embeds, encoder_attention_mask=mask,
                           return_dict=True).last_hidden_state
    out = out.to(image_embeds.dtype)
    return blip.language_projection(out)


def vision_fingerprint(model: torch.nn.Module, name_or_path: str, revision: str | None = None) -> str:
    """Digest of what determines the vision output: name, revision, config and sampled weights."""
    blip = unwrap(model)
    h = hashlib.sha256()
    h.update(f"{name_or_path}\0{revision}\0".encode())
    h.update(json.dumps(blip.config.vision_config.to_dict(), sort_keys=True, default=str).encode())
    for pname, param in blip.vision_model.named_parameters():
        flat = param.detach().reshape(-1)
        stride = max(1, flat.numel() // 2048)
        sample = flat[::stride].float().cpu().numpy().tobytes()
        h.update(pname.encode())
        h.update(str(tuple(param.shape)).encode())
        h.update(str(param.dtype).encode())
        h.update(hashlib.sha256(sample).digest())
    return h.hexdigest()[:24]


def preprocessing_fingerprint(image_processor) -> str:
    cfg = image_processor.to_dict() if hasattr(image_processor, "to_dict") else {}
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def image_file_key(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise DataError(f"{p}: image file not found; check the dataset's image folder") from None
    return hashlib.sha256(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:32]


class VisionFeatureStore:
    """Vision features per image file, in memory or in memory-mapped safetensors shards on disk."""

    def __init__(self, namespace: str, directory: str | os.PathLike[str] | None = None,
                 dtype: torch.dtype = torch.float16) -> None:
        self.namespace = namespace
        self.dtype = dtype
        self.directory = Path(directory) / namespace if directory else None
        self._memory: dict[str, torch.Tensor] = {}
        self._index: dict[str, str] = {}
        self._open: dict[str, object] = {}  # shard name -> open safetensors handle
        self._lock = threading.Lock()
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._load_index()

    def _load_index(self) -> None:
        assert self.directory is not None
        known = set(self._index.values())
        for shard in sorted(self.directory.glob("shard-*.safetensors")):
            if shard.name in known:
                continue
            try:
                with safe_open(shard, framework="pt") as fh:
                    for key in fh.keys():  # noqa: SIM118 (safetensors handle, not a dict)
                        self._index[key] = shard.name
            except Exception:  # a damaged shard is ignored and recomputed, never trusted
                continue

    def refresh(self) -> None:
        """Index the shards other processes wrote since this store was opened (they are complete:
        each is renamed into place only after it is written)."""
        if self.directory is not None:
            with self._lock:
                self._load_index()

    def __contains__(self, key: str) -> bool:
        return key in self._memory or key in self._index

    def __len__(self) -> int:
        return len(set(self._memory) | set(self._index))

    def get(self, keys: Sequence[str]) -> torch.Tensor:
        """Stack the features of `keys` (all must be present)."""
        tensors = []
        by_shard: dict[str, list[str]] = {}
        for key in keys:
            if key in self._memory:
                continue
            by_shard.setdefault(self._index[key], []).append(key)
        loaded: dict[str, torch.Tensor] = {}
        for shard, shard_keys in by_shard.items():
            assert self.directory is not None
            fh = self._open.get(shard)
            if fh is None:  # kept open (memory-mapped): opening a shard per batch cost ~15 ms a step
                fh = self._open[shard] = safe_open(self.directory / shard, framework="pt")
            for key in shard_keys:
                loaded[key] = fh.get_tensor(key)
        for key in keys:
            tensors.append(self._memory[key] if key in self._memory else loaded[key])
        return torch.stack(tensors)

    def put(self, keys: Sequence[str], features: torch.Tensor) -> None:
        features = features.detach().to("cpu", self.dtype)
        with self._lock:
            if self.directory is None:
                for key, feat in zip(keys, features, strict=True):
                    self._memory[key] = feat.clone()
                return
            # A name no other writer (process, thread or store) can pick: numbering by the shards
            # already there let two writers choose the same name and one replace the other's shard.
            shard = self.directory / f"shard-{os.getpid()}-{uuid.uuid4().hex[:16]}.safetensors"
            tmp = shard.with_name(f".{shard.name}.tmp")
            save_file({k: f.clone().contiguous() for k, f in zip(keys, features, strict=True)}, str(tmp))
            os.replace(tmp, shard)
            for key in keys:
                self._index[key] = shard.name

    def ensure(self, keys: Sequence[str], compute: Callable[[list[int]], torch.Tensor], batch_size: int = 32,
               progress: Callable[[int], None] | None = None) -> None:
        """Compute features for missing keys in batches; `compute(indices)` returns their features."""
        todo = _first_missing(keys, self)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            self.put([keys[i] for i in chunk], compute(chunk))
            if progress is not None:
                progress(len(chunk))


def _first_missing(keys: Sequence[str], store: VisionFeatureStore) -> list[int]:
    """The first index of each key not yet in `store`, in order (a key listed twice is computed once)."""
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key not in store:
            first.setdefault(key, i)
    return list(first.values())


def store_for(model: torch.nn.Module, name_or_path: str, revision: str | None, image_processor,
              directory: str | os.PathLike[str] | None, dtype: torch.dtype) -> VisionFeatureStore:
    namespace = f"{vision_fingerprint(model, name_or_path, revision)}-{preprocessing_fingerprint(image_processor)}"
    namespace += f"-{str(dtype).removeprefix('torch.')}"
    return VisionFeatureStore(namespace, directory, dtype)


def open_for_model(path: str | os.PathLike[str], image_processor):
    """One image through the data stage's robust loader (DataError naming the file if it is broken),
    decoded at a reduced JPEG scale that still covers the processor's input size."""
    from captune.data import open_image

    size = image_processor.size
    side = max(size.get("height", 0), size.get("width", 0), size.get("shortest_edge", 0)) or None
    return open_image(path, draft_size=(side * 2, side * 2) if side else None)


def encode_readable(paths: Sequence[str | os.PathLike[str]], keys: Sequence[str], store: VisionFeatureStore,
                    encode: Callable[[torch.Tensor], torch.Tensor], image_processor,
                    batch_size: int = 32, progress: Callable[[int], None] | None = None) -> dict[int, str]:
    """Vision features of every readable image not yet in `store`, decoding each file once (the
    readability check is the decode); `progress(n)` after each batch. Returns {index: error} for the
    unreadable ones."""
    errors: dict[int, str] = {}
    todo = _first_missing(keys, store)
    for start in range(0, len(todo), batch_size):
        images, done = [], []
        for i in todo[start:start + batch_size]:
            try:
                images.append(open_for_model(paths[i], image_processor))
                done.append(i)
            except DataError as exc:
                errors[i] = str(exc)
        if images:
            store.put([keys[i] for i in done], encode(image_processor(images, return_tensors="pt")["pixel_values"]))
        if progress is not None:
            progress(len(todo[start:start + batch_size]))
    return errors


def pixel_values(paths: Sequence[str | os.PathLike[str]], image_processor,
                 transform: Callable | None = None) -> torch.Tensor:
    """Open images (the data stage's robust loader) and preprocess them as the checkpoint expects."""
    images = [open_for_model(p, image_processor) for p in paths]
    if transform is not None:
        images = [transform(img) for img in images]
    return image_processor(images, return_tensors="pt")["pixel_values"]
