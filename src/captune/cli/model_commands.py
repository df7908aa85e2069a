"""Model commands: tiny-model, inspect, export."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from captune.cli import app, deprecated, say
from captune.config import LoraConfig, config_from_dict
from captune.errors import ConfigError

console = Console()


def _fmt(n: int) -> str:
    for size, digits, unit in ((1e9, 3, "B"), (1e6, 2, "M"), (1e3, 1, "k")):
        if n >= size:
            return f"{n / size:.{digits}f} {unit}"
    return str(n)


def _lora_config(preset: str, r: int, alpha: int | None, target_regex: str | None, dora: bool) -> LoraConfig:
    data = {"preset": preset, "r": r, "alpha": alpha if alpha is not None else 2 * r, "use_dora": dora}
    if target_regex:
        data["target_regex"] = target_regex
    return config_from_dict({"lora": data}).lora


def _check_out(out: Path, markers: tuple[str, ...]) -> None:
    """Refuse an --out folder holding other files: a successful write replaces the folder as a whole."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not any((out / m).is_file() for m in markers):
        raise ConfigError(f"--out {out}: folder is not empty and holds no earlier output of this command "
                          "(it would be replaced as a whole); choose a new or empty folder")


@app.command("tiny-model")
def tiny_model(
    out: Path = typer.Option(..., "--out", help="Folder to write (Hugging Face layout)."),
    family: str = typer.Option("opt", "--family", help="opt or t5."),
    image_size: int = typer.Option(32, help="Image side in pixels."),
    patch_size: int = typer.Option(8, help="ViT patch side in pixels."),
    hidden: int = typer.Option(64, help="Hidden size of vision, Q-Former and LM."),
    layers: int = typer.Option(2, help="Layers in each of vision, Q-Former and LM."),
    num_query_tokens: int = typer.Option(8, help="Q-Former queries (BLIP-2 uses 32)."),
    tokenizer_dir: Path | None = typer.Option(
        None, help="Real vocabulary: a folder with vocab.json+merges.txt (opt) or spiece.model (t5)."
    ),
    seed: int = typer.Option(0, help="Initialisation seed."),
) -> None:
    """Save a tiny, randomly initialised BLIP-2 (OPT or Flan-T5 flavour) that from_pretrained loads."""
    from captune.model.tiny import TinySpec, save_tiny

    if family not in ("opt", "t5"):
        raise ConfigError(f"--family: {family!r} is not one of 'opt', 't5'")
    for label, value in (("--image-size", image_size), ("--patch-size", patch_size), ("--hidden", hidden),
                         ("--layers", layers), ("--num-query-tokens", num_query_tokens)):
        if value <= 0:
            raise ConfigError(f"{label}: must be > 0, got {value}")
    if image_size % patch_size:
        raise ConfigError(f"--image-size {image_size} is not a multiple of --patch-size {patch_size}")
    if hidden % 4:
        raise ConfigError(f"--hidden: must be a multiple of 4 (4 attention heads), got {hidden}")
    if tokenizer_dir is not None and not tokenizer_dir.is_dir():
        raise ConfigError(f"{tokenizer_dir}: tokenizer folder not found")
    _check_out(out, ("captune_tiny_spec.json", "config.json"))
    spec = TinySpec(
        family=family, image_size=image_size, patch_size=patch_size, vision_hidden=hidden, qformer_hidden=hidden,
        lm_hidden=hidden, lm_ffn=hidden * 2, vision_layers=layers, qformer_layers=layers, lm_layers=layers,
        num_query_tokens=num_query_tokens, seed=seed,
        tokenizer_dir=str(tokenizer_dir) if tokenizer_dir else None,
    )
    save_tiny(out, spec)
    say(f"saved tiny BLIP-2 ({family}) to {out}")


@app.command("inspect")
def inspect(
    model: str = typer.Option("blip2-opt-2.7b", "--model", help="Preset name, tiny-opt/tiny-t5, or a model folder."),
    lora: str = typer.Option("qformer+lm", "--lora", help="qformer | lm | qformer+lm | qformer+lm-wide | custom"),
    r: int = typer.Option(8, "--rank", "-r", help="LoRA rank."),
    old_r: int | None = typer.Option(None, "--r", hidden=True, help="Old spelling of --rank."),
    alpha: int | None = typer.Option(None, "--alpha", help="LoRA alpha (default 2r)."),
    target_regex: str | None = typer.Option(None, "--target-regex", help="Full-name regex for --lora custom."),
    dora: bool = typer.Option(False, "--dora", help="Use DoRA."),
    show_modules: int = typer.Option(12, "--show-modules", help="How many adapted module names to list."),
) -> None:
    """Parameters per component and the LoRA placement, built on the meta device (no weights needed)."""
    from captune.model.inspect import inspect_model

    if old_r is not None:
        deprecated("--r", "--rank / -r")
        r = old_r
    result = inspect_model(model, _lora_config(lora, r, alpha, target_regex, dora))
    table = Table(title=f"{result.name} ({result.family})")
    table.add_column("component")
    table.add_column("parameters", justify="right")
    table.add_column("trainable (LoRA)", justify="right")
    for comp in ("vision", "qformer", "projection", "lm"):
        table.add_row(comp, _fmt(result.base.per_component.get(comp, 0)),
                      _fmt(result.adapted.trainable_per_component.get(comp, 0)))
    table.add_row("total", _fmt(result.base.total), _fmt(result.adapted.trainable))
    console.print(table)
    share = result.adapted.trainable_share
    console.print(f"trainable: {result.adapted.trainable:,} of {result.adapted.total:,} ({share:.4%})")
    mods = result.placement.modules
    console.print(f"adapted modules ({len(mods)}), preset {lora!r}; vision encoder adapted: "
                  f"{any(m.startswith('vision_model') for m in mods)}")
    for name in mods[:show_modules]:
        console.print(f"  {name}")
    if len(mods) > show_modules:
        console.print(f"  ... {len(mods) - show_modules} more (--show-modules N)")


@app.command("export")
def export(
    adapter: Path = typer.Option(..., "--adapter", help="PEFT adapter folder (a run's adapter/)."),
    out: Path = typer.Option(..., "--out", help="Folder to write."),
    model: str | None = typer.Option(None, "--model", help="Base model (default: the adapter's base)."),
    merge: bool = typer.Option(False, "--merge", help="Merge LoRA into the weights (a plain BLIP-2 folder)."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N | mps (where to merge)."),
    dtype: str | None = typer.Option(None, "--dtype", help="fp32 | bf16 | fp16 (default: the adapter's run's)."),
) -> None:
    """Write the adapter (PEFT layout) or, with --merge, a merged full model whose outputs equal the adapted one."""
    from captune.config import apply_overrides
    from captune.io import atomic_write_json
    from captune.model.adapters import (
        CAPTUNE_ADAPTER,
        export_merged,
        load_adapter,
        read_adapter_config,
        read_adapter_record,
        save_adapter,
    )
    from captune.model.device import cli_overrides, model_device, resolve_device
    from captune.model.load import load_blip2

    overrides = cli_overrides(device, dtype)
    cfg = read_adapter_config(adapter)
    record = read_adapter_record(adapter)
    _check_out(out, ("config.json",) if merge else ("adapter_config.json",))
    base_name = model or (record or {}).get("base_model") or cfg.get("base_model_name_or_path")
    if not base_name:
        raise ConfigError(f"{adapter}: adapter_config.json names no base model; pass --model")
    model_data = {"name_or_path": base_name}
    if record is not None and base_name == record.get("base_model"):
        model_data.update({k: v for k, v in (("revision", record.get("revision")), ("dtype", record.get("dtype")))
                           if v is not None})
    model_cfg = config_from_dict(apply_overrides({"model": model_data}, overrides)).model
    loaded = load_blip2(model_cfg, device=resolve_device(model_cfg.device, where="--device" if device else
                                                         "config key 'model.device'"))
    peft_model = load_adapter(loaded.model, adapter)
    meta = {"adapter": str(adapter), "base_model": base_name, "revision": model_cfg.revision,
            "dtype": model_cfg.dtype, "merged": merge, "device": str(model_device(loaded.model)),
            "captune_adapter": record}
    if merge:
        export_merged(peft_model, loaded.processor, out)
        console.print(f"merged model written to {out} (load with Blip2ForConditionalGeneration.from_pretrained)")
    else:
        save_adapter(peft_model, out, record)
        console.print(f"adapter written to {out} (PEFT layout{', with ' + CAPTUNE_ADAPTER if record else ''})")
    atomic_write_json(out / "captune_export.json", meta)
    typer.echo(f"exported on {meta['device']} ({model_cfg.dtype})", err=True)  # a status line: stderr
