"""The kernel side of :class:`dyntheory.probes.Dissipation`: the preconditioner and step size of
an interval, the compressed stability bound, the output images of the momentum and the weights
for the augmented identity, and the state helpers (the refresh itself is
:mod:`dyntheory.probes.dissipation_refresh`).

Functions take the probe (its fields are their settings) as the first argument.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dyntheory import dissipation, losses, lowrank, ntk, split
from dyntheory.probes.base import f64

PARTS, SUBS = ("clean", "noise"), ("channel", "reservoir")


def precond(probe, opt_state):
    """The preconditioner ``p`` of ``opt_state`` (non-finite entries as 0), or None for GD."""
    if probe.preconditioner is None:
        return None
    return jax.tree.map(lambda q: jnp.where(jnp.isfinite(q), q, 0), probe.preconditioner(opt_state))


def step_size(probe, step, p):
    """``η`` of the interval: 1 with a preconditioner (it is in ``K_eff``), else the probe's lr."""
    return jnp.asarray(
        1.0 if p is not None else (probe.lr(step) if callable(probe.lr) else probe.lr), f64()
    )


def hessian(hess):
    """``(B, generator)`` of a refreshed Hessian: ``B`` (or ``1/n``), and the compressed product
    ``Qᵀ B K Q`` to propagate with, or None."""
    return hess if isinstance(hess, tuple) else (hess, None)


def zero_loss_free(probe, u, v):
    """``v`` (``(N,)`` or ``(N, k)``) with softmax's zero-loss directions projected out when
    ``probe.modulo_ker_b``: per example, the shift of all logits by one constant (``B 1 = 0``)."""
    if not (probe.modulo_ker_b and probe.loss == "softmax_ce"):
        return v
    return losses.logit_shift_free(v, u.shape[-1])


def compressed_mu_min(basis, k_r, hess) -> jax.Array:
    """The smallest eigenvalue of ``B_r K_r`` over the basis columns in use: the compressed step
    ``I − η B_r K_r`` is what the low-rank recursion advances, so its ``|1 − μ_min|`` enters the
    stability; ``B_r K_r`` is similar to the PSD ``B_r^{1/2} K_r B_r^{1/2}``. Unused columns are
    zero rows and columns: they are shifted out of the minimum."""
    unused = jnp.arange(k_r.shape[0]) >= basis.size
    if jnp.ndim(hess) == 0:
        sym = hess * k_r
    else:
        lam_b, v_b = jnp.linalg.eigh(hess)
        root = (v_b * jnp.sqrt(jnp.maximum(lam_b, 0))[None]) @ v_b.T
        sym = root @ k_r @ root
    sym = jnp.where(unused[:, None] | unused[None, :], 0.0, sym)
    big = jnp.max(jnp.abs(sym)) * 4 + 1.0
    return jnp.linalg.eigvalsh(sym + jnp.diag(jnp.where(unused, big, 0.0)))[0]


def images(probe, ctx, params, opt_state, step, g):
    """For the augmented identity (:mod:`dyntheory.momentum`): ``e = J (p ⊙ m)`` (zeros without
    momentum) and ``a = J w`` (zeros without decay), flat ``(np,)``."""
    jvp = lambda t: ntk.output_jvp(
        ctx.apply_fn, params, ctx.train["x"], t, chunk_size=probe.chunk_size
    ).astype(f64())
    e = jnp.zeros(g.shape, f64())
    if probe.momentum > 0:
        m = probe.first_moment(opt_state)
        p = precond(probe, opt_state)
        e = jvp(m if p is None else jax.tree.map(jnp.multiply, m, p))
        if p is None:  # plain momentum GD: the step size is the probe's lr at this step
            e = e * step_size(probe, step, None)
    a = jvp(params) if probe.decay > 0 else jnp.zeros(g.shape, f64())
    return e, a


def drop_g(acc, query: bool):
    """The state to keep: without a query set, ``G`` (0 rows) is stored as None."""
    if query:
        return acc
    if isinstance(acc, lowrank.LowRankState):
        return acc._replace(acc=acc.acc._replace(G=None))
    return acc._replace(G=None)


def with_g(acc, query: bool, n: int):
    """The inverse of :func:`drop_g`: an empty ``(0, n)`` G for the accumulator's update."""
    if query:
        return acc
    if isinstance(acc, lowrank.LowRankState):
        inner = acc.acc
        return acc._replace(acc=inner._replace(G=jnp.zeros((0, n), inner.W.dtype)))
    return acc._replace(G=jnp.zeros((0, n), acc.W.dtype))


def cells(sp: split.Split, acc: dissipation.DissipationState, g0, noise0, to=None) -> dict:
    """The split's cutoff and the four-cell energies (clean/noise × channel/reservoir).

    ``to``: ``v -> Qᵀ v`` for an accumulator in a low-rank basis (:func:`dyntheory.lowrank.coords`);
    the part of a train vector outside the basis is reservoir (``P = I``, no dissipation, no test
    displacement there), so it adds to the reservoir's train energy only."""
    dtype = sp.eigvecs.dtype
    to = (lambda v: v.astype(dtype)) if to is None else to
    clean, noise = g0.astype(dtype) - noise0.astype(dtype), noise0.astype(dtype)
    c_clean, c_noise = to(clean).astype(dtype), to(noise).astype(dtype)
    cells = split.four_cell(sp, acc.W, c_clean, c_noise, acc.G.astype(dtype))
    outside = [jnp.maximum(v @ v - c @ c, 0.0) for v, c in ((clean, c_clean), (noise, c_noise))]
    train = cells.train_energy.at[:, 1].add(jnp.stack(outside))
    out = {"cutoff": sp.threshold}
    for i, part in enumerate(PARTS):
        for j, sub in enumerate(SUBS):
            out[f"train_{part}_{sub}"] = train[i, j]
            out[f"dissipated_{part}_{sub}"] = cells.dissipated[i, j]
            out[f"test_{part}_{sub}"] = cells.test_energy[i, j]
    return out
