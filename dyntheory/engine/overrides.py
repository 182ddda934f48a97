"""``key=value`` overrides of a config: parsed by the field's type, routed to its group.

A key that is not a field of the config itself but of its ``train`` group is set there, so
``--set steps=5000`` means ``--set train.steps=5000`` in every experiment (:data:`ENGINE_GROUP`);
a key of exactly one other nested group goes there likewise (``--set flip=0.3`` is ``task.flip``
in the DPO experiment, ``--set lr=1e-3`` is ``optim.lr`` where the optimizer is a group). Nested
dataclass fields are reached with dotted keys (``--set model.width=256``). Values are parsed by
the field's type annotation (:func:`parse_value`): ``int``, ``float``, ``str``, ``bool``
(true/false/1/0/yes/no), ``X | None`` (``none``), ``Literal[...]``, ``tuple[X, ...]`` /
``list[X]`` from ``"1,2,3"`` (empty string: empty tuple). An unknown key or an unparsable value
raises :class:`ConfigError` naming the key and the allowed keys or the expected type.
:mod:`dyntheory.engine.config` re-exports these names.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal


class ConfigError(ValueError):
    """A bad config key or value; the message names the key and what is allowed."""


# ----------------------------------------------------------------------------- types


@functools.cache
def type_hints(cls) -> dict[str, Any]:
    # cached: every config's __post_init__ reads them (check_numbers), and evaluating the
    # annotations of a module with `from __future__ import annotations` is slow
    return typing.get_type_hints(cls)


def type_name(tp) -> str:
    """``tp`` as an error message names it."""
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def is_union(tp) -> bool:
    """Whether ``tp`` is ``X | Y`` (``Optional[X]`` included)."""
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def field_types(cls) -> dict[str, Any]:
    """``{name: type}`` of the ``__init__`` fields of the dataclass ``cls``."""
    hints = type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def keys(cls_or_cfg) -> list[str]:
    """Every settable (dotted) key of a config class or instance."""
    cls = cls_or_cfg if isinstance(cls_or_cfg, type) else type(cls_or_cfg)
    out = []
    for name, tp in field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            out += [f"{name}.{k}" for k in keys(tp)]
        else:
            out.append(name)
    return out


# ----------------------------------------------------------------------------- parsing


def parse_value(text: str, tp, key: str = "value") -> Any:
    """Parse ``text`` as type ``tp`` (module docstring); :class:`ConfigError` if it fails."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    fail = ConfigError(f"{key}: cannot parse {text!r} as {type_name(tp)}.")
    if is_union(tp):
        if text.strip().lower() in ("none", "null") and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return parse_value(text, arg, key)
            except ConfigError:
                pass
        raise fail
    if origin is Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise ConfigError(f"{key}: {text!r} is not one of {', '.join(map(repr, args))}.")
    if origin in (tuple, list):
        items = [s.strip() for s in text.split(",")] if text.strip() else []
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise ConfigError(
                    f"{key}: expected {len(args)} comma-separated values, got {text!r}."
                )
            return tuple(parse_value(s, a, key) for s, a in zip(items, args, strict=True))
        elem = args[0] if args else str
        values = [parse_value(s, elem, key) for s in items]
        return tuple(values) if origin is tuple else values
    if tp is bool:
        low = text.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise fail
    if tp in (int, float, str):
        try:
            return tp(text)
        except ValueError:
            raise fail from None
    raise ConfigError(f"{key}: fields of type {type_name(tp)} cannot be set from the command line.")


# ----------------------------------------------------------------------------- overrides


ENGINE_GROUP = "train"  # the nested group unqualified engine keys are routed to


def _route(cfg, path: list[str]) -> list[str]:
    """``path`` with a group prepended when its first key is not a field of ``cfg``: the engine
    group (``train``) if it has the key, else the one nested group that has it."""
    fields = field_types(type(cfg))
    if path[0] in fields:
        return path
    groups = [
        n for n, tp in fields.items() if dataclasses.is_dataclass(tp) and path[0] in field_types(tp)
    ]
    if ENGINE_GROUP in groups:
        return [ENGINE_GROUP, *path]
    return [groups[0], *path] if len(groups) == 1 else path


def _set(cfg, path: list[str], text: str, full_key: str):
    path = _route(cfg, path)
    fields = field_types(type(cfg))
    name = path[0]
    if name not in fields:
        raise ConfigError(
            f"unknown config key {full_key!r} for {type(cfg).__name__}; "
            f"allowed keys: {', '.join(keys(cfg))}."
        )
    tp = fields[name]
    if dataclasses.is_dataclass(tp):
        if len(path) == 1:
            raise ConfigError(
                f"{full_key!r} is a group; set one of its keys: "
                f"{', '.join(f'{full_key}.{k}' for k in keys(tp))}."
            )
        value = _set(getattr(cfg, name), path[1:], text, full_key)
    elif len(path) > 1:
        raise ConfigError(f"unknown config key {full_key!r}: {name!r} has no sub-keys.")
    else:
        value = parse_value(text, tp, full_key)
    try:
        return dataclasses.replace(cfg, **{name: value})
    except (ValueError, TypeError) as e:  # the config's own __post_init__ validation
        raise ConfigError(f"{full_key}={text}: {e}") from None


def apply_overrides(cfg, overrides: Iterable[str] | Mapping[str, str]):
    """A copy of ``cfg`` with ``key=value`` overrides applied (dotted keys for nested configs).

    Their order does not matter: an override that the config rejects only together with the
    values before it (``poprisk=true`` before ``eval_every=1``) is retried after the others;
    the first one that fails whatever the order raises its :class:`ConfigError`.
    """
    items = overrides.items() if isinstance(overrides, Mapping) else map(_split, overrides)
    pending = [(key, str(text)) for key, text in items]
    while pending:
        failed = []
        for key, text in pending:
            try:
                cfg = _set(cfg, key.split("."), text, key)
            except ConfigError as e:
                failed.append((key, text, e))
        if len(failed) == len(pending):
            raise failed[0][2]
        pending = [(key, text) for key, text, _ in failed]
    return cfg


def replace(cfg, **changes):
    """:func:`dataclasses.replace` with Python values, routing engine keys like
    :func:`apply_overrides` (``replace(cfg, steps=10)`` sets ``cfg.train.steps``); dotted keys are
    written with ``__`` (``exact__seeds=2``). Validation runs as for any override."""
    grouped: dict[tuple[str, ...], Any] = {}
    for key, value in changes.items():
        grouped[tuple(_route(cfg, key.split("__")))] = value
    return _replace_paths(cfg, grouped)


def _replace_paths(cfg, changes: dict[tuple[str, ...], Any]):
    fields = field_types(type(cfg))
    direct, nested = {}, {}
    for path, value in changes.items():
        if path[0] not in fields:
            raise ConfigError(
                f"unknown config key {'.'.join(path)!r} for {type(cfg).__name__}; "
                f"allowed keys: {', '.join(keys(cfg))}."
            )
        if len(path) == 1:
            direct[path[0]] = value
        else:
            nested.setdefault(path[0], {})[path[1:]] = value
    for name, sub in nested.items():
        direct[name] = _replace_paths(direct.get(name, getattr(cfg, name)), sub)
    try:
        return dataclasses.replace(cfg, **direct)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value.")
    key, text = item.split("=", 1)
    return key.strip(), text.strip()


__all__ = [
    "ENGINE_GROUP",
    "ConfigError",
    "apply_overrides",
    "field_types",
    "is_union",
    "keys",
    "parse_value",
    "replace",
    "type_hints",
    "type_name",
]
