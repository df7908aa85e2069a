"""One typed config per run: sections model, lora, data, train, generate, eval.

Plain dataclasses with a small validator (instead of pydantic) so that errors name the key's full
path and the nearest valid name, and the resolved config round-trips through YAML unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from captune.cache import cache_path
from captune.config_types import build, typed
from captune.decoding import Decoding, System
from captune.errors import ConfigError


@dataclass
class ModelConfig:
    """Which BLIP-2 to load and how. `name_or_path`: a hub id, a local directory, or `tiny-opt`/`tiny-t5`."""

    name_or_path: str = "Salesforce/blip2-opt-2.7b"
    revision: str | None = None
    family: Literal["auto", "opt", "t5"] = "auto"
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    quantization: Literal["none", "8bit", "4bit"] = "none"
    trust_remote_code: bool = False
    local_files_only: bool = False
    # auto: the `accelerate launch` process's device, else CUDA when torch sees a GPU, else CPU (mps: ask for it)
    device: str = "auto"


DEVICE_SPEC = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(value: str, where: str = "config key 'model.device'") -> str:
    """A device spec is one of auto, cpu, cuda, cuda:N, mps; anything else is refused in one line."""
    if not isinstance(value, str) or not DEVICE_SPEC.fullmatch(value.strip()):
        raise ConfigError(f"{where}: {value!r} is not a device; use auto, cpu, cuda, cuda:N (e.g. cuda:0) or mps")
    return value.strip()


@dataclass
class LoraConfig:
    """Where LoRA goes and its shape (peft defaults where the recipe is silent)."""

    preset: Literal["qformer", "lm", "qformer+lm", "qformer+lm-wide", "custom"] = "qformer+lm"
    target_regex: str | None = None
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    use_dora: bool = False
    bias: Literal["none", "all", "lora_only"] = "none"
    adapt_vision: bool = False


@dataclass
class DataConfig:
    """Where the captions and images are, which format, which splits."""

    path: str = "../shared/data/flickr8k"
    format: Literal["auto", "flickr8k", "karpathy", "coco", "jsonl", "csv", "imagefolder"] = "auto"
    image_root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    eval_split: str = "eval"
    val_from_train: int = 0  # >0: validation = this many train images held out (seeded by train.seed), not val_split
    restval_to_train: bool = False
    max_images: int | None = None
    subset_seed: int = 0
    on_bad_image: Literal["skip", "error"] = "skip"
    verify_images: bool = False  # decode every image at load time (slower; catches truncated files early)


@dataclass
class TrainConfig:
    """Optimisation. Defaults follow LAVIS's BLIP-2 caption fine-tune and the PEFT BLIP-2 example."""

    epochs: float = 5.0
    max_steps: int | None = None
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float = 1.0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    seed: int = 42
    prompt: str = "a photo of"
    captions_per_image: Literal["all", "one"] = "all"
    max_caption_tokens: int = 40
    feature_cache: Literal["auto", "memory", "disk", "off"] = "auto"
    feature_cache_dir: str = ""  # empty = <cache root>/features (see captune.cache)
    gradient_checkpointing: bool = False
    augment: bool = False
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    validate_every: int = 0
    val_max_images: int = 200
    early_stopping_patience: int = 0
    max_bad_steps: int = 10
    tensorboard: bool = True  # TensorBoard events in train/tb/ (needs `pip install captune[tensorboard]`)

    def feature_directory(self) -> Path:
        """Where the disk feature cache lives: the configured folder, else the cache root's `features/`."""
        if self.feature_cache_dir:
            return Path(self.feature_cache_dir).expanduser()
        return cache_path("features")


@dataclass(frozen=True)
class GenerateConfig(Decoding):
    """The `generate` section: the default `Decoding` plus how many images go through one `generate` call.

    `captune caption` runs it; an `eval.systems` row takes every key it does not set from it (an adapter
    row without a prompt continues train.prompt). The default grid (no eval.systems) takes only
    max_new_tokens, min_new_tokens and seed from it: its systems set their own prompt and strategy."""

    batch_size: int = 32

    def decoding(self) -> Decoding:
        """Only the decoding keys (without the batch size)."""
        return Decoding(**{f.name: getattr(self, f.name) for f in fields(Decoding)})


@dataclass
class EvalConfig:
    """The baseline grid and how it is scored."""

    systems: list[System] | None = None  # YAML: name, adapter, samples and any generate key but batch_size
    reference_system: str = "zero-shot-greedy"
    metrics: list[str] = field(default_factory=lambda: ["coco", "rouge", "nltk", "diversity"])
    bootstrap_samples: int = 1000
    bootstrap_seed: int = 0
    human_baseline: bool = True
    spice: bool = False
    paired_trials: int = 1000
    self_bleu: bool = False
    allow_selection_overlap: bool = False  # let validation (adapter selection) use evaluated images; the report says so


@dataclass
class RunConfig:
    """Everything one run needs; written out resolved as `config.yaml` in the run directory."""

    name: str = "run"
    output_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


_SYSTEM_KEYS = {"name": str, "adapter": bool, "samples": int, **typing.get_type_hints(Decoding)}


def _systems(rows: Any, cfg: RunConfig) -> list[System]:
    """`eval.systems` rows as written (name, adapter, samples, and the decoding keys a row sets) as Systems:
    keys a row does not set come from `generate`; an adapter row without a prompt continues train.prompt."""
    if not isinstance(rows, list):
        raise ConfigError(f"config key 'eval.systems': expected a list of mappings (name, adapter, decoding "
                          f"keys), got {rows!r}")
    out = []
    for i, row in enumerate(rows):
        path = f"eval.systems[{i}]"
        if not isinstance(row, dict):
            raise ConfigError(f"config key '{path}': expected a mapping of settings, got {row!r}")
        given = typed(row, _SYSTEM_KEYS, path)
        name, adapter, samples = given.pop("name", ""), given.pop("adapter", False), given.pop("samples", 1)
        base = replace(cfg.generate.decoding(), prompt=cfg.train.prompt) if adapter else cfg.generate.decoding()
        out.append(System(name, adapter, replace(base, **given), samples))
    return out


_POSITIVE = {
    "train.batch_size", "train.grad_accum", "train.lr", "train.max_caption_tokens", "train.checkpoint_every",
    "train.max_bad_steps", "train.val_max_images", "generate.batch_size", "lora.r", "lora.alpha",
    "eval.bootstrap_samples",
}
_NON_NEGATIVE = {
    "train.epochs", "train.weight_decay", "train.warmup_steps", "train.max_grad_norm", "train.validate_every",
    "train.early_stopping_patience", "train.keep_checkpoints", "data.val_from_train",
}

def _check_ranges(cfg: RunConfig) -> None:
    def get(path: str) -> Any:
        section, key = path.split(".")
        return getattr(getattr(cfg, section), key)

    for path in _POSITIVE:
        v = get(path)
        if v is not None and v <= 0:
            raise ConfigError(f"config key '{path}': must be > 0, got {v!r}")
    for path in _NON_NEGATIVE:
        v = get(path)
        if v is not None and v < 0:
            raise ConfigError(f"config key '{path}': must be >= 0, got {v!r}")
    if cfg.train.lr > 1.0:
        raise ConfigError(f"config key 'train.lr': {cfg.train.lr} is absurd for AdamW; use e.g. 1e-4")
    if cfg.train.max_steps is not None and cfg.train.max_steps <= 0:
        raise ConfigError(f"config key 'train.max_steps': must be > 0 or null, got {cfg.train.max_steps}")
    if not 0.0 <= cfg.lora.dropout < 1.0:
        raise ConfigError(f"config key 'lora.dropout': must be in [0, 1), got {cfg.lora.dropout}")
    cfg.generate.check("generate")
    if cfg.data.max_images is not None and cfg.data.max_images <= 0:
        raise ConfigError(f"config key 'data.max_images': must be > 0 or null, got {cfg.data.max_images}")
    if cfg.lora.preset == "custom" and not cfg.lora.target_regex:
        raise ConfigError("config key 'lora.target_regex': required when lora.preset is 'custom'")
    check_device(cfg.model.device)
    if cfg.model.family == "t5" and cfg.model.dtype == "fp16":
        raise ConfigError("config key 'model.dtype': fp16 overflows in T5 (NaN losses); use bf16 or fp32")
    if cfg.model.family == "t5" and cfg.train.precision == "fp16":
        raise ConfigError("config key 'train.precision': fp16 overflows in T5 (NaN losses); use bf16 or fp32")
    names = [system.name for system in cfg.eval.systems or []]
    for i, system in enumerate(cfg.eval.systems or []):
        if not system.name:
            raise ConfigError(f"config key 'eval.systems[{i}].name': every system needs a name")
        if system.name in names[:i]:
            raise ConfigError(f"config key 'eval.systems[{i}].name': duplicate system name {system.name!r}")
        if system.samples < 1:
            raise ConfigError(f"config key 'eval.systems[{i}].samples': must be > 0, got {system.samples!r}")
        system.decode.check(f"eval.systems[{i}]")


def config_from_dict(data: dict[str, Any] | None) -> RunConfig:
    """Build and validate a RunConfig; raise ConfigError naming the key on any problem."""
    data = dict(data or {})
    rows = None
    if isinstance(data.get("eval"), dict) and "systems" in data["eval"]:  # resolved once generate is built
        data["eval"] = dict(data["eval"])
        rows = data["eval"].pop("systems")
    cfg = build(RunConfig, data)
    if rows is not None:
        cfg.eval.systems = _systems(rows, cfg)
    _check_ranges(cfg)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `section.key=value` (value read as YAML, so `1e-4`, `true`, `null`, `[a, b]` work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. --set train.lr=1e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. --set train.lr=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML 1.1 reads '1e-4' as a string; numbers users type should be numbers.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value) if any(c in value for c in ".eE") else int(value)
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return data


def _yaml_numbers(obj: Any) -> Any:
    """YAML 1.1 reads `1e-4` (no dot) as a string; turn such strings back into numbers."""
    if isinstance(obj, dict):
        return {k: _yaml_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_yaml_numbers(v) for v in obj]
    if isinstance(obj, str):
        s = obj.strip()
        if s and (s[0].isdigit() or s[0] in "+-.") and ("e" in s.lower()):
            try:
                return float(s)
            except ValueError:
                return obj
    return obj


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: config file not found; check the path (see configs/ for examples)")
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory; pass a YAML config file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text; save the config as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{p}: malformed YAML{where}: {problem}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections (model, lora, data, ...)")
    return _yaml_numbers(data)


def load_config(path: str | os.PathLike[str] | None = None, overrides: Sequence[str] | None = None,
                **sections: Any) -> RunConfig:
    """Read YAML (optional), apply `--set` overrides, then keyword sections (from Python:
    `load_config(model={"name_or_path": "tiny-opt"}, train={"max_steps": 10}, name="try")`), validate.
    Errors name the file and key."""
    data = read_yaml(path) if path is not None else {}
    apply_overrides(data, list(overrides or []))
    for key, value in sections.items():
        if isinstance(value, Mapping):
            section = data.setdefault(key, {})
            if not isinstance(section, dict):
                raise ConfigError(f"config key {key!r}: is not a section; pass {key}=<value> instead")
            section.update(value)
        else:
            data[key] = value
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{path}: {exc}") from None
        raise


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as YAML spells it: each system one flat mapping, its decoding spelled out."""
    data = dataclasses.asdict(cfg)
    if cfg.eval.systems is not None:
        data["eval"]["systems"] = [{"name": s.name, "adapter": s.adapter, **dataclasses.asdict(s.decode),
                                    "samples": s.samples} for s in cfg.eval.systems]
    return data


def dump_config(cfg: RunConfig, path: str | os.PathLike[str]) -> None:
    """Write the resolved config (every default spelled out) atomically."""
    from captune.io import atomic_write_text

    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)
    atomic_write_text(path, text)
