r"""Minibatch drift versus diffusion (THEORY.md §5, paper Thm 4.1).

A minibatch gradient splits as ``ĝ_t = μ_t + ξ_t``: ``μ_t`` the population (coherent) gradient,
``ξ_t`` the centred fluctuation with covariance ``Σ/b``. Projected on ``r`` fixed directions (the
top eigenvectors of ``W_S`` or of the NTK, mapped to parameter space by ``J_Sᵀ``), the accumulated
coherent part grows like ``t`` and the accumulated noise like ``√t``::

    drift_t = Σ_{τ≤t} η_τ V μ_τ          noise_t = Σ_{τ≤t} η_τ V ξ_τ          (V: (r, P) basis)

so ``log ‖drift‖`` and ``log ‖noise‖`` against ``log t`` have slopes 1 and ½ (:func:`fit_slopes`).

What is accumulated each step, from the per-example gradients ``g_1..g_b`` of the minibatch:

* population gradient known (``population_grad=``): ``μ_t`` is it, ``ξ_t = mean_i g_i − μ_t``.
* unknown: ``μ_t`` is replaced by the batch mean ``mean_i g_i`` (unbiased for ``μ_t``, so the drift
  carries an extra random walk that ``t`` soon dominates) and ``ξ_t`` by the half-batch difference
  ``(√(b₁b₂)/b)(mean_A g − mean_B g)`` over the first ``b₁ = ⌊b/2⌋`` and last ``b₂`` examples:
  mean zero whatever ``μ_t`` is, and covariance exactly ``Σ/b``, that of ``ξ_t``. So ``‖noise‖``
  has the law of the true accumulated fluctuation (an independent copy of it), no key needed.

Per-example gradients: an array ``(b, P)`` with ``basis`` ``(r, P)``; a pytree of arrays with a
leading batch axis ``b`` (flattened per example in ``jax.tree.leaves`` order, each leaf raveled
C-order, as ``jax.flatten_util.ravel_pytree`` does; the basis must use the same order); or already
projected gradients ``(b, r)`` with ``basis=None``.

References:
  Litman & Guo, "A Theory of Generalization in Deep Learning", arXiv:2605.01172 (2026), Thm 4.1.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class DriftState(NamedTuple):
    drift: jax.Array  # (r,) Σ_t η_t V μ_t, accumulated coherent part
    noise: jax.Array  # (r,) Σ_t η_t V ξ_t, accumulated centred fluctuation
    count: jax.Array  # () int32, number of minibatches accumulated


class Slopes(NamedTuple):
    drift: float  # fitted log-log slope of ‖drift‖ against t (theory: 1)
    noise: float  # fitted log-log slope of ‖noise‖ against t (theory: 1/2)


def init(r: int, dtype=None) -> DriftState:
    """Zero accumulators for ``r`` directions (``dtype`` None: JAX's default float)."""
    if int(r) <= 0:
        raise ValueError(f"number of directions r must be positive, got {r}")
    return DriftState(
        jnp.zeros((int(r),), dtype), jnp.zeros((int(r),), dtype), jnp.zeros((), jnp.int32)
    )


def update(
    state: DriftState,
    per_example_grads,
    basis: jax.Array | None = None,
    population_grad=None,
    lr=1.0,
) -> DriftState:
    r"""Accumulate one minibatch.

    Args:
      state: from :func:`init`.
      per_example_grads: ``(b, P)`` array, pytree with leading axis ``b``, or ``(b, r)`` projected.
      basis: ``(r, P)`` projection directions (rows), or None when the gradients are projected.
      population_grad: the population gradient ``μ_t``: ``(P,)`` (pytree without the batch axis)
        when ``basis`` is given, ``(r,)`` otherwise; None when unknown (see the module docstring).
      lr: step size ``η_t`` scaling this step's increments (may be traced).
    """
    h = _project(per_example_grads, basis)  # (b, r)
    b, r = h.shape
    if r != state.drift.shape[0]:
        raise ValueError(
            f"gradients project to {r} directions, the state has {state.drift.shape[0]}"
        )
    if b < 2:
        raise ValueError(f"need at least 2 examples per minibatch, got {b}")
    dtype = state.drift.dtype
    h = h.astype(dtype)
    mean = jnp.mean(h, axis=0)
    if population_grad is None:
        b1 = b // 2
        scale = np.sqrt(b1 * (b - b1)) / b
        mu = mean
        xi = scale * (jnp.mean(h[:b1], axis=0) - jnp.mean(h[b1:], axis=0))
    else:
        mu = _project_one(population_grad, basis).astype(dtype)
        if mu.shape != (r,):
            raise ValueError(f"population_grad projects to shape {mu.shape}, expected ({r},)")
        xi = mean - mu
    eta = jnp.asarray(lr, dtype)
    return DriftState(state.drift + eta * mu, state.noise + eta * xi, state.count + 1)


def norms(state: DriftState) -> tuple[jax.Array, jax.Array]:
    """``(‖drift‖, ‖noise‖)``, the two curves to plot against the step count."""
    return jnp.linalg.norm(state.drift), jnp.linalg.norm(state.noise)


def fit_slopes(t, drift_norms, noise_norms, t_min: float = 1.0) -> Slopes:
    """Least-squares slopes of ``log ‖drift‖``, ``log ‖noise‖`` against ``log t``, ``t ≥ t_min``.

    Host-side (NumPy). Points with a non-positive norm are skipped. Use a ``t_min`` past the
    transient, and log-spaced ``t`` so every decade weighs the same.
    """
    t = np.asarray(t, np.float64)
    out = []
    for name, y in (("drift_norms", drift_norms), ("noise_norms", noise_norms)):
        y = np.asarray(y, np.float64)
        if y.shape != t.shape or t.ndim != 1:
            raise ValueError(f"t and {name} must be 1-D of one length, got {t.shape} and {y.shape}")
        keep = (t >= t_min) & (t > 0) & (y > 0) & np.isfinite(y)
        if np.count_nonzero(keep) < 2 or np.ptp(t[keep]) == 0:
            raise ValueError(f"need at least two distinct t >= t_min with positive {name}")
        out.append(float(np.polyfit(np.log(t[keep]), np.log(y[keep]), 1)[0]))
    return Slopes(*out)


def _flatten_examples(tree) -> jax.Array:
    """Pytree with leading batch axis ``b`` → ``(b, P)``, in ``ravel_pytree`` order."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError("per_example_grads is an empty pytree")
    b = jnp.shape(leaves[0])[0] if jnp.ndim(leaves[0]) else None
    if b is None or any(jnp.ndim(x) == 0 or jnp.shape(x)[0] != b for x in leaves):
        raise ValueError("every leaf of per_example_grads needs the same leading batch axis")
    return jnp.concatenate([jnp.reshape(x, (b, -1)) for x in leaves], axis=1)


def _project(per_example_grads, basis) -> jax.Array:
    g = (
        jnp.asarray(per_example_grads)
        if isinstance(per_example_grads, jax.Array | np.ndarray)
        else _flatten_examples(per_example_grads)
    )
    if g.ndim != 2:
        raise ValueError(f"per-example gradients must be (b, P) or (b, r), got shape {g.shape}")
    if basis is None:
        return g
    basis = jnp.asarray(basis)
    if basis.ndim != 2 or basis.shape[1] != g.shape[1]:
        raise ValueError(f"basis must have shape (r, {g.shape[1]}), got {basis.shape}")
    return g @ basis.T


def _project_one(grad, basis) -> jax.Array:
    if isinstance(grad, jax.Array | np.ndarray):
        v = jnp.asarray(grad).reshape(-1)
    else:
        v = jnp.concatenate([jnp.reshape(x, (-1,)) for x in jax.tree.leaves(grad)])
    if basis is None:
        return v
    basis = jnp.asarray(basis)
    if v.shape[0] != basis.shape[1]:
        raise ValueError(
            f"population_grad has {v.shape[0]} entries, the basis has {basis.shape[1]}"
        )
    return basis @ v


def rms_over_seeds(x: np.ndarray) -> np.ndarray:
    """``√(mean_s x²)`` over the seed axis of a ``(T, S)`` curve: the root of the mean squared norm,
    which for a random walk grows exactly like ``√t`` (the median of a few norms is noisier)."""
    x = np.asarray(x, float)
    return np.sqrt(np.mean(np.square(x.reshape(len(x), -1)), axis=1))


def coherent(drift_rms: np.ndarray, noise_rms: np.ndarray) -> np.ndarray:
    r"""The coherent part of the accumulated batch-mean gradient: ``√(E‖Σ η ĝ‖² − E‖Σ η ξ‖²)``.

    The drift accumulator sums batch means ``ĝ = μ + ξ`` (the population gradient is unknown), so
    ``E‖drift‖² = ‖Σ η μ‖² + E‖Σ η ξ‖²``; the noise accumulator has the law of ``Σ η ξ``
    (:mod:`dyntheory.drift`), so subtracting its mean square leaves ``‖Σ η μ‖²``. NaN where the
    difference is not positive (too few seeds to resolve it).
    """
    diff = np.square(drift_rms) - np.square(noise_rms)
    return np.where(diff > 0, np.sqrt(np.maximum(diff, 0.0)), np.nan)


def curves(history: dict, probe: str = "drift") -> dict[str, np.ndarray]:
    """Curves of a :class:`dyntheory.probes.DriftDiffusion` probe called ``probe``.

    ``history`` is a metrics table (:func:`dyntheory.engine.records.metrics_table`). Returns
    ``count`` (steps accumulated) and, over it, the RMS over seeds of the accumulated noise
    ``noise_{top,bottom}``, of the accumulated batch-mean gradient ``batch_{top,bottom}`` and its
    coherent part ``drift_{top,bottom}`` (:func:`coherent`).
    """
    pre = f"probe/{probe}/"
    t_rows = len(history["step"])
    col = lambda k: np.asarray(history[f"{pre}{k}"], float).reshape(t_rows, -1)
    rows = np.isfinite(col("count")).all(axis=1)
    out = {"count": col("count")[rows, 0]}
    for which in ("top", "bottom"):
        out[f"batch_{which}"] = rms_over_seeds(col(f"drift_{which}")[rows])
        out[f"noise_{which}"] = rms_over_seeds(col(f"noise_{which}")[rows])
        out[f"drift_{which}"] = coherent(out[f"batch_{which}"], out[f"noise_{which}"])
    return out
