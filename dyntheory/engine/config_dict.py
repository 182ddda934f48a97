"""Configs as JSON-ready dicts (``config.json`` of a run directory) and back, strictly.

:func:`to_dict` writes nested configs as dicts and tuples as lists; :func:`from_dict` rebuilds the
config class, coercing JSON values to the field types (lists to tuples, ints to floats) and
raising :class:`ConfigError` on an unknown key or a wrong type. A key that a nested group now
holds (a config written before the group existed) is named with its new spelling.
:mod:`dyntheory.engine.config` re-exports these names.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, Literal

from dyntheory.engine.overrides import ConfigError, field_types, is_union, type_name


def to_dict(cfg) -> dict[str, Any]:
    """A JSON-ready dict of a config (nested configs as dicts, tuples as lists)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def from_dict(cls, d: Mapping[str, Any], _prefix: str = ""):
    """Rebuild a config from :func:`to_dict`'s output; unknown keys or wrong types raise.

    A key that is no field of ``cls`` but now lives in one of its nested groups (``lr`` of a
    config written before the optimizer's numbers moved into an ``optim`` block) raises
    :class:`MovedKeyError`, which names its new spelling (:func:`moved_keys`).
    """
    fields = field_types(cls)
    unknown = sorted(set(d) - set(fields))
    moved = {_prefix + k: _prefix + v for k, v in moved_keys(cls, unknown).items()}
    if moved:
        raise MovedKeyError(cls.__name__, moved)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(_prefix + k for k in unknown)} for {cls.__name__}; "
            f"allowed keys: {', '.join(fields)}."
        )
    return cls(**{k: _check_value(v, fields[k], _prefix + k) for k, v in d.items()})


class MovedKeyError(ConfigError):
    """A saved config spells keys the way an older dyntheory did; ``moved`` maps each to its
    new spelling (``{"lr": "optim.lr"}``)."""

    def __init__(self, config: str, moved: Mapping[str, str]):
        self.moved = dict(moved)
        self.renames = "; ".join(f"{old} is now {new}" for old, new in self.moved.items())
        super().__init__(f"{config} was saved by an older dyntheory: {self.renames}.")


def moved_keys(cls, names) -> dict[str, str]:
    """``{name: "group.field"}`` for each of ``names`` that is no field of ``cls`` but a field of
    exactly one of its nested groups, or a former name of one (the group's class attribute
    ``FORMER_KEYS``, ``{"lrs": "lr"}``)."""
    fields = field_types(cls)
    groups = {n: tp for n, tp in fields.items() if dataclasses.is_dataclass(tp)}
    out = {}
    for name in names:
        if name in fields:
            continue
        homes = [
            f"{g}.{field}"
            for g, tp in groups.items()
            for field in (name, getattr(tp, "FORMER_KEYS", {}).get(name))
            if field in field_types(tp)
        ]
        if len(homes) == 1:
            out[name] = homes[0]
    return out


def _check_value(value: Any, tp, key: str) -> Any:
    """Coerce a JSON / Python value to ``tp`` (lists to tuples, ints to floats) or raise."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = ConfigError(f"{key}: expected {type_name(tp)}, got {value!r}.")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, _prefix=f"{key}.") if isinstance(value, Mapping) else value
    if is_union(tp):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_value(value, arg, key)
            except ConfigError:
                pass
        raise bad
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}.")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise bad
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise bad
            return tuple(_check_value(v, a, key) for v, a in zip(value, args, strict=True))
        elem = args[0] if args else Any
        out = [_check_value(v, elem, key) for v in value]
        return tuple(out) if origin is tuple else out
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool):
        raise bad
    if isinstance(tp, type) and not isinstance(value, tp):
        raise bad
    return value


__all__ = ["MovedKeyError", "from_dict", "moved_keys", "to_dict"]
