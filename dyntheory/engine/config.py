"""Typed, frozen run configurations and validated ``key=value`` overrides.

An experiment's config is a frozen dataclass that *composes* the engine's knobs: its field
``train: TrainConfig`` is what it passes to :func:`dyntheory.engine.fit`. A key that is not a
field of the config itself but of its ``train`` group is set there, so ``--set steps=5000`` means
``--set train.steps=5000`` in every experiment (:data:`ENGINE_GROUP`); a key of exactly one other
nested group goes there likewise (``--set flip=0.3`` is ``task.flip`` in the DPO experiment).
Nested dataclass fields are reached with dotted keys (``--set model.width=256``). Values are
parsed by the field's type annotation: ``int``, ``float``, ``str``, ``bool``
(true/false/1/0/yes/no), ``X | None`` (``none``), ``Literal[...]``, ``tuple[X, ...]`` /
``list[X]`` from ``"1,2,3"`` (empty string: empty tuple). An unknown key or an unparsable value
raises :class:`ConfigError` naming the key and the allowed keys or the expected type. Validation
that needs several fields belongs in the config's ``__post_init__`` (it runs again on every
override).

    @dataclasses.dataclass(frozen=True)
    class Config:
        width: int = 64
        activations: tuple[str, ...] = ("relu",)
        train: TrainConfig = TrainConfig(steps=500)

    cfg = apply_overrides(Config(), ["width=128", "steps=200", "activations=tanh,gelu"])
    cfg.train.steps  ->  200;  replace(cfg, width=32, seeds=3)  ->  the same routing in Python
    to_dict(cfg)  ->  JSON-ready dict;  from_dict(Config, d)  ->  Config (strict)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NamedTuple


class ConfigError(ValueError):
    """A bad config key or value; the message names the key and what is allowed."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The engine's knobs (:func:`dyntheory.engine.fit`); experiment configs hold one as ``train``.

    Attributes:
      steps: optimizer updates in the run (``resume --set steps=N`` extends a run).
      batch_size: examples per step; ``None`` = the full dataset every step (full-batch GD).
      sampling: minibatches from a fixed dataset: ``"epoch"`` (reshuffled each epoch, the
        remainder dropped) or ``"replacement"`` (i.i.d. indices each step).
      seed: root seed; seed ``s`` of a multi-seed run uses ``seed + s``.
      seeds: number of seeds trained at once with ``vmap`` (``> 1`` adds a leading seed axis).
      fuse: optimizer steps fused into one dispatch with ``lax.scan`` (K).
      log_every: write a metrics line every this many steps (eval/probe steps always logged).
      eval_every: evaluate the held-out sets every this many steps (and at the end); 0 = only at
        the end.
      checkpoint_every: orbax checkpoint every this many steps (and at the end); 0 = at the end
        only.
      keep_checkpoints: how many recent checkpoints to keep.
      layout: ``"replicated"`` (data parallel) or ``"fsdp"`` (parameters sharded too).
      devices: devices in the mesh; 0 = all.
      probe_size: ``None`` (default): the probes see the whole training set and the whole first
        eval set. An integer asks for a subset by name: the first ``probe_size`` examples of each
        (or one fixed draw of that many from a sampler). A subset's W_S is the Gramian of another
        run, trained on the subset alone (THEORY.md §10, "Subsets are not the run").
      tensorboard: also write TensorBoard event files into ``RUN_DIR/events/`` (needs the
        ``tensorboard`` extra: ``pip install -e '.[tensorboard]'``).
    """

    steps: int = 1000
    batch_size: int | None = None
    sampling: Literal["epoch", "replacement"] = "epoch"
    seed: int = 0
    seeds: int = 1
    fuse: int = 100
    log_every: int = 10
    eval_every: int = 100
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    layout: Literal["replicated", "fsdp"] = "replicated"
    devices: int = 0
    probe_size: int | None = None
    tensorboard: bool = False

    def __post_init__(self):
        check_numbers(self)
        positive = ("steps", "seeds", "fuse", "log_every", "keep_checkpoints", "probe_size")
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("eval_every", "checkpoint_every", "devices"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1 or None, got {self.batch_size}.")


# ----------------------------------------------------------------------------- numbers


def _number(value: Any, tp, key: str) -> Any:
    """A NumPy / JAX scalar as the Python number ``tp``; NaN and ±Inf rejected."""
    if value is None or isinstance(value, bool) or tp not in (int, float):
        return value
    if not isinstance(value, numbers.Number) and getattr(value, "shape", None) == ():
        value = value.item()  # np.float32(0.1), jnp.array(3), ...
    if not isinstance(value, numbers.Real):
        raise ConfigError(f"{key}: expected a real number, got {value!r}.")
    if tp is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}.")
    elif isinstance(value, numbers.Integral):
        value = int(value)
    return value


def check_numbers(cfg) -> None:
    """Turn NumPy / JAX scalars in the ``int`` / ``float`` fields of ``cfg`` (also ``X | None``
    and ``tuple[X, ...]``) into Python numbers, and reject NaN / ±Inf naming the field. Every
    config calls it first in ``__post_init__``, so a range check after it sees plain floats."""
    for name, tp in _fields(type(cfg)).items():
        value = getattr(cfg, name)
        args = [a for a in typing.get_args(tp) if a is not type(None)] if _is_union(tp) else [tp]
        elem = args[0] if len(args) == 1 else None
        if typing.get_origin(elem) in (tuple, list) and isinstance(value, tuple | list):
            inner = typing.get_args(elem)
            if inner and inner[-1] is Ellipsis and inner[0] in (int, float):
                new = tuple(_number(v, inner[0], name) for v in value)
                object.__setattr__(cfg, name, new if isinstance(value, tuple) else list(new))
        elif elem in (int, float):
            object.__setattr__(cfg, name, _number(value, elem, name))


def check_range(cfg, names, low=None, high=None, *, low_open=False, high_open=False) -> None:
    """:class:`ConfigError` naming the field unless ``low <= value <= high`` for each of
    ``names`` (``<`` with ``low_open`` / ``high_open``; ``None`` values and bounds are skipped)."""
    for name in (names,) if isinstance(names, str) else names:
        v = getattr(cfg, name)
        if v is None:
            continue
        ok = (low is None or (v > low if low_open else v >= low)) and (
            high is None or (v < high if high_open else v <= high)
        )
        if not ok:
            lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
            hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
            raise ConfigError(f"{name} must lie in {lo}, {hi}, got {v}.")


def check_dissipation(cfg, n_outputs: int) -> None:
    """:class:`ConfigError` unless ``cfg.dissipation_method`` is ``dense`` or ``lowrank`` and, for
    ``lowrank``, ``1 <= dissipation_rank <= n_outputs`` (the probe set's train outputs ``n·p``)
    and ``dissipation_vectors >= 1`` (the W_S probe's knobs, shared by every experiment)."""
    if cfg.dissipation_method not in ("dense", "lowrank"):
        raise ConfigError(
            f"dissipation_method must be dense or lowrank, got {cfg.dissipation_method!r}."
        )
    for name in ("dissipation_rank", "dissipation_vectors"):
        if getattr(cfg, name, 1) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}.")
    if cfg.dissipation_method == "lowrank" and cfg.dissipation_rank > n_outputs:
        raise ConfigError(
            f"dissipation_rank ({cfg.dissipation_rank}) must be <= the {n_outputs} train outputs "
            "(n·p) of the probe set (rank = n·p is exact)."
        )


class Preset(NamedTuple):
    """A named starting config of an experiment, with its one-line description."""

    config: Any
    description: str


# ----------------------------------------------------------------------------- parsing


@functools.cache
def _hints(cls) -> dict[str, Any]:
    # cached: every config's __post_init__ reads them (check_numbers), and evaluating the
    # annotations of a module with `from __future__ import annotations` is slow
    return typing.get_type_hints(cls)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def parse_value(text: str, tp, key: str = "value") -> Any:
    """Parse ``text`` as type ``tp`` (module docstring); :class:`ConfigError` if it fails."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    fail = ConfigError(f"{key}: cannot parse {text!r} as {_type_name(tp)}.")
    if _is_union(tp):
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
    raise ConfigError(
        f"{key}: fields of type {_type_name(tp)} cannot be set from the command line."
    )


def _check_value(value: Any, tp, key: str) -> Any:
    """Coerce a JSON / Python value to ``tp`` (lists to tuples, ints to floats) or raise."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}.")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, _prefix=f"{key}.") if isinstance(value, Mapping) else value
    if _is_union(tp):
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


def _fields(cls) -> dict[str, Any]:
    hints = _hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def keys(cls_or_cfg) -> list[str]:
    """Every settable (dotted) key of a config class or instance."""
    cls = cls_or_cfg if isinstance(cls_or_cfg, type) else type(cls_or_cfg)
    out = []
    for name, tp in _fields(cls).items():
        if dataclasses.is_dataclass(tp):
            out += [f"{name}.{k}" for k in keys(tp)]
        else:
            out.append(name)
    return out


ENGINE_GROUP = "train"  # the nested group unqualified engine keys are routed to


def _route(cfg, path: list[str]) -> list[str]:
    """``path`` with a group prepended when its first key is not a field of ``cfg``: the engine
    group (``train``) if it has the key, else the one nested group that has it."""
    fields = _fields(type(cfg))
    if path[0] in fields:
        return path
    groups = [
        n for n, tp in fields.items() if dataclasses.is_dataclass(tp) and path[0] in _fields(tp)
    ]
    if ENGINE_GROUP in groups:
        return [ENGINE_GROUP, *path]
    return [groups[0], *path] if len(groups) == 1 else path


def _set(cfg, path: list[str], text: str, full_key: str):
    path = _route(cfg, path)
    fields = _fields(type(cfg))
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
    fields = _fields(type(cfg))
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
    """Rebuild a config from :func:`to_dict`'s output; unknown keys or wrong types raise."""
    fields = _fields(cls)
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(_prefix + k for k in unknown)} for {cls.__name__}; "
            f"allowed keys: {', '.join(fields)}."
        )
    return cls(**{k: _check_value(v, fields[k], _prefix + k) for k, v in d.items()})
