r"""The training engine: scan-fused, mesh-sharded, probed and resumable runs.

- :mod:`~dyntheory.engine.config`: :class:`TrainConfig` (the engine's knobs), presets and
  validated ``key=value`` overrides;
- :mod:`~dyntheory.engine.state`: :class:`TrainState`, :class:`FitResult`,
  :class:`NonFiniteError`;
- :mod:`~dyntheory.engine.trainer`: :class:`Trainer` and :func:`fit` (the module docstring is the
  guide); :mod:`~dyntheory.engine.loop` (the host side of a run) and
  :mod:`~dyntheory.engine.probe_runner` (the engine's side of :mod:`dyntheory.probes`);
- :mod:`~dyntheory.engine.batching`, :mod:`~dyntheory.engine.sharding`;
- :mod:`~dyntheory.engine.rundir` (run directories), :mod:`~dyntheory.engine.checkpoint` (orbax),
  :mod:`~dyntheory.engine.progress` (the progress bar), :mod:`~dyntheory.engine.events`
  (optional TensorBoard event files).
"""

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
