"""Typed, frozen run configurations: the engine's :class:`TrainConfig`, presets, and the checks
every experiment's config runs in ``__post_init__``.

An experiment's config is a frozen dataclass that *composes* the engine's knobs: its field
``train: TrainConfig`` is what it passes to :func:`dyntheory.engine.fit`. Validation that needs
several fields belongs in the config's ``__post_init__`` (it runs again on every override); it
calls :func:`check_numbers` first. Overrides (``--set key=value``, :func:`apply_overrides`,
:func:`replace`) live in :mod:`dyntheory.engine.overrides`, the dict round trip of
``config.json`` (:func:`to_dict`, :func:`from_dict`) in :mod:`dyntheory.engine.config_dict`;
this module re-exports both, so ``dyntheory.engine.config`` is the one import of a config.

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
import math
import numbers
import typing
from typing import Any, Literal, NamedTuple

from dyntheory.engine.config_dict import MovedKeyError, from_dict, moved_keys, to_dict
from dyntheory.engine.overrides import (
    ENGINE_GROUP,
    ConfigError,
    apply_overrides,
    field_types,
    is_union,
    keys,
    parse_value,
    replace,
)


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
    for name, tp in field_types(type(cfg)).items():
        value = getattr(cfg, name)
        args = [a for a in typing.get_args(tp) if a is not type(None)] if is_union(tp) else [tp]
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


__all__ = [
    "ENGINE_GROUP",
    "ConfigError",
    "MovedKeyError",
    "Preset",
    "TrainConfig",
    "apply_overrides",
    "check_dissipation",
    "check_numbers",
    "check_range",
    "from_dict",
    "keys",
    "moved_keys",
    "parse_value",
    "replace",
    "to_dict",
]
