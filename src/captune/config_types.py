"""Config values checked against the dataclass annotations they fill: one-line errors that name the key's
full path, the expected type and the nearest valid name (what pydantic would give, without its weight)."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from captune.errors import ConfigError


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        return f"list of {_type_name(inner)}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against the annotation `tp`; allow int→float; return the typed value."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [o for o in get_args(tp) if o is not type(None)]
        if value is None and len(options) < len(get_args(tp)):
            return None
        if len(options) == 1:  # Optional[X]: X's own error is the most specific one
            return _coerce(value, options[0], path)
        for option in options:
            try:
                return _coerce(value, option, path)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{path}': expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key '{path}': expected null, got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if isinstance(value, bool):  # YAML 1.1 reads a bare `off`/`on` as a boolean
            value = {False: "off", True: "on"}[value] if ("off" in allowed or "on" in allowed) else value
        if value in allowed and not isinstance(value, bool):
            return value
        near = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(
            f"config key '{path}': {value!r} is not one of {', '.join(repr(a) for a in allowed)}{hint}"
        )
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{path}': expected {_type_name(tp)}, got {value!r}")
        (inner,) = get_args(tp)
        return [_coerce(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{path}': expected a mapping of settings, got {value!r}")
        return build(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):  # YAML's .nan/.inf: torch fails later with a traceback, or loops
                raise ConfigError(f"config key '{path}': must be a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    raise ConfigError(f"config key '{path}': expected {_type_name(tp)}, got {value!r}")


REMOVED_KEYS = {
    "train.num_workers": "images are decoded once into the vision-feature cache, so there was nothing to parallelise",
    "train.log_every": "every step is logged to train/log.jsonl and TensorBoard",
}
"""Keys earlier versions accepted but never read: a config naming one gets a line saying so, not a typo hint."""


def _check_key(key: Any, names: list[str], prefix: str) -> str:
    """The key's full path, or a one-line error naming it (a removed key, or a typo with the nearest name)."""
    path = f"{prefix}.{key}" if prefix else str(key)
    if path in REMOVED_KEYS:
        raise ConfigError(f"config key '{path}' was removed (nothing read it: {REMOVED_KEYS[path]}); "
                          "delete it from the config")
    if key not in names:
        near = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
        hint = f"; did you mean '{prefix + '.' if prefix else ''}{near[0]}'?" if near else ""
        raise ConfigError(f"unknown config key '{path}'{hint} (valid keys here: {', '.join(names)})")
    return path


def typed(data: dict[str, Any], hints: dict[str, Any], prefix: str) -> dict[str, Any]:
    """`data` with each value checked against its key's annotation in `hints`; unknown keys refused."""
    out = {}
    for key, value in data.items():
        path = _check_key(key, list(hints), prefix)
        out[key] = _coerce(value, hints[key], path)
    return out


def build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """An instance of the dataclass `cls` from a mapping, every value checked."""
    return cls(**typed(data, typing.get_type_hints(cls), prefix))
