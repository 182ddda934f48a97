r"""One step's linearized map of :class:`dyntheory.probes.StepwiseDissipation`, the path it is
taken along, and ``W_gg``'s exact top eigenpairs from that path by the adjoint (THEORY.md §10,
"Why a forward accumulator's spectrum lives on a span fixed at s").

The probe advances ``z = (g, μ, ω)`` through each step's map (:func:`linear_step`) and so knows
``W(s, T)`` only on the span it propagates from ``s``. With ``record_path = L`` it also keeps the
path of its first ``L`` steps (:class:`PathBuffers`: the weights ``w_t``, the step's
preconditioner ``p_{t+1}`` with ``η``, the rows' batch weights ``ρ_t`` and the bias correction
``c_t``). On that path ``f(v) = Σ_t q_t(Φ_t (v, 0, 0))``, with ``Φ_t`` the product of the maps
since ``s`` and ``q_t(z) = z_gᵀ r − ½ rᵀ B_t r``, is the quadratic form ``vᵀ W_gg v``; its gradient
(reverse mode through the steps: the adjoint) is ``2 W_gg v``, so Lanczos on ``v → ½ ∇f(v)``
gives the top eigenpairs of the whole ``W_gg`` at any rank, for one forward and one backward
pass over the path per product (:func:`exact_topk`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from dyntheory import krylov, losses
from dyntheory.probes.base import f64


class PathBuffers(NamedTuple):
    """The first ``L`` steps from ``s`` (``P`` parameters, ``n`` probe rows)."""

    w: jax.Array  # (L + 1, P) the weights w_s … w_{s+L}, flat
    p: jax.Array  # (L, P) η · p_{t+1}, the step's preconditioner as taken (params' dtype)
    rows: jax.Array  # (L, n) ρ_t, the rows' weights in step t's loss (ones: the whole set)
    c: jax.Array  # (L,) Adam's bias correction c_t (1 without it)
    count: jax.Array  # () int32 steps recorded


def linear_step(probe, apply_fn, x, params, after_params, p, rows, c):
    r"""Step ``t``'s linearized map of ``z = (g, μ, ω)`` (module doc of
    :mod:`dyntheory.probes.stepwise`): returns ``(one, n)`` with ``one(col) -> (A_t col, r, B_t
    r)`` for one column ``(N + 2P,)`` (``r = −Δu``, so ``q_t = z_gᵀ r − ½ rᵀ B_t r``) and ``n = N``
    outputs. ``params``, ``after_params``: ``w_t`` and ``w_{t+1}`` (the midpoint rule takes the
    motion's ``J̄`` and ``B̄`` at their mean); ``p`` ``(P,)`` ``η p_{t+1}``; ``rows`` ``(n_rows,)``
    or None (the whole set's gradient); ``c`` the bias correction. Settings (``loss``, ``rule``,
    ``momentum``, ``decay``) from ``probe``."""
    fn = lambda w: apply_fn(w, x)
    out, jvp = jax.linearize(fn, params)
    vjp = jax.linear_transpose(jvp, params)
    if probe.rule == "midpoint":  # the motion's J̄ and B̄ at w_t + Δw/2: O(‖Δw‖³) per step
        mid = jax.tree.map(lambda a, b: a + 0.5 * (b - a), params, after_params)
        out, jvp = jax.linearize(fn, mid)
    u = out.reshape(out.shape[0], -1) if probe.loss == "squared" else out
    flat, unravel = ravel_pytree(params)
    spec = losses.get_loss(probe.loss)
    u64 = u.astype(f64())  # B from float64 logits (stepwise module doc)
    n, size = u.size, flat.size
    beta, lam = jnp.asarray(probe.momentum, f64()), jnp.asarray(probe.decay, f64())

    def one(col):  # one column (g, μ, ω) through the step
        zg, mu, om = col[:n], col[n : n + size], col[n + size :]
        ct = zg.reshape(u.shape[0], -1)  # per row: the step's batch weights it (or not)
        ct = ct if rows is None else rows[:, None] * ct
        (grad,) = vjp(ct.reshape(out.shape).astype(out.dtype))
        mu = beta * mu + (1 - beta) * ravel_pytree(grad)[0].astype(f64())
        d = p * mu / c + lam * om  # −Δω
        r = jvp(unravel(d.astype(flat.dtype))).reshape(-1).astype(f64())  # −Δu
        br = spec.out_hessian_vp(u64, r)
        return jnp.concatenate([zg - br, mu, om - d]), r, br

    return one, n


def init_buffers(length: int, n_params: int, n_rows: int, dtype) -> PathBuffers:
    """Empty buffers for ``length`` steps (weights in the params' ``dtype``)."""
    return PathBuffers(
        jnp.zeros((length + 1, n_params), dtype), jnp.zeros((length, n_params), dtype),
        jnp.ones((length, n_rows), f64()), jnp.ones((length,), f64()),
        jnp.zeros((), jnp.int32),
    )  # fmt: skip


def record(buf: PathBuffers, i, w_t, w_next, p, rows, c) -> PathBuffers:
    """Step ``i = t − s`` into the buffers; steps past their length are dropped."""
    length = buf.p.shape[0]
    put = lambda a, j, v: a.at[j].set(jnp.asarray(v, a.dtype), mode="drop")
    rows = buf.rows[0] if rows is None else rows
    return PathBuffers(
        put(put(buf.w, i, w_t), i + 1, w_next), put(buf.p, i, p), put(buf.rows, i, rows),
        put(buf.c, i, c), jnp.minimum(i + 1, length).astype(jnp.int32),
    )  # fmt: skip


def exact_topk(probe, apply_fn, x, params_like, buf: PathBuffers, k: int, *, num_iters=None):
    r"""The top ``k`` eigenpairs of ``W_gg(s, s + count)`` on the recorded path, by Lanczos on
    the adjoint product ``v → ½ ∇_v Σ_t q_t(Φ_t (v, 0, 0)) = W_gg v`` (module doc; softmax:
    ``Π W_gg Π``, as the probe splits). ``params_like``: a pytree of the params' structure
    (arrays or shapes);
    ``buf``: a :class:`PathBuffers` of one run (concrete: ``count`` sets the scan's length).
    Each product costs one forward and one backward pass over the ``count`` recorded steps
    (``jax.checkpoint`` per step keeps memory at one step's linearization); ``num_iters``
    (default ``min(N, 2k + 30)``) products. Returns ``(eigenvalues (k,), eigenvectors (N, k))``,
    descending. Exact to Lanczos' convergence and round-off on the path as recorded.
    """
    count = int(buf.count)
    if count < 1:
        raise ValueError("exact_topk needs a recorded path: record_path >= 1 and steps past start.")
    unravel = ravel_pytree(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params_like))[1]
    xs = (buf.w[:count], buf.w[1 : count + 1], buf.p[:count], buf.rows[:count], buf.c[:count])
    n_params = buf.w.shape[1]

    @jax.checkpoint
    def body(z, step):
        w, w_next, p, rows, c = step
        p = p.astype(f64())
        one, n = linear_step(probe, apply_fn, x, unravel(w), unravel(w_next), p, rows, c)
        new, r, br = one(z)
        return new, z[:n] @ r - 0.5 * r @ br

    def form(v):  # vᵀ W_gg v along the path
        z0 = jnp.concatenate([v, jnp.zeros(2 * n_params, f64())])
        return jnp.sum(lax.scan(body, z0, xs)[1])

    mv = jax.jit(lambda v: 0.5 * jax.grad(form)(v))
    n_out = jax.eval_shape(lambda: apply_fn(unravel(buf.w[0]), x)).size
    if probe.loss == "softmax_ce":  # Π W_gg Π (THEORY §10, "Softmax's zero-loss directions")
        p_cls = n_out // x.shape[0]
        shift_free = lambda v: losses.logit_shift_free(v, p_cls)
        matvec = lambda v: shift_free(mv(shift_free(v)))
    else:
        matvec = mv
    iters = min(n_out, num_iters or 2 * int(k) + 30)
    return krylov.lanczos_topk(matvec, n_out, int(k), key=jax.random.key(0), num_iters=iters)
