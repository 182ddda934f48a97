r"""Teacher data with label noise for the double-descent experiment.

Inputs ``x ~ N(0, I_d)``; a unit teacher direction ``β`` (``‖β‖ = 1``, so ``βᵀx ~ N(0, 1)``).

=============  ================================  =============================================
``task``       clean target ``y*``               label noise of level ``p``
=============  ================================  =============================================
``regression`` ``βᵀx`` (unit variance)           ``y = y* + √p ξ``, ``ξ ~ N(0, 1)``: the noise
                                                 energy is ``p`` times the clean label energy
``binary``     ``sign(βᵀx) ∈ {±1}``              a fraction ``p`` of the training labels flipped
=============  ================================  =============================================

Test targets are always clean; the train set carries both ``y`` (noisy) and ``y_clean``, so the
label noise ``ε = y − y_clean`` is known exactly (what the four-cell accounting splits off).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from experiments.double_descent.config import TASKS


def make_task(
    key: jax.Array, n: int, m: int, d: int, task: str, label_noise: float, dtype=jnp.float32
) -> dict[str, jax.Array]:
    """``{"x", "y", "y_clean", "x_test", "y_test"}``: ``(n, d)``, ``(n,)``, ``(n,)``, ``(m, d)``,
    ``(m,)``. ``key`` fixes the teacher and the data; jit/vmap-able over ``key``."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise must lie in [0, 1), got {label_noise}")
    kb, kx, kq, kn = jax.random.split(key, 4)
    beta = jax.random.normal(kb, (d,), dtype)
    beta = beta / jnp.linalg.norm(beta)
    x = jax.random.normal(kx, (n, d), dtype)
    xq = jax.random.normal(kq, (m, d), dtype)
    z, zq = x @ beta, xq @ beta
    if task == "regression":
        y_clean, y_test = z, zq
        y = y_clean + jnp.sqrt(jnp.asarray(label_noise, dtype)) * jax.random.normal(kn, (n,), dtype)
    else:
        y_clean, y_test = jnp.where(z >= 0, 1.0, -1.0).astype(dtype), jnp.where(zq >= 0, 1.0, -1.0)
        y_test = y_test.astype(dtype)
        flip = jax.random.uniform(kn, (n,), dtype) < label_noise
        y = jnp.where(flip, -y_clean, y_clean)
    return {"x": x, "y": y, "y_clean": y_clean, "x_test": xq, "y_test": y_test}
