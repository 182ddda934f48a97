r"""Validation-free population-risk signal from per-example gradients (THEORY.md §6).

For a minibatch of ``b`` per-example gradients ``g_{i,k}`` (``k`` a parameter coordinate)::

    μ_k     = mean_i g_{i,k}                        batch-mean gradient
    Σ_{B,k} = mean_i (g_{i,k} − μ_k)²               biased batch variance
    v_k     = Σ_{B,k}/(b − 1)                       unbiased variance of the batch mean
    loo_k   = mean_i g_{i,k} · mean_{j≠i} g_{j,k} = μ_k² − v_k      (exact identity)

``loo_k`` is unbiased for the squared population gradient ``(E g_k)²``. A step ``Δw = −η q ⊙ p ⊙ μ``
(``p ≥ 0`` a diagonal preconditioner, ``q ∈ [0, 1]`` a gate) changes the population risk, to first
order, by ``−η Σ_k q_k p_k loo_k``; the decrease is largest with the hard gate
``q_k = 1[μ_k² > v_k]`` (paper Thm 6.5). ``v`` is what the exact variant of PRM uses in place of its
EMA ``ŝ`` (:func:`batch_variance`).

All functions take per-example gradients as a pytree whose leaves have a leading batch axis ``b``
(as :func:`per_example_grads` returns) and return pytrees shaped like one gradient.

References:
  Litman & Guo, "A Theory of Generalization in Deep Learning", arXiv:2605.01172 (2026), Sec. 6,
  App. F, Thm 6.5.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class PopRiskStats(NamedTuple):
    """Per-parameter statistics of one minibatch; each field is a pytree like one gradient."""

    mean: object  # μ = mean_i g_i
    batch_variance: object  # v = Σ_B/(b − 1)
    loo: object  # μ² − v, unbiased for the squared population gradient
    gate: object  # 1[μ² > v], same dtype as the gradients


def per_example_grads(loss_fn: Callable, params, batch):
    r"""``vmap(grad)``: the gradient of ``loss_fn`` at each example of ``batch`` separately.

    ``loss_fn(params, batch) -> scalar`` is the usual mean loss over a batch (pytree whose leaves
    have a leading batch axis); it is called on batches of one example each. Returns a pytree like
    ``params`` with a leading axis of size ``b``.
    """

    def one(example):
        return jax.grad(loss_fn)(params, jax.tree.map(lambda x: x[None], example))

    return jax.vmap(one)(batch)


def stats(per_example_grads) -> PopRiskStats:
    """``μ``, ``Σ_B/(b − 1)``, the leave-one-out estimate ``μ² − Σ_B/(b − 1)`` and the hard gate."""
    b = _batch_size(per_example_grads)
    mean = jax.tree.map(lambda g: jnp.mean(g, axis=0), per_example_grads)
    var = jax.tree.map(
        lambda g, m: jnp.sum(jnp.square(g - m[None]), axis=0) / (b * (b - 1)),
        per_example_grads,
        mean,
    )
    loo = jax.tree.map(lambda m, v: jnp.square(m) - v, mean, var)
    gate = jax.tree.map(lambda m, v: (jnp.square(m) > v).astype(m.dtype), mean, var)
    return PopRiskStats(mean, var, loo, gate)


def batch_variance(per_example_grads):
    """``Σ_B/(b − 1)`` per parameter: the unbiased variance of the batch-mean gradient."""
    return stats(per_example_grads).batch_variance


def loo_estimate(per_example_grads):
    """``μ² − Σ_B/(b − 1)`` per parameter: unbiased for the squared population gradient."""
    return stats(per_example_grads).loo


def hard_gate(per_example_grads):
    """``1[μ² > Σ_B/(b − 1)]`` per parameter (paper Thm 6.5), in the gradients' dtype."""
    return stats(per_example_grads).gate


def loo_sum(per_example_grads) -> jax.Array:
    """``Σ_k (μ_k² − Σ_{B,k}/(b − 1))`` over all parameters: an unbiased ``‖∇R‖²`` estimate."""
    return _tree_sum(stats(per_example_grads).loo)


def predicted_risk_change(per_example_grads, lr, precond=None, gate=None) -> jax.Array:
    r"""First-order change of population risk for the step ``−η q ⊙ p ⊙ μ``:
    ``−η Σ_k q_k p_k (μ_k² − Σ_{B,k}/(b − 1))``.

    Args:
      per_example_grads: pytree with leading batch axis ``b``.
      lr: ``η``.
      precond: ``p``, a pytree like one gradient or a scalar; None means 1 (plain SGD). For Adam
        ``p = 1/(√v̂ + ε)``. Must be non-negative (not checked for traced values).
      gate: ``q`` in ``[0, 1]``, a pytree like one gradient or a scalar; None means 1 (no gate).
        Pass ``stats(g).gate`` for the hard gate.

    Note the step is taken along the batch mean ``μ``; Adam's momentum ``m̂`` in place of ``μ`` is
    outside this estimate.
    """
    st = stats(per_example_grads)
    p = _broadcast(precond, st.loo, "precond")
    q = _broadcast(gate, st.loo, "gate")
    terms = jax.tree.map(lambda qk, pk, lk: qk * pk * lk, q, p, st.loo)
    return -lr * _tree_sum(terms)


class WindowCorrelation(NamedTuple):
    """Pearson ``r`` of windowed sums, its 95 % Fisher-z interval and the number of windows."""

    window: int
    r: float
    ci_low: float
    ci_high: float
    n_windows: int


def window_correlation(predicted, actual, window: int = 1) -> WindowCorrelation:
    r"""How well a per-step predicted change tracks the realized one, over windows of steps.

    With ``T`` aligned steps, the sums ``P_j = Σ_{t ∈ w_j} predicted_t`` and
    ``A_j = Σ_{t ∈ w_j} actual_t`` over the ``m = ⌊T/window⌋`` consecutive windows ``w_j`` of
    ``window`` steps (a trailing partial window is dropped) give the Pearson correlation
    ``r = cov(P, A)/(sd(P) sd(A))`` and its 95 % interval
    ``tanh(atanh r ± 1.96/√(m − 3))`` (Fisher's z, exact for a bivariate normal). Used to check the
    validation-free estimate of THEORY.md §6: ``predicted_t`` the LOO first-order change of
    population risk for step ``t``, ``actual_t = L_held(θ_{t+1}) − L_held(θ_t)`` (paper Sec. 6).

    Args:
      predicted, actual: ``(T,)`` finite arrays, aligned step by step.
      window: steps per window, ``≥ 1``.

    Returns:
      :class:`WindowCorrelation`; ``r`` is NaN when either windowed series is constant and the
      interval is NaN when ``m ≤ 3``.
    """
    p, a = np.asarray(predicted, np.float64), np.asarray(actual, np.float64)
    if p.ndim != 1 or p.shape != a.shape:
        raise ValueError(
            f"predicted and actual must be 1-D and aligned, got {p.shape} and {a.shape}"
        )
    if not (np.isfinite(p).all() and np.isfinite(a).all()):
        raise ValueError("predicted and actual must be finite (drop the steps without a probe)")
    if not (isinstance(window, int | np.integer) and window >= 1):
        raise ValueError(f"window must be a positive integer, got {window!r}")
    m = len(p) // window
    if m < 2:
        raise ValueError(f"{len(p)} steps give {m} window(s) of {window}: need at least 2")
    ps = p[: m * window].reshape(m, window).sum(axis=1)
    as_ = a[: m * window].reshape(m, window).sum(axis=1)
    if ps.std() == 0 or as_.std() == 0:
        r = float("nan")
    else:
        r = float(np.corrcoef(ps, as_)[0, 1])
    if m > 3 and np.isfinite(r) and abs(r) < 1:
        z, half = np.arctanh(r), 1.96 / np.sqrt(m - 3)
        lo, hi = float(np.tanh(z - half)), float(np.tanh(z + half))
    elif np.isfinite(r) and abs(r) == 1:
        lo = hi = r
    else:
        lo = hi = float("nan")
    return WindowCorrelation(int(window), r, lo, hi, int(m))


def _batch_size(tree) -> int:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError("per-example gradients: empty pytree")
    if any(jnp.ndim(x) == 0 for x in leaves):
        raise ValueError("per-example gradients need a leading batch axis on every leaf")
    b = jnp.shape(leaves[0])[0]
    if any(jnp.shape(x)[0] != b for x in leaves):
        raise ValueError("per-example gradients: leaves disagree on the batch size")
    if b < 2:
        raise ValueError(f"the leave-one-out estimate needs a batch of at least 2, got {b}")
    return b


def _broadcast(x, like, name: str):
    """A scalar or None (meaning 1) broadcast to the shape of the pytree ``like``."""
    if x is None:
        x = 1.0
    if isinstance(x, int | float | jax.Array | np.ndarray) and jnp.ndim(x) == 0:
        return jax.tree.map(lambda l: jnp.broadcast_to(jnp.asarray(x, l.dtype), l.shape), like)
    if jax.tree.structure(x) != jax.tree.structure(like) or any(
        jnp.shape(a) != jnp.shape(b)
        for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(like), strict=True)
    ):
        raise ValueError(f"{name} must be a scalar or a pytree shaped like one gradient")
    return x


def _tree_sum(tree) -> jax.Array:
    return sum(jnp.sum(x) for x in jax.tree.leaves(tree))
