"""Argument checks shared by the optimizers: concrete values are checked, traced ones pass.

Hyper-parameters arrive as Python numbers, NumPy scalars or concrete JAX arrays when an optimizer
is built, and as tracers when :func:`optax.inject_hyperparams` rebuilds it inside ``jit``. A
concrete value is checked (real, finite, in range, elementwise if it is an array); a tracer has no
value to check and is accepted as is.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def check_choice(name: str, value: Any, choices) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {valid}; got {value!r}.")


def _concrete(name: str, value: Any) -> np.ndarray | None:
    """``value`` as a float64 NumPy array, or ``None`` for a tracer; ``TypeError`` if not real."""
    if isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, not a bool; got {value!r}.")
    try:
        array = np.asarray(value)
    except Exception as err:  # an object NumPy cannot convert
        raise TypeError(f"{name} must be a real number; got {value!r}.") from err
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real number; got {value!r}.")
    return array.astype(np.float64)


def check_range(
    name: str, value: Any, lo: float, hi: float | None = None, *, hi_inclusive: bool = False
) -> None:
    """Raise unless a concrete ``value`` is finite and in ``[lo, hi)`` (``[lo, hi]``, ``>= lo``).

    Accepts Python numbers, NumPy scalars and concrete JAX arrays (checked elementwise); tracers
    are not checked. Non-finite values raise ``ValueError`` even where ``hi`` is ``None``.
    """
    array = _concrete(name, value)
    if array is None:
        return
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be a finite number; got {value!r}.")
    above = (array > hi) if hi_inclusive else (array >= hi) if hi is not None else False
    if np.any(array < lo) or np.any(above):
        if hi is None:
            bound = f">= {lo}"
        else:
            bound = f"[{lo}, {hi}]" if hi_inclusive else f"[{lo}, {hi})"
        raise ValueError(f"{name} must be {bound}; got {value!r}.")


def check_scalar_or_schedule(name: str, value: Any, lo: float = 0.0) -> None:
    """:func:`check_range` (``>= lo``) for a learning rate or weight decay; schedules pass."""
    if callable(value) or value is None:
        return
    check_range(name, value, lo)


def is_zero(value: Any) -> bool:
    """True for a Python number equal to zero (a value known to be zero when the code is built)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0
