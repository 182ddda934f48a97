r"""The dissipation accumulator in a tracked low-rank basis: W_S, D, G_Q without (np × np) matrices.

THEORY.md §10 (Scale). The dense accumulator (:mod:`dyntheory.dissipation`) costs ``O(N³)`` per
refresh for ``N = n p`` outputs. Here every operator lives in an orthonormal basis
``Q = [q_1 … q_R]`` (``N × R``) of tracked output directions, and everything outside it is
reservoir with ``P = I`` there:

.. math::

    P \approx Q P_r Q^\top + (I - QQ^\top),\qquad W_S \approx Q W_r Q^\top,\qquad
    D \approx Q D_r Q^\top,\qquad G_Q \approx G_r Q^\top .

At a refresh the kernel and the output Hessian are compressed by Rayleigh–Ritz,
``K_r = Qᵀ K Q``, ``B_r = Qᵀ B Q``, ``K_{QS,r} = K_QS Q`` (``R`` NTK-vector products,
:func:`dyntheory.ntk.ntk_matvec`), and the ``R × R`` operators advance exactly as the dense
recursion of THEORY.md §3 (:func:`dyntheory.dissipation.update` on the compressed matrices). The
basis grows (:func:`extend`) with directions that matter: ``g(0)``, the label-noise direction and,
at every refresh, the kernel's leading eigenvectors (Lanczos), each Gram–Schmidt-orthogonalized
against ``Q`` and kept if it adds a new direction, until ``R`` columns are used. A direction added
later was reservoir (``P = I``, no dissipation) before. Cost per refresh: ``O(R)`` NTK-vector
products plus ``O(N R²)`` — linear in ``N`` at fixed ``R``.

**Exactness.** With a complete basis (``R = N``, or ``Q`` spanning every direction the dynamics
reaches) ``Q P_r Qᵀ`` etc. are the dense operators up to round-off: the compression is a
similarity transform.

**Error bound (frozen kernel, squared loss).** If ``Q`` spans ``r`` eigenvectors of a kernel ``K``
held fixed over a time ``T = η k`` (``B = I/n``), ``W_S`` is block diagonal in ``(Q, Q^⊥)`` and for
any ``g``

.. math::  0 \le g^\top W_S g - (Q^\top g)^\top W_r (Q^\top g) = g_\perp^\top W_S g_\perp
           \le \min\!\big(\tfrac{n}{2},\; T\,\lambda_{\max}(K|_{Q^\perp})\big)\,\|g_\perp\|^2,

with ``g_⊥ = (I − QQᵀ) g``: the untracked directions dissipate at most ``η λ`` per step each,
and at most their whole energy ``(n/2)‖g_⊥‖²``. :func:`truncation_bound` computes it and the
tests check it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from dyntheory import dissipation


class LowRankState(NamedTuple):
    """The accumulator in the basis ``Q``; ``R`` = rank, ``N`` = train outputs."""

    Q: jax.Array  # (N, R) orthonormal columns; columns >= size are 0 (not yet used)
    size: jax.Array  # () int32: columns of Q in use
    acc: dissipation.DissipationState  # P_r, W_r, D_r (R, R) and G_r (mq, R) in Q's coordinates


def init(n_out: int, rank: int, n_query_out: int = 0, dtype=None) -> LowRankState:
    """An empty basis of ``rank`` columns for ``n_out`` train outputs; ``P_r = I``, the rest 0."""
    if not 1 <= int(rank) <= int(n_out):
        raise ValueError(
            f"rank must lie in [1, n_out = {n_out}] (the number of train outputs n·p), got {rank}."
        )
    acc = dissipation.init(int(rank), n_query_out, dtype=dtype)
    Q = jnp.zeros((int(n_out), int(rank)), acc.P.dtype)
    return LowRankState(Q, jnp.zeros((), jnp.int32), acc)


def extend(state: LowRankState, vectors: jax.Array, rtol: float = 1e-6) -> LowRankState:
    """Append the new directions of ``vectors`` (``(N, k)`` columns) to the basis.

    Each column is orthogonalized against the basis (two Gram–Schmidt passes) and kept if more
    than ``rtol`` of its norm is new, while free columns remain; the accumulated operators are
    unchanged (a new direction starts with ``P = I``, ``W = D = 0``).
    """
    Q = state.Q
    vectors = jnp.asarray(vectors, Q.dtype)
    if vectors.ndim != 2 or vectors.shape[0] != Q.shape[0]:
        raise ValueError(f"vectors must have shape ({Q.shape[0]}, k), got {vectors.shape}.")

    def add(i, carry):
        Q, size = carry
        v = vectors[:, i]
        nrm0 = jnp.linalg.norm(v)
        w = v - Q @ (Q.T @ v)
        w = w - Q @ (Q.T @ w)
        nrm = jnp.linalg.norm(w)
        keep = (nrm > rtol * nrm0) & (nrm0 > 0) & (size < Q.shape[1])
        slot = jnp.minimum(size, Q.shape[1] - 1).astype(jnp.int32)
        col = jnp.where(keep, w / jnp.where(nrm > 0, nrm, 1.0), Q[:, slot])
        Q = lax.dynamic_update_slice(Q, col[:, None], (jnp.zeros((), jnp.int32), slot))
        return Q, size + keep.astype(jnp.int32)

    Q, size = lax.fori_loop(0, vectors.shape[1], add, (Q, state.size))
    return state._replace(Q=Q, size=size)


def compress(state: LowRankState, matvec: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """``Qᵀ A Q`` (``R × R``, symmetrized) for a symmetric operator ``A`` given as ``v -> A v``."""
    aq = jax.vmap(matvec, in_axes=1, out_axes=1)(state.Q)
    m = state.Q.T @ aq.astype(state.Q.dtype)
    return 0.5 * (m + m.T)


def compress_product(
    state: LowRankState,
    k_mv: Callable[[jax.Array], jax.Array],
    b_mv: Callable[[jax.Array], jax.Array],
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""``(K_r, B_r, (BK)_r)`` = ``(Qᵀ K Q, Qᵀ B Q, Qᵀ B K Q)`` from one block of ``R``
    kernel-vector products.

    The propagator's generator ``B K`` is compressed as one operator: ``Qᵀ B K Q = B_r K_r +
    Qᵀ B (I − QQᵀ) K Q``. The product of the compressed factors drops the second term, the path
    from the basis through ``K`` out of it and back through ``B``. For squared loss (``B = I/n``)
    it is 0; for softmax, whose ``B`` mixes the logits of each example, it is not, and dropping it
    loses W_S's spectrum (tests). On a span that ``B K`` maps into itself ``Qᵀ B K Q`` is exact.
    """
    Q = state.Q
    kq = jax.vmap(k_mv, in_axes=1, out_axes=1)(Q).astype(Q.dtype)
    bq = jax.vmap(b_mv, in_axes=1, out_axes=1)(Q).astype(Q.dtype)
    bkq = jax.vmap(b_mv, in_axes=1, out_axes=1)(kq).astype(Q.dtype)
    sym = lambda m: 0.5 * (m + m.T)
    return sym(Q.T @ kq), sym(Q.T @ bq), Q.T @ bkq


def compress_cross(state: LowRankState, matvec: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """``A Q`` (``mq × R``) for a cross operator ``A`` (e.g. ``K_QS``) given as ``v -> A v``."""
    return jax.vmap(matvec, in_axes=1, out_axes=1)(state.Q).astype(state.Q.dtype)


def update(
    state: LowRankState, k_r: jax.Array, lr, *, out_hessian, steps=1, kq_r=None, generator=None
) -> LowRankState:
    """Advance ``steps`` steps with the compressed kernel ``k_r`` and Hessian ``out_hessian``
    (a scalar ``c`` meaning ``c·I``, or ``B_r``) held constant: the dense recursion of
    THEORY.md §3 on ``R × R`` matrices (:func:`dyntheory.dissipation.update`). ``generator``:
    the compressed product ``Qᵀ B K Q`` (:func:`compress_product`) to propagate with instead of
    ``B_r K_r``."""
    acc = dissipation.update(
        state.acc, k_r, lr, out_hessian=out_hessian, steps=steps, k_query_train=kq_r,
        generator=generator,
    )  # fmt: skip
    return state._replace(acc=acc)


def coords(state: LowRankState, v: jax.Array) -> jax.Array:
    """``Qᵀ v``: the coordinates of an output-space vector in the basis (``(R,)``)."""
    return state.Q.T @ jnp.asarray(v, state.Q.dtype)


def dense(state: LowRankState) -> dissipation.DissipationState:
    """The operators in output space (``N × N``; for tests on small problems only)."""
    Q, acc = state.Q, state.acc
    outside = jnp.eye(Q.shape[0], dtype=Q.dtype) - Q @ Q.T
    return acc._replace(
        P=Q @ acc.P @ Q.T + outside, W=Q @ acc.W @ Q.T, D=Q @ acc.D @ Q.T, G=acc.G @ Q.T
    )


def truncation_bound(
    state: LowRankState, g: jax.Array, lambda_out: jax.Array, time: jax.Array, n: int
) -> jax.Array:
    r"""``min(n/2, T·λ_out)·‖(I − QQᵀ) g‖²``: the bound on ``gᵀ W g`` missed by the basis
    (module docstring), for squared loss with ``λ_out`` the largest kernel eigenvalue outside the
    basis and ``T`` the gradient-flow time."""
    g = jnp.asarray(g, state.Q.dtype)
    c = coords(state, g)
    outside = jnp.maximum(g @ g - c @ c, 0.0)
    return jnp.minimum(0.5 * n, time * lambda_out) * outside
