"""What a sweep runs: `--grid KEY=V1,V2 ...` × `--seeds`, expanded into named, validated variants.

Every variant's config is built with captune's own `load_config` before anything trains, so a bad key or
value is one line naming it. Names come from the values (`lora.preset=qformer, seed 0` -> `qformer-s0`) and
are filesystem-safe and unique.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from captune.config import RunConfig, config_to_dict, load_config, parse_override
from captune.errors import ConfigError

VARIANTS_DIR = "variants"
BASELINES = "baselines"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclass
class Variant:
    """One training run of the sweep: its grid point (key -> value), seed, name and resolved config."""

    name: str
    point: dict[str, Any]
    seed: int
    cfg: RunConfig

    @property
    def group(self) -> str:
        """The grid point's name without the seed: what `mean ± sd over seeds` pools."""
        return self.name.rsplit("-s", 1)[0]

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir


@dataclass
class SweepSpec:
    """The whole sweep: the config it starts from, the variants, and where everything goes."""

    out: Path
    grid: list[tuple[str, list[Any]]]
    seeds: list[int]
    base: RunConfig  # the config as given (its own grid point is "the config's variant")
    variants: list[Variant] = field(default_factory=list)

    @property
    def own_point(self) -> dict[str, Any] | None:
        """The grid point equal to the config's own values, if the grid contains it."""
        data = config_to_dict(self.base)
        own = {key: _lookup(data, key) for key, _ in self.grid}
        points = {tuple(v.point.items()) for v in self.variants}
        return own if tuple(own.items()) in points else None


def _lookup(data: dict[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def parse_grid(texts: list[str]) -> list[tuple[str, list[Any]]]:
    """`KEY=V1,V2` -> (key, [typed values]); values are read as YAML, like `--set`."""
    grid: list[tuple[str, list[Any]]] = []
    for text in texts:
        if "=" not in text or not text.split("=", 1)[1].strip():
            raise ConfigError(f"--grid {text!r}: expected KEY=V1,V2,..., e.g. --grid lora.preset=qformer,lm")
        key, raw = text.split("=", 1)
        values = [parse_override(f"{key}={v.strip()}")[1] for v in raw.split(",") if v.strip()]
        key = key.strip()
        if key in ("train.seed", "name", "output_dir"):
            raise ConfigError(f"--grid {text!r}: {key} is set by the sweep; use --seeds for seeds")
        if any(key == k for k, _ in grid):
            raise ConfigError(f"--grid {key}: given twice; list all its values in one --grid")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"--grid {text!r}: a value is listed twice")
        grid.append((key, values))
    return grid


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected integers separated by commas, e.g. --seeds 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: expected distinct integers, e.g. --seeds 0,1,2")
    return seeds


def _label(key: str, value: Any) -> str:
    """A value as a name part: strings as they are, other values with the key's last part (`r8`, `lr0.001`)."""
    text = value if isinstance(value, str) else f"{key.rsplit('.', 1)[-1]}{value}"
    return _UNSAFE.sub("_", str(text)).strip("._") or "x"


def variant_names(points: list[dict[str, Any]], seeds: list[int]) -> list[list[str]]:
    """names[i][j]: grid point i, seed j. Falls back to key-qualified labels where short ones collide."""
    short = ["-".join(_label(k, v) for k, v in p.items()) or "config" for p in points]
    if len(set(short)) != len(short):
        short = ["-".join(_UNSAFE.sub("_", f"{k}_{v}") for k, v in p.items()) for p in points]
    if len(set(short)) != len(short):  # differ only in characters made safe: number them
        short = [f"{s}-{i}" for i, s in enumerate(short)]
    return [[f"{s}-s{seed}" for seed in seeds] for s in short]


def expand(config: str | Path | None, grid_texts: list[str], seeds: list[int] | None, out: str | Path,
           overrides: list[str] | None = None) -> SweepSpec:
    """Every variant's validated config (output `out/variants/NAME`, seed `train.seed`), before any work.

    Variants share one vision-feature cache on disk: the config's own folder if it caches on disk,
    else `out/features` (same fp32 features as a memory cache, so the same adapters)."""
    grid = parse_grid(grid_texts)
    base = load_config(config, overrides or [])
    seeds = seeds if seeds else [base.train.seed]
    out = Path(out)
    share: dict[str, Any] = {}
    if base.train.feature_cache not in ("disk", "off") and not base.train.augment and not base.lora.adapt_vision:
        share = {"feature_cache": "disk", "feature_cache_dir": str((out / "features").resolve())}
    base = load_config(config, overrides or [], train=dict(share))
    keys = [k for k, _ in grid]
    points = [dict(zip(keys, values, strict=True)) for values in itertools.product(*[v for _, v in grid])]
    names = variant_names(points, seeds)
    spec = SweepSpec(out, grid, seeds, base)
    for point, row in zip(points, names, strict=True):
        for seed, name in zip(seeds, row, strict=True):
            sets = [f"{k}={_yaml(v)}" for k, v in point.items()]
            try:
                cfg = load_config(config, (overrides or []) + sets, train={**share, "seed": seed}, name=name,
                                  output_dir=str(out / VARIANTS_DIR))
            except ConfigError as exc:
                where = ", ".join(f"{k}={v}" for k, v in point.items())
                raise ConfigError(f"--grid {where}: {exc}") from None
            spec.variants.append(Variant(name, point, seed, cfg))
    return spec


def _yaml(value: Any) -> str:
    """A parsed value back as override text that `parse_override` reads to the same value."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def baseline_config(spec: SweepSpec) -> RunConfig:
    """The config's own settings, with its run directory `out/baselines` (the base-model systems)."""
    return replace(spec.base, name=BASELINES, output_dir=str(spec.out))
