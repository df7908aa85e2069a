"""Caption image files with a base model or a saved adapter: what `captune caption` and
`captune.caption()` both run.

Decoding defaults come from the run config's `generate` section when one is given, else from the
adapter's `captune_adapter.json` (so a saved adapter reproduces the system that was evaluated), else
caption's own defaults; explicit arguments override all of them. An adapter continues its training
prompt, as the grid's LoRA systems do.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from captune.config import GenerateConfig, RunConfig, apply_overrides, config_from_dict, config_to_dict, load_config
from captune.data.records import IMAGE_SUFFIXES
from captune.errors import ConfigError, DataError
from captune.progress import Bar


@dataclass
class CaptionedImages:
    paths: list[Path]
    captions: list[list[str]]  # per image: one caption, or several with num_captions
    device: str
    dtype: str


def results_json(paths: Sequence[Path], captions: Sequence[list[str]]) -> list[dict[str, object]]:
    """One entry per image, named by its path as given: `captune score` matches it to the reference image of
    the same file (a dataset's ids are its own, so no image_id is guessed here). `caption` is the first
    caption, the one scored; `captions` lists all of them (several with num_captions)."""
    return [{"file_name": p.as_posix(), "caption": c[0] if c else "", "captions": c}
            for p, c in zip(paths, captions, strict=True)]


def expand_images(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Image files as given, and the images inside folders (sorted)."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if not item.exists():
            raise DataError(f"{item}: no such image or folder; check the path")
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{item}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            paths.extend(found)
        else:
            paths.append(item)
    return paths


def caption_images(
    images: Sequence[str | os.PathLike[str]],
    *,
    model: str | None = None,
    adapter: str | os.PathLike[str] | None = None,
    config: RunConfig | str | os.PathLike[str] | None = None,
    prompt: str | None = None,
    num_beams: int | None = None,
    max_new_tokens: int | None = None,
    sample: bool | None = None,
    top_p: float | None = None,
    num_captions: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = False,
) -> CaptionedImages:
    """Caption image files (or folders of them). Errors name the flag of `captune caption`."""
    from captune.generate.captioner import Captioner
    from captune.model.adapters import load_adapter, read_adapter_config, read_adapter_record
    from captune.model.device import cli_overrides, resolve_device
    from captune.model.load import load_blip2

    for label, value in (("--num-beams", num_beams), ("--max-new-tokens", max_new_tokens),
                         ("--num-captions", num_captions), ("--batch-size", batch_size)):
        if value is not None and value <= 0:
            raise ConfigError(f"{label}: must be > 0, got {value}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"--top-p: must be in (0, 1], got {top_p}")
    overrides = cli_overrides(device, dtype)
    paths = expand_images(images)
    adapter_dir = Path(adapter) if adapter is not None else None
    if isinstance(config, RunConfig):
        run_cfg = config_from_dict(apply_overrides(config_to_dict(config), overrides))
    else:
        run_cfg = load_config(config, overrides) if config is not None else None
    record = read_adapter_record(adapter_dir) if adapter_dir else None
    model_cfg, gen = _caption_setup(model, adapter_dir, run_cfg, record, overrides,
                                    read_adapter_config(adapter_dir) if adapter_dir else {})
    changes = {k: v for k, v in (("prompt", prompt), ("num_beams", num_beams), ("max_new_tokens", max_new_tokens),
                                 ("do_sample", sample), ("top_p", top_p), ("num_return_sequences", num_captions))
               if v is not None}
    settings = replace(gen.decoding(), **changes)
    n = settings.num_return_sequences
    if n > 1 and not settings.do_sample and settings.num_beams < n:
        raise ConfigError(f"--num-captions {n} needs --sample or --num-beams >= {n}")
    target = resolve_device(model_cfg.device, where="--device" if device else "config key 'model.device'")
    loaded = load_blip2(model_cfg, device=target)
    net = load_adapter(loaded.model, adapter_dir) if adapter_dir else loaded.model
    captioner = Captioner(net, loaded.processor, loaded.family)
    with Bar("captions", len(paths), progress) as bar:
        captions = captioner.caption_paths([str(p) for p in paths], settings, adapter=adapter_dir is not None,
                                           batch_size=batch_size or gen.batch_size, progress=bar.advance)
    return CaptionedImages(paths, captions, str(captioner.device), model_cfg.dtype)


def _caption_setup(model: str | None, adapter: Path | None, run_cfg: RunConfig | None, record: dict | None,
                   overrides: list[str], peft_cfg: dict):
    """The model section and the `generate` section before the explicit arguments: the run config, else the
    adapter's record, else caption's own defaults. An adapter continues its training prompt."""
    from captune.errors import ModelError

    if run_cfg is not None:
        model_data = dataclasses.asdict(run_cfg.model)
        gen = run_cfg.generate
        train_prompt = run_cfg.train.prompt
    else:
        model_data, gen, train_prompt = {}, None, None
        if record is not None:
            model_data = {"name_or_path": record.get("base_model"), "revision": record.get("revision"),
                          "dtype": record.get("dtype") or "fp32"}
            train_prompt = record.get("train_prompt")
            try:
                gen = config_from_dict({"generate": record.get("generate") or {}}).generate
            except ConfigError as exc:
                raise ModelError(f"{adapter}/captune_adapter.json: {exc}; re-save the adapter") from None
        elif peft_cfg.get("base_model_name_or_path"):
            model_data = {"name_or_path": peft_cfg["base_model_name_or_path"]}
    if record is not None and "train_prompt" in record:
        train_prompt = record["train_prompt"]  # the prompt this adapter was trained on, whatever the config says
    if model is not None and model != model_data.get("name_or_path"):
        model_data.update(name_or_path=model, revision=None)
    if not model_data.get("name_or_path"):
        raise ConfigError("--model: required (no --config, and no adapter naming its base model)")
    model_cfg = config_from_dict({"model": {k: v for k, v in model_data.items() if v is not None}}).model
    if overrides:
        data = {"model": dataclasses.asdict(model_cfg)}
        model_cfg = config_from_dict(apply_overrides(data, overrides)).model
    if gen is None:
        gen = GenerateConfig(top_p=0.9, batch_size=16)  # caption's own defaults (nucleus 0.9 when sampling)
    if adapter is not None and train_prompt is not None:
        gen = replace(gen, prompt=train_prompt)
    return model_cfg, gen
