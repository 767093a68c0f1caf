"""Typed configuration from TOML tables: dataclasses checked key by key.

Both towers load their settings through ``from_dict`` so every error names the key and the
value the same way (``ConfigError``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from geopak_core.errors import ConfigError


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is bool:
        return isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if origin is dict:
        kt, vt = typing.get_args(tp) or (Any, Any)
        return isinstance(value, dict) and all(
            _type_ok(k, kt) and _type_ok(v, vt) for k, v in value.items()
        )
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (TOML) dict, checking keys and types recursively."""
    if not isinstance(data, dict):
        raise ConfigError(prefix or "<root>", data, "must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            key = f"{prefix}.{k}" if prefix else k
            raise ConfigError(key, data[k], f"unknown key (known: {', '.join(sorted(names))})")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = data[f.name]
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = from_dict(tp, value, key)
            continue
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not _type_ok(value, tp):
            raise ConfigError(key, value, f"expected {getattr(tp, '__name__', str(tp))}")
        kwargs[f.name] = value
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(prefix)
    return obj


# A number no setting needs: any value beyond it is a typo (10**6 workers, 1 TB blocks).
ABSOLUTE_MAX = 10**12
_CONTROL = frozenset(chr(c) for c in range(32) if c != 9) | {"\x7f"}


def check_limits(
    obj: Any, prefix: str = "", limits: dict[str, tuple[float, float]] | None = None
) -> None:
    """Sanity every validated section shares, applied to its own scalar fields.

    Floats must be finite (``inf``/``nan`` become timeouts that never fire, sleeps that never
    end), every number must lie in ``limits[name]`` when given (inclusive) and never beyond
    ``ABSOLUTE_MAX``; strings may hold no control characters (a CRLF in a header value is
    header injection, a NUL ends a C string) nor lone surrogates (not encodable as UTF-8).
    ``ConfigError`` names the key and the value.
    """
    import math

    limits = limits or {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        for v in _scalars(value):
            if isinstance(v, bool) or v is None:
                continue
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(key, v, "must be a finite number")
            if isinstance(v, int | float):
                lo, hi = limits.get(f.name, (-ABSOLUTE_MAX, ABSOLUTE_MAX))
                if not lo <= v <= hi or abs(v) > ABSOLUTE_MAX:
                    raise ConfigError(key, v, f"must be {_num(lo)}..{_num(hi)}")
            elif isinstance(v, str):
                if any(c in _CONTROL for c in v):
                    raise ConfigError(key, v, "must not contain control characters (CR, LF, NUL)")
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    raise ConfigError(key, v, "is not valid Unicode text") from None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _scalars(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return [s for v in value for s in _scalars(v)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_scalars(k), *_scalars(v))]
    return [value]
