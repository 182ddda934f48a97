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

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

# A structured step costs about 24 N³ flops, a doubling level about 324 N³: one by one is cheaper
# up to about a hundred steps.
DOUBLING_FROM = 128


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
    ops = lambda c: operators(
        k, beta, out_hessian=out_hessian, decay=decay, c=c, second_order=second_order
    )
    steps = jnp.asarray(steps, jnp.int32)
    # steps whose bias correction differs from 1 in this dtype run one by one; the rest share
    # one (A, S): one by one up to DOUBLING_FROM of them, else by doubling (O(log steps))
    exact = 0 if first_step is None else _bias_corrected_steps(beta, k.dtype)
    n_loop = 0 if first_step is None else jnp.clip(exact - jnp.asarray(first_step) + 1, 0, steps)

    k = 0.5 * (k + k.T)
    b = out_hessian if jnp.ndim(out_hessian) == 0 else jnp.asarray(out_hessian, k.dtype)

    def body(i, carry):
        t = (jnp.asarray(first_step) + i).astype(k.dtype)
        c = 1 - jnp.asarray(beta, k.dtype) ** t
        return _structured_step(k, b, beta, decay, c, second_order, *carry)

    def constant(i, carry):  # c = 1
        return _structured_step(k, b, beta, decay, 1.0, second_order, *carry)

    def doubled(carry):
        power, total = _power_and_gramian(*ops(1.0), steps - n_loop)
        return power @ carry[0], carry[1] + carry[0].T @ total @ carry[0]

    big_a, w = (state.A, state.W)
    if first_step is not None:
        big_a, w = lax.fori_loop(0, n_loop, body, (big_a, w))
    big_a, w = lax.cond(
        steps - n_loop <= DOUBLING_FROM,
        lambda carry: lax.fori_loop(0, steps - n_loop, constant, carry),
        doubled,
        (big_a, w),
    )
    return MomentumState(big_a, 0.5 * (w + w.T), state.count + steps)


def _structured_step(k, b, beta, decay, c, second_order, big_a, w):
    """One step of ``(A, W) → (A_t A, W + Aᵀ S_t A)`` from the blocks of ``A`` (rows ``A_g, A_e,
    A_a``): with ``R = R_t A = (1 − β)/c K A_g + β/c A_e + λ A_a`` the new rows are
    ``A_g − B R``, ``(1 − β) K A_g + β A_e``, ``A_a − R``, and ``Aᵀ S_t A = sym((A_g − ½ B R)ᵀ R)``
    (``sym(A_gᵀ R)`` without the second-order term): one ``N × N`` and one ``3N × 3N`` product
    per step where the dense ``A_t`` costs three ``3N × 3N`` ones."""
    n = k.shape[0]
    a_g, a_e, a_a = big_a[:n], big_a[n : 2 * n], big_a[2 * n :]
    ka = k @ a_g
    r = ((1 - beta) / c) * ka + (beta / c) * a_e + decay * a_a
    br = b * r if jnp.ndim(b) == 0 else b @ r
    inc = ((a_g - 0.5 * br) if second_order else a_g).T @ r
    new = jnp.concatenate([a_g - br, (1 - beta) * ka + beta * a_e, a_a - r], axis=0)
    return new, w + 0.5 * (inc + inc.T)


def _bias_corrected_steps(beta, dtype) -> int:
    """The last ``t`` with ``β^t ≥ eps(dtype)/8``: from the next step on ``1 − β^t`` rounds to 1
    (the spacing of floats just below 1 is ``eps/2``)."""
    beta = float(beta)
    if beta == 0.0:
        return 0
    return int(math.ceil(math.log(float(jnp.finfo(dtype).eps) / 8) / math.log(beta)))


def _power_and_gramian(a: jax.Array, s: jax.Array, m) -> tuple[jax.Array, jax.Array]:
    """``(a^m, Σ_{i<m} (a^i)ᵀ s a^i)`` by binary doubling, for a traced ``m ≥ 0``.

    Segments of ``2^j`` steps double as ``(Q, Y) → (Q², Y + Qᵀ Y Q)``; a segment appended after
    ``P = a^i`` adds ``Pᵀ Y P`` (powers of one ``a`` commute).
    """
    eye = jnp.eye(a.shape[0], dtype=a.dtype)

    def cond(carry):
        return carry[0] > 0

    def body(carry):
        rest, q, y, p, x = carry
        take = (rest & 1) == 1
        x = jnp.where(take, x + p.T @ y @ p, x)
        p = jnp.where(take, q @ p, p)
        return rest >> 1, q @ q, y + q.T @ y @ q, p, x

    init = (jnp.asarray(m, jnp.int32), a, s, eye, jnp.zeros_like(s))
    _, _, _, p, x = lax.while_loop(cond, body, init)
    return p, x


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
