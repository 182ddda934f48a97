r"""The refresh of :class:`dyntheory.probes.Dissipation`: ``K_eff``, ``B``, ``η`` and the stability
bound at a probe step, dense or in the low-rank basis (THEORY.md §3, §10), and the monitor that
decides whether a probe step refreshes at all.

Between refreshes the probe holds what a refresh returns fixed: the refresh schedule is the
piecewise-constant integrator of W_S's propagator (THEORY.md §10, "The refresh schedule is an
integrator"). Two cheaper members of that family (THEORY.md §10, "Warm starts and error
control"): a *warm* low-rank refresh seeds a block Krylov space with the previous refresh's Ritz
vectors (:func:`dyntheory.krylov.block_krylov_topk`) instead of running Lanczos from a random
vector, and an *adaptive* schedule refreshes only where :func:`monitor`, one NTK-vector product,
finds the held generator off by more than a tolerance. Functions take the probe (its fields are
their settings) as the first argument.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dyntheory import krylov, losses, lowrank, ntk
from dyntheory.probes.base import f64
from dyntheory.probes.dissipation_kernels import (
    compressed_mu_min,
    hessian,
    precond,
    step_size,
    zero_loss_free,
)


class Refresh(NamedTuple):
    """What a refresh returns and the probe then holds until the next one."""

    basis: lowrank.LowRankState | None  # the extended basis ("lowrank"), None ("dense")
    k: jax.Array  # (np, np) K_eff, or (R, R) K_r = Qᵀ K_eff Q
    kq: jax.Array | None  # (mq, np) K_QS, or (mq, R) K_QS Q; None without query
    hess: jax.Array | tuple  # () 1/n, (np, np) or (R, R) B, or (B_r, Qᵀ B K Q)
    lr: jax.Array  # () η of the interval
    mu: jax.Array  # (2,) (μ_max, μ_min) of η B K_eff
    ritz: tuple | None  # warm_start: (vecs (np, b), top (np,)) to seed the next refresh
    products: jax.Array  # () int32: NTK-vector products this refresh made ("lowrank")


def refresh_dense(probe, ctx, params, opt_state, step, basis, u, ritz=None) -> Refresh:
    """:class:`Refresh` with dense ``(np, np)`` kernels (``basis`` and ``ritz`` pass through)."""
    p = precond(probe, opt_state)
    x = ctx.train["x"]
    kw = {"precond": p, "implementation": probe.implementation}
    k = ntk.kernel(ctx.apply_fn, params, x, **kw).astype(f64())
    kq = ntk.kernel(ctx.apply_fn, params, ctx.test["x"], x, **kw) if probe.query else None
    hess = jnp.asarray(losses.get_loss(probe.loss).out_hessian(u), f64())
    lr = step_size(probe, step, p)
    if jnp.ndim(hess) == 0:
        mu = lr * hess * jnp.linalg.eigvalsh(k)
    else:  # eigenvalues of B K = those of B^{1/2} K B^{1/2} (B PSD)
        lam_b, v_b = jnp.linalg.eigh(hess)
        root = (v_b * jnp.sqrt(jnp.maximum(lam_b, 0))[None]) @ v_b.T
        mu = lr * jnp.linalg.eigvalsh(root @ k @ root)
    mu = jnp.stack([mu[-1], mu[0]]).astype(f64())
    return Refresh(basis, k, kq, hess, lr, mu, ritz, jnp.zeros((), jnp.int32))


def refresh_lowrank(probe, ctx, params, opt_state, step, basis, u, ritz=None) -> Refresh:
    """As :func:`refresh_dense` in the low-rank basis, extended by ``lanczos_vectors`` leading
    eigenvectors per refresh: of ``K`` (``basis_vectors="kernel"``) or, mapped by ``B^{1/2}``, of
    ``B^{1/2} K B^{1/2}`` (``"dynamics"``: a span that ``B K`` maps into itself). Returns ``K_r``,
    ``K_QS Q``, the Hessian as ``B_r`` or ``(B_r, Qᵀ B K Q)`` (:func:`dyntheory.lowrank.
    compress_product`, with ``compress="product"``) or ``1/n``, and ``λ_max(η B K)`` by Lanczos
    on the whole operator.

    Cold (``ritz`` None): Lanczos from a random vector, ``lanczos_iters`` products for the
    vectors and 40 more for ``λ_max`` (``"kernel"``). Warm (``ritz = (V, v_top)`` of the previous
    refresh, ``warm_start``): Rayleigh–Ritz on the block Krylov space of depth ``warm_depth``
    seeded with ``V`` (``warm_depth · lanczos_vectors`` products), and ``λ_max`` by
    ``4 · warm_depth`` Lanczos steps from ``v_top``. Either way ``R`` more products compress
    ``K`` (and ``R`` the cross kernel with ``query``)."""
    p = precond(probe, opt_state)
    x = ctx.train["x"]
    k_mv = ntk.ntk_matvec(ctx.apply_fn, params, x, precond=p, chunk_size=probe.chunk_size)
    spec = losses.get_loss(probe.loss)
    b_mv = lambda v: spec.out_hessian_vp(u, v)
    n_out, rank = basis.Q.shape
    nvec = min(probe.lanczos_vectors, n_out)
    iters = min(n_out, probe.lanczos_iters or 2 * nvec + 20)
    key = jax.random.fold_in(jax.random.key(0), step)
    # λ_max(η B K) = λ_max(η B^{1/2} K B^{1/2}) (B PSD), by Lanczos on the whole operator
    root = losses.out_hessian_root_vp(probe.loss, u)
    sym = lambda v: root(k_mv(root(v)))
    op = sym if probe.basis_vectors == "dynamics" else k_mv
    if ritz is None:
        top, seeds = krylov.lanczos_topk(op, n_out, nvec, key=key, num_iters=iters)
        products = iters
    else:
        depth = min(probe.warm_depth, n_out // nvec)
        top, seeds = krylov.block_krylov_topk(op, ritz[0], nvec, depth=depth, key=key)
        products = depth * nvec
    v_top = seeds[:, 0]
    if probe.basis_vectors == "dynamics":
        vecs = jax.vmap(root, in_axes=1, out_axes=1)(seeds)
    else:
        vecs = seeds
        m = min(n_out, 40) if ritz is None else min(n_out, 4 * probe.warm_depth)
        v0 = None if ritz is None else ritz[1]
        top, v_top = krylov.lanczos_topk(
            sym, n_out, 1, key=jax.random.fold_in(key, 1), num_iters=m, v0=v0
        )
        v_top, products = v_top[:, 0], products + m
    basis = lowrank.extend(basis, zero_loss_free(probe, u, vecs))
    if probe.loss == "squared":
        k_r, hess = lowrank.compress(basis, k_mv), jnp.asarray(spec.out_hessian(u), f64())
    else:
        k_r, b_r, bk_r = lowrank.compress_product(basis, k_mv, b_mv)
        hess = (b_r, bk_r) if probe.compress == "product" else b_r
    products += rank
    kq = None
    if probe.query:
        kq_mv = ntk.ntk_matvec(
            ctx.apply_fn, params, ctx.test["x"], x, precond=p, chunk_size=probe.chunk_size
        )
        kq, products = lowrank.compress_cross(basis, kq_mv), products + rank
    lr = step_size(probe, step, p)
    mu_min = compressed_mu_min(basis, k_r, hessian(hess)[0])
    mu = jnp.stack([lr * top[0], lr * mu_min]).astype(f64())
    ritz = (seeds, v_top) if probe.warm_start else None
    return Refresh(basis, k_r, kq, hess, lr, mu, ritz, jnp.asarray(products, jnp.int32))


def held_generator(k: jax.Array, hess) -> jax.Array:
    """The generator ``B K`` that the probe propagates with between refreshes: the compressed
    product ``Qᵀ B K Q`` when held, else ``B K`` (``B`` a scalar ``c·I`` or a matrix)."""
    b, gen = hessian(hess)
    if gen is not None:
        return gen
    return b * k if jnp.ndim(b) == 0 else b @ k


def monitor(probe, ctx, params, opt_state, step, basis, u, g, held: Refresh) -> jax.Array:
    r"""How far the held generator is from the current one along the output gradient.

    .. math::  m(t) = \frac{\lVert \eta_t\, G_t c - \eta_r\, G_r c \rVert}
                          {\lVert \eta_r\, G_r c \rVert},\qquad
        c = \frac{Q^\top g(t)}{\lVert Q^\top g(t) \rVert}

    with ``G_r`` the generator held since the last refresh ``r`` (:func:`held_generator`) and
    ``G_t`` today's in the same form: ``Qᵀ B_t K_t Q`` (``compress="product"``, and squared
    loss), ``(Qᵀ B_t Q)(Qᵀ K_t Q)`` (``"factors"``); ``Q = I`` for ``"dense"``. One NTK-vector
    product (``K_t Q c``). The piecewise-constant integrator's local error over an interval is
    ``∫ (G(τ) − G_r) dτ`` applied to the state, so ``m`` is its relative rate along the direction
    the propagator acts on (THEORY.md §10, "Warm starts and error control"). ``basis``: the
    :class:`dyntheory.lowrank.LowRankState`, or None (dense). Returns ``m`` ``()`` (0 where
    ``G_r c = 0``).
    """
    p = precond(probe, opt_state)
    k_mv = ntk.ntk_matvec(
        ctx.apply_fn, params, ctx.train["x"], precond=p, chunk_size=probe.chunk_size
    )
    spec = losses.get_loss(probe.loss)
    b_mv = lambda v: spec.out_hessian_vp(u, v).astype(f64())
    dense = basis is None
    c = g.astype(f64()) if dense else lowrank.coords(basis, g)
    c = c / jnp.maximum(jnp.linalg.norm(c), jnp.finfo(c.dtype).tiny)
    kc = k_mv(c if dense else basis.Q @ c).astype(c.dtype)  # K_t Q c, (np,)
    to = (lambda v: v) if dense else (lambda v: lowrank.coords(basis, v))
    if probe.loss == "squared":
        now = jnp.asarray(spec.out_hessian(u), c.dtype) * to(kc)
    elif dense or probe.compress == "product":
        now = to(b_mv(kc))
    else:  # (Qᵀ B Q)(Qᵀ K Q) c
        bq = jax.vmap(b_mv, in_axes=1, out_axes=1)(basis.Q)
        now = (basis.Q.T @ bq) @ to(kc)
    was = held.lr * (held_generator(held.k, held.hess) @ c)
    diff = step_size(probe, step, p) * now - was
    nrm = jnp.linalg.norm(was)
    return jnp.where(nrm > 0, jnp.linalg.norm(diff) / jnp.where(nrm > 0, nrm, 1.0), 0.0)
