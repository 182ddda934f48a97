r"""The dissipation Gramian under EMA (heavy-ball) momentum: the augmented output-space recursion.

THEORY.md §10. With ``m_t = β m_{t−1} + (1 − β) ∇L_t`` and the step ``Δw_t = −p ⊙ m_t`` (``p`` the
diagonal step, ``η`` for plain momentum GD, ``η/(√v̂ + ε)`` for Adam with its ``v̂`` held fixed),
if ``m`` stays in the row space of a frozen Jacobian ``J`` then ``m_t = Jᵀ h_t`` with the
output-space momentum ``h_t = β h_{t−1} + (1 − β) g_t``. The outputs move by ``Δu_t = −K h_t``
(``K = J diag(p) Jᵀ``), so ``g_{t+1} = g_t − B K h_t`` and the augmented state
``z_t = (g_t, h_{t−1})`` (``2N``) evolves linearly:

.. math::

    z_{t+1} = A z_t,\qquad A = \begin{pmatrix} I - (1-\beta) B K & -\beta B K \\
                                              (1-\beta) I & \beta I \end{pmatrix}.

The first-order loss decrease of step ``t`` is ``g_tᵀ K h_t = z_tᵀ S z_t`` with
``S = ½ [[2(1 − β) K, β K], [β K, 0]]``, so over ``k`` steps from ``z(s)``

.. math::  \Phi(s) - \Phi(s + k) \approx z(s)^\top W\, z(s),\qquad
           W = \sum_{t<k} (A^t)^\top S A^t ,

a symmetric but **indefinite** Gramian: momentum can raise the loss for a while. For ``β = 0``
the ``g``-block of ``W`` is the Gramian of :mod:`dyntheory.dissipation` and ``A`` its
propagator ``I − B K``. On a linear model (``J`` constant, squared loss, ``m_{−1} = 0``) the
recursion is exact: ``A^k z_0 = (g_k, h_{k−1})`` and ``z_0ᵀ W z_0 = Σ_t g_tᵀ K h_t`` along the
trajectory (tests). Adam's bias correction of ``m`` is ignored here (it rescales the first
``1/(1 − β)`` steps).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class MomentumState(NamedTuple):
    """The augmented accumulator for ``N`` train outputs (``2N`` augmented coordinates)."""

    A: jax.Array  # (2N, 2N) propagator of z from the start: z(T) = A z(s)
    W: jax.Array  # (2N, 2N) Σ_t (A^t)ᵀ S A^t, symmetric, indefinite
    count: jax.Array  # () int32, optimizer steps accumulated


def init(n_out: int, dtype=None) -> MomentumState:
    """``A = I``, ``W = 0`` for ``n_out`` train outputs."""
    if int(n_out) < 1:
        raise ValueError(f"n_out must be positive, got {n_out}.")
    dtype = dtype or jax.dtypes.canonicalize_dtype(jnp.float64)
    n2 = 2 * int(n_out)
    return MomentumState(
        jnp.eye(n2, dtype=dtype), jnp.zeros((n2, n2), dtype), jnp.zeros((), jnp.int32)
    )


def operators(k: jax.Array, beta, *, out_hessian) -> tuple[jax.Array, jax.Array]:
    """``(A, S)`` of one step for the kernel ``k`` (``N × N``, the step size inside) and ``B``
    (a scalar ``c`` meaning ``c·I``, or an ``N × N`` matrix)."""
    n = k.shape[0]
    k = 0.5 * (k + k.T)
    eye = jnp.eye(n, dtype=k.dtype)
    bk = out_hessian * k if jnp.ndim(out_hessian) == 0 else out_hessian @ k
    a = jnp.block([[eye - (1 - beta) * bk, -beta * bk], [(1 - beta) * eye, beta * eye]])
    s = 0.5 * jnp.block([[2 * (1 - beta) * k, beta * k], [beta * k, jnp.zeros_like(k)]])
    return a, s


def update(state: MomentumState, k: jax.Array, beta, *, out_hessian, steps: int) -> MomentumState:
    """Advance ``steps`` optimizer steps with ``k`` and ``B`` held constant (exact recursion)."""
    if not 0 <= float(beta) < 1:
        raise ValueError(f"beta must lie in [0, 1), got {beta}.")
    a, s = operators(jnp.asarray(k, state.W.dtype), beta, out_hessian=out_hessian)

    def body(_, carry):
        big_a, w = carry
        return a @ big_a, w + big_a.T @ s @ big_a

    big_a, w = lax.fori_loop(0, steps, body, (state.A, state.W))
    return MomentumState(big_a, 0.5 * (w + w.T), state.count + steps)


def predicted_loss_drop(state: MomentumState, g0: jax.Array, h0: jax.Array | None = None):
    """``z(s)ᵀ W z(s)`` with ``z(s) = (g(s), h(s − 1))`` (``h = 0`` when momentum starts empty)."""
    h0 = jnp.zeros_like(g0) if h0 is None else h0
    z = jnp.concatenate([g0, h0]).astype(state.W.dtype)
    return z @ state.W @ z
