r"""The loss identity of an AdamW-type step: EMA momentum, Adam's bias correction, weight decay.

THEORY.md §10. The step of Adam / AdamW / PRM with its preconditioner ``p`` held fixed,

.. math::  m_t = β m_{t−1} + (1 − β) ∇L_t,\qquad Δw_t = −p ⊙ m_t / c_t − λ w_t,

(``c_t = 1 − β^t`` Adam's bias correction, or 1; ``λ = η·wd`` the decoupled decay), moves the
outputs under a frozen Jacobian ``J`` by ``Δu_t = −e_t / c_t − λ a_t``, where
``e_t = J (p ⊙ m_t)`` is the output image of the momentum and ``a_t = J w_t`` that of the weights.
With ``K = J diag(p) Jᵀ`` and ``g = ∂L/∂u``, ``∇L_t = Jᵀ g_t`` gives
``e_t = β e_{t−1} + (1 − β) K g_t`` and ``a_{t+1} = (1 − λ) a_t − e_t / c_t``, so the augmented
state ``z_t = (g_t, e_{t−1}, a_t)`` (``3N`` for ``N`` outputs) evolves linearly,
``z_{t+1} = A_t z_t`` with (``B`` the output Hessian)

.. math::

    A_t = \begin{pmatrix}
        I - \tfrac{1-β}{c_t} B K & -\tfrac{β}{c_t} B & -λ B \\
        (1-β) K & β I & 0 \\
        -\tfrac{1-β}{c_t} K & -\tfrac{β}{c_t} I & (1-λ) I
    \end{pmatrix}.

With ``R_t = [(1 − β) K / c_t, β I / c_t, λ I]`` (``N × 3N``, so ``−Δu_t = R_t z_t``) the loss
decrease of step ``t`` is ``−g_tᵀ Δu_t − ½ Δu_tᵀ B Δu_t = z_tᵀ S_t z_t`` with
``S_t = sym(E₁ R_t) − ½ R_tᵀ B R_t`` (``E₁`` puts ``R_t`` in the first block row), exact for a
quadratic loss; ``second_order=False`` keeps only the first-order ``sym(E₁ R_t)``, the term of
THEORY.md §3's ``W_S``. Over the steps ``t = t_0 … t_0 + k − 1``

.. math::  \Phi(t_0) - \Phi(t_0 + k) \approx z(t_0)^\top W\, z(t_0),\qquad
           W = \sum_t (A_{t_0+k-1:t})^\top\, S_t\, A_{t_0+k-1:t} ,

a symmetric but **indefinite** Gramian: momentum and decay can raise the loss for a while. For
``β = λ = 0``, ``c = 1`` the ``g``-block of ``W`` is the Gramian of :mod:`dyntheory.dissipation`
and of ``A`` its propagator ``I − B K``. On a linear model with squared loss (``J`` constant,
``e = K h`` with ``Jᵀh = m``) the recursion is exact: ``z_k = A z_0`` along the trajectory and
``z_0ᵀ W z_0`` is the loss drop to round-off (first order: ``Σ_t g_tᵀ (e_t/c_t + λ a_t)``;
tests). Every operator may be compressed to a basis
``Q`` (``K_r = QᵀKQ``, ``B_r = QᵀBQ``, coordinates ``Qᵀz``): the probes run it on
:mod:`dyntheory.lowrank`'s basis.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class MomentumState(NamedTuple):
    """The augmented accumulator for ``N`` train outputs (``3N`` coordinates ``(g, e, a)``)."""

    A: jax.Array  # (3N, 3N) propagator of z from the start: z(T) = A z(s)
    W: jax.Array  # (3N, 3N) Σ_t (A_{T:t})ᵀ S_t A_{T:t}, symmetric, indefinite
    count: jax.Array  # () int32, optimizer steps accumulated


def init(n_out: int, dtype=None) -> MomentumState:
    """``A = I``, ``W = 0`` for ``n_out`` train outputs."""
    if int(n_out) < 1:
        raise ValueError(f"n_out must be positive, got {n_out}.")
    dtype = dtype or jax.dtypes.canonicalize_dtype(jnp.float64)
    n3 = 3 * int(n_out)
    return MomentumState(
        jnp.eye(n3, dtype=dtype), jnp.zeros((n3, n3), dtype), jnp.zeros((), jnp.int32)
    )


def operators(k: jax.Array, beta, *, out_hessian, decay=0.0, c=1.0, second_order=True):
    """``(A_t, S_t)`` of one step for the kernel ``k`` (``N × N``, the step size inside), ``B``
    (a scalar meaning ``B·I``, or ``N × N``), the decay ``λ`` and the bias correction ``c_t``;
    ``second_order``: include ``−½ Δuᵀ B Δu`` in ``S_t`` (module docstring)."""
    n = k.shape[0]
    k = 0.5 * (k + k.T)
    eye, zero = jnp.eye(n, dtype=k.dtype), jnp.zeros_like(k)
    b = out_hessian * eye if jnp.ndim(out_hessian) == 0 else jnp.asarray(out_hessian, k.dtype)
    a = jnp.block(
        [
            [eye - (1 - beta) / c * b @ k, -beta / c * b, -decay * b],
            [(1 - beta) * k, beta * eye, zero],
            [-(1 - beta) / c * k, -beta / c * eye, (1 - decay) * eye],
        ]
    )
    row = jnp.block([[(1 - beta) / c * k, beta / c * eye, decay * eye]])
    m = jnp.concatenate([row, jnp.zeros((2 * n, 3 * n), k.dtype)], axis=0)
    s = 0.5 * (m + m.T)
    if second_order:
        s = s - 0.5 * row.T @ b @ row
    return a, s


def update(
    state: MomentumState,
    k: jax.Array,
    beta,
    *,
    out_hessian,
    steps,
    decay=0.0,
    first_step=None,
    second_order=True,
) -> MomentumState:
    """Advance ``steps`` optimizer steps with ``k`` and ``B`` held constant (exact recursion).

    ``first_step``: the update number ``t`` (1-based, as optax's ``count`` after it) of the first
    of these steps, for Adam's bias correction ``c_t = 1 − β^t``; None: ``c = 1``. ``steps`` may
    be traced. ``second_order``: see :func:`operators`.
    """
    if not 0 <= float(beta) < 1:
        raise ValueError(f"beta must lie in [0, 1), got {beta}.")
    if not 0 <= float(decay) < 1:
        raise ValueError(f"decay (η·wd per step) must lie in [0, 1), got {decay}.")
    k = jnp.asarray(k, state.W.dtype)

    def body(i, carry):
        big_a, w = carry
        if first_step is None:
            c = 1.0
        else:
            t = (jnp.asarray(first_step) + i).astype(k.dtype)
            c = 1 - jnp.asarray(beta, k.dtype) ** t
        a, s = operators(
            k, beta, out_hessian=out_hessian, decay=decay, c=c, second_order=second_order
        )
        return a @ big_a, w + big_a.T @ s @ big_a

    big_a, w = lax.fori_loop(0, steps, body, (state.A, state.W))
    return MomentumState(big_a, 0.5 * (w + w.T), state.count + steps)


def augment(g: jax.Array, e: jax.Array | None = None, a: jax.Array | None = None) -> jax.Array:
    """``z = (g, e, a)`` (``(3N,)``), zeros for a missing ``e`` (momentum starting empty) or
    ``a`` (no decay)."""
    e = jnp.zeros_like(g) if e is None else e
    a = jnp.zeros_like(g) if a is None else a
    return jnp.concatenate([g, e, a])


def predicted_loss_drop(state: MomentumState, g0, e0=None, a0=None) -> jax.Array:
    """``z(s)ᵀ W z(s)`` with ``z(s) = (g(s), e(s − 1), a(s))`` (:func:`augment`)."""
    z = augment(g0, e0, a0).astype(state.W.dtype)
    return z @ state.W @ z
