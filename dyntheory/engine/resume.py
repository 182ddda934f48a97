"""What ``dyntheory resume --set`` may change: the keys that leave a checkpointed state valid.

The engine's schedule keys (how long a run is and what it writes) and each experiment config's
``RESUMABLE`` tuple (its optimizer hyperparameters: the way out of a divergence is to resume the
last good checkpoint with a smaller ``lr``). Anything else is refused by name before anything is
written (:mod:`dyntheory.cli.experiments`).
"""

from __future__ import annotations

from typing import Any

from dyntheory.engine.config import ENGINE_GROUP, to_dict

# Engine keys that ``dyntheory resume --set`` may change: they decide how long the run is and
# what it writes, not the state a checkpoint holds. An experiment's ``Config.RESUMABLE`` adds its
# own (optimizer hyperparameters: the way out of a divergence is to resume the last good
# checkpoint with a smaller ``lr``).
RESUMABLE_TRAIN = (
    "steps",
    "fuse",
    "log_every",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "tensorboard",
)


def resumable_keys(cfg) -> tuple[str, ...]:
    """Dotted keys of ``cfg`` that a resume may change (:data:`RESUMABLE_TRAIN` under ``train``
    and the config class's ``RESUMABLE`` tuple)."""
    own = tuple(getattr(type(cfg), "RESUMABLE", ()))
    return tuple(f"{ENGINE_GROUP}.{k}" for k in RESUMABLE_TRAIN) + own


def changed_keys(old, new) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` for every leaf field that differs."""
    out: dict[str, tuple[Any, Any]] = {}
    a, b = to_dict(old), to_dict(new)

    def walk(x, y, prefix):
        for k in x:
            if isinstance(x[k], dict) and isinstance(y.get(k), dict):
                walk(x[k], y[k], f"{prefix}{k}.")
            elif x[k] != y.get(k):
                out[prefix + k] = (x[k], y.get(k))

    walk(a, b, "")
    return out
