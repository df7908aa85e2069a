"""`captune eval CONFIG` (the baseline grid) and `captune caption --model M [--adapter A] IMAGES...`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from captune.cli import app, say
from captune.config import GenerateConfig, apply_overrides, config_from_dict, load_config
from captune.errors import ConfigError, DataError

console = Console()
DEVICE_HELP = "auto | cpu | cuda | cuda:N | mps (overrides model.device; auto: CUDA when present)."
DTYPE_HELP = "fp32 | bf16 | fp16 (overrides model.dtype)."
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@app.command("eval")
def eval_command(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, e.g. --set data.max_images=200."),
    adapter: Path | None = typer.Option(None, "--adapter", help="Adapter folder (default: RUN_DIR/adapter)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    device: str | None = typer.Option(None, "--device", help=DEVICE_HELP),
    dtype: str | None = typer.Option(None, "--dtype", help=DTYPE_HELP),
) -> None:
    """Run the baseline grid on the eval split: predictions/*.json, scores.json, results.md (resumable)."""
    from captune.grid.run import run_grid
    from captune.model.device import cli_overrides, resolve_device

    cfg = load_config(config, [*set_, *cli_overrides(device, dtype)])
    resolve_device(cfg.model.device, where="--device" if device else "config key 'model.device'")
    result = run_grid(cfg, adapter_dir=adapter, progress=not no_progress)
    if result.reused:
        say(f"reused finished systems: {', '.join(result.reused)}")
    if result.skipped_images:
        say(f"left out {len(result.skipped_images)} unreadable images from every system; "
            f"first: {result.skipped_images[0]}")
    typer.echo((cfg.run_dir / "results.md").read_text(encoding="utf-8"))
    say(f"scores: {cfg.run_dir / 'scores.json'}")


def _expand(inputs: list[Path]) -> list[Path]:
    paths: list[Path] = []
    for item in inputs:
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


@app.command("caption")
def caption_command(
    images: list[Path] = typer.Argument(..., help="Image files or folders."),
    model: str | None = typer.Option(None, "--model", help="Hub id, model folder, or tiny-opt/tiny-t5 "
                                     "(default: the --config's model, else the adapter's base)."),
    adapter: Path | None = typer.Option(None, "--adapter", help="LoRA adapter folder (PEFT layout)."),
    config: Path | None = typer.Option(None, "--config", help="Run config: its model and generate section are "
                                       "the defaults."),
    prompt: str | None = typer.Option(None, "--prompt", help="Text the caption continues (never echoed; default: "
                                      "the adapter's training prompt, else generate.prompt)."),
    num_beams: int | None = typer.Option(None, "--num-beams"),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens"),
    sample: bool | None = typer.Option(None, "--sample/--no-sample", help="Nucleus sampling instead of greedy/beam."),
    top_p: float | None = typer.Option(None, "--top-p"),
    num_captions: int | None = typer.Option(None, "--num-captions", help="Captions per image (beams or samples)."),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    device: str | None = typer.Option(None, "--device", help=DEVICE_HELP),
    dtype: str | None = typer.Option(None, "--dtype", help=DTYPE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Caption images with a base model, optionally with a LoRA adapter, decoding as the adapter's run
    (or --config's generate section) says unless a flag says otherwise."""
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
    paths = _expand(images)
    run_cfg = load_config(config, overrides) if config is not None else None
    record = read_adapter_record(adapter) if adapter else None
    model_cfg, settings, bs = _caption_setup(model, adapter, run_cfg, record, overrides,
                                            read_adapter_config(adapter) if adapter else {})
    changes = {k: v for k, v in (("prompt", prompt), ("num_beams", num_beams), ("max_new_tokens", max_new_tokens),
                                 ("do_sample", sample), ("top_p", top_p), ("num_return_sequences", num_captions))
               if v is not None}
    settings = replace(settings, **changes)
    n = settings.num_return_sequences
    if n > 1 and not settings.do_sample and settings.num_beams < n:
        raise ConfigError(f"--num-captions {n} needs --sample or --num-beams >= {n}")
    target = resolve_device(model_cfg.device, where="--device" if device else "config key 'model.device'")
    loaded = load_blip2(model_cfg, device=target)
    net = load_adapter(loaded.model, adapter) if adapter else loaded.model
    captioner = Captioner(net, loaded.processor, loaded.family)
    captions = captioner.caption_paths([str(p) for p in paths], settings, adapter=adapter is not None,
                                       batch_size=batch_size or bs)
    typer.echo(f"captioning on {captioner.device} ({model_cfg.dtype})", err=True)  # after: errors stay one line
    if as_json:
        typer.echo(json.dumps([{"image": str(p), "captions": c} for p, c in zip(paths, captions, strict=True)],
                              ensure_ascii=False, indent=2))
        return
    table = Table("image", "caption")
    for p, caps in zip(paths, captions, strict=True):
        table.add_row(p.name, "\n".join(caps))
    console.print(table)


def _caption_setup(model: str | None, adapter: Path | None, run_cfg, record: dict | None, overrides: list[str],
                   peft_cfg: dict):
    """Model section, decoding and batch size before the flags: --config, else the adapter's record, else
    caption's own defaults. An adapter continues its training prompt (as the grid's LoRA systems do)."""
    from captune.errors import ModelError
    from captune.generate.systems import settings_from

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
    settings = settings_from(gen)
    if adapter is not None and train_prompt is not None:
        settings = replace(settings, prompt=train_prompt)
    return model_cfg, settings, gen.batch_size
