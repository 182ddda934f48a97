r"""The training engine: scan-fused, mesh-sharded, probed and resumable runs.

- :mod:`~dyntheory.engine.config`: :class:`TrainConfig` (the engine's knobs) and presets, with
  validated ``key=value`` overrides (:mod:`~dyntheory.engine.overrides`) and the dict round trip
  of ``config.json`` (:mod:`~dyntheory.engine.config_dict`) re-exported;
- :mod:`~dyntheory.engine.state`: :class:`TrainState`, :class:`FitResult`,
  :class:`NonFiniteError`;
- :mod:`~dyntheory.engine.trainer`: :class:`Trainer` and :func:`fit` (the module docstring is the
  guide); :mod:`~dyntheory.engine.loop` (the host side of a run) and
  :mod:`~dyntheory.engine.probe_runner` (the engine's side of :mod:`dyntheory.probes`);
- :mod:`~dyntheory.engine.batching`, :mod:`~dyntheory.engine.sharding`;
- :mod:`~dyntheory.engine.rundir` (run directories), :mod:`~dyntheory.engine.checkpoint` (orbax),
  :mod:`~dyntheory.engine.progress` (the progress bar), :mod:`~dyntheory.engine.events`
  (optional TensorBoard event files).

Importing the package loads no JAX: its names below load their module on first access, so the
command line can read configs and presets without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dyntheory.engine.config import ConfigError, Preset, TrainConfig, apply_overrides
    from dyntheory.engine.rundir import RunDir, RunDirError, load_metrics
    from dyntheory.engine.state import FitResult, NonFiniteError, TrainState
    from dyntheory.engine.trainer import Trainer, fit

__all__ = [
    "ConfigError",
    "FitResult",
    "NonFiniteError",
    "Preset",
    "RunDir",
    "RunDirError",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "apply_overrides",
    "fit",
    "load_metrics",
]


def __getattr__(name: str):
    if name in ("ConfigError", "Preset", "TrainConfig", "apply_overrides"):
        from dyntheory.engine import config as home
    elif name in ("RunDir", "RunDirError", "load_metrics"):
        from dyntheory.engine import rundir as home
    elif name in ("FitResult", "NonFiniteError", "TrainState"):
        from dyntheory.engine import state as home
    elif name in ("Trainer", "fit"):
        from dyntheory.engine import trainer as home
    else:
        raise AttributeError(f"module 'dyntheory.engine' has no attribute {name!r}")
    return getattr(home, name)
