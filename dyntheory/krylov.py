r"""Matrix-free spectra of symmetric operators: Lanczos, top-k eigenpairs, SLQ densities, traces.

Every function touches the operator only through ``v -> A v``: with
:func:`dyntheory.ntk.ntk_matvec` the NTK of a whole training set is never formed (THEORY.md §10).
Eigenvalues come in descending order, eigenvectors as columns (as in :mod:`dyntheory.spectrum`).
The trace estimator is ``matfree``'s; the Lanczos recursion is this module's, because it restarts
on breakdown (see :func:`lanczos`).

References:
  Lanczos (1950); Ubaru, Chen & Saad (2017), "Fast estimation of tr(f(A)) via stochastic Lanczos
  quadrature"; Hutchinson (1989); Krämer et al., ``matfree``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from matfree import stochtrace as matfree_stochtrace

from dyntheory.spectrum import resolve_dtype

Array = jax.Array


def _check_operator(matvec, dim, dtype) -> None:
    out_shape = jax.eval_shape(matvec, jax.ShapeDtypeStruct((dim,), dtype))
    if getattr(out_shape, "shape", None) != (dim,):
        raise ValueError(f"matvec must map shape ({dim},) to ({dim},), got {out_shape}.")


def lanczos(
    matvec: Callable[[Array], Array], v0: Array, m: int, *, key: Array, dtype=None
) -> tuple[Array, Array]:
    r"""``m`` Lanczos steps from ``v0`` with full reorthogonalization: ``(T (m, m), Q (m, dim))``.

    ``β_j q_{j+1} = A q_j − α_j q_j − β_{j−1} q_{j−1}``, every new vector re-orthogonalized
    against all previous ones (two Gram–Schmidt passes), ``T = Q A Qᵀ`` tridiagonal. When the
    Krylov space closes (``β_j ≈ 0``: an invariant subspace, e.g. a low-rank NTK) the recursion
    restarts from a fresh random vector orthogonal to ``Q`` (``key``) with ``β_j = 0``, so
    rank-deficient operators are handled exactly. (``matfree.decomp.tridiag_sym`` 0.6.3 does not
    restart: on a rank-40 operator with 60 steps its top Ritz value came out 806 against 147.)
    """
    dtype = resolve_dtype(dtype)
    dim = v0.shape[0]
    eps = jnp.finfo(dtype).eps
    mv = lambda v: matvec(v).astype(dtype)

    def orthogonalize(basis, w):  # two passes of classical Gram–Schmidt ("twice is enough")
        w = w - basis.T @ (basis @ w)
        return w - basis.T @ (basis @ w)

    def normalize(w):
        nrm = jnp.linalg.norm(w)
        return w / jnp.where(nrm > 0, nrm, 1.0), nrm

    restart_key = jax.random.fold_in(key, 1)
    q0, _ = normalize(v0.astype(dtype))
    basis = jnp.zeros((m + 1, dim), dtype).at[0].set(q0)  # rows q_j; unfilled rows are 0

    def step(j, carry):
        basis, alpha, beta = carry
        aq = mv(basis[j])
        alpha = alpha.at[j].set(jnp.vdot(basis[j], aq))
        w = orthogonalize(basis, aq)
        w, b = normalize(w)
        # Breakdown: A q_j lies in span(Q) up to round-off. Restart with β_j = 0.
        closed = b <= 100 * eps * jnp.maximum(jnp.linalg.norm(aq), jnp.finfo(dtype).tiny)
        restart = lambda: normalize(
            orthogonalize(
                basis, jax.random.normal(jax.random.fold_in(restart_key, j), (dim,), dtype)
            )
        )[0]
        basis = basis.at[j + 1].set(lax.cond(closed, restart, lambda: w))
        beta = beta.at[j].set(jnp.where(closed, 0.0, b))
        return basis, alpha, beta

    alpha, beta = jnp.zeros((m,), dtype), jnp.zeros((m,), dtype)
    basis, alpha, beta = lax.fori_loop(0, m, step, (basis, alpha, beta))
    t = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    return t, basis[:m]


def lanczos_topk(
    matvec: Callable[[Array], Array],
    dim: int,
    k: int,
    *,
    key: Array,
    num_iters: int | None = None,
    dtype=None,
    v0: Array | None = None,
) -> tuple[Array, Array]:
    r"""Top-``k`` eigenpairs of a symmetric operator by Lanczos with full reorthogonalization.

    :func:`lanczos` from a random start, then the top Ritz pairs of the tridiagonal
    ``T = Qᵀ A Q`` (``eigh`` of an ``m × m`` matrix). ``A`` is touched only through ``matvec``
    (``m`` calls); it is never formed. Cost: ``m`` matvecs plus ``O(m² dim)``.

    Args:
      matvec: ``v (dim,) -> A v (dim,)``, ``A`` symmetric (e.g. ``dyntheory.ntk.ntk_matvec``).
        ``v`` is passed in ``dtype`` and the output is cast to it.
      dim: operator size ``N``.
      k: number of top eigenpairs (``1 ≤ k ≤ dim``).
      key: PRNG key for the start vector (and restarts).
      num_iters: Krylov dimension ``m`` (``k ≤ m ≤ dim``); default ``min(dim, 2k + 30)``.
        ``m = dim`` gives the full spectrum to round-off; a fast-decaying spectrum (an NTK)
        converges in far fewer.
      dtype: compute dtype, default float64 when x64 is enabled, else float32.
      v0: ``(dim,)`` start vector (a warm start, e.g. the previous top Ritz vector); default a
        random one drawn from ``key``.

    Returns:
      ``(eigenvalues (k,), eigenvectors (dim, k))``, descending, vectors as orthonormal columns.
    """
    dtype = resolve_dtype(dtype)
    if not (isinstance(dim, int | np.integer) and isinstance(k, int | np.integer)):
        raise TypeError(f"dim and k must be Python ints, got {type(dim)} and {type(k)}.")
    if not 1 <= k <= dim:
        raise ValueError(f"need 1 <= k <= dim, got k={k}, dim={dim}.")
    m = min(dim, 2 * k + 30) if num_iters is None else int(num_iters)
    if not k <= m <= dim:
        raise ValueError(
            f"num_iters must satisfy k <= num_iters <= dim, got {m} (k={k}, dim={dim})."
        )
    _check_operator(matvec, dim, dtype)

    start = jax.random.normal(key, (dim,), dtype) if v0 is None else jnp.asarray(v0, dtype)
    t, basis = lanczos(matvec, start, m, key=key, dtype=dtype)
    theta, s = jnp.linalg.eigh(t)
    theta, s = theta[::-1][:k], s[:, ::-1][:, :k]
    return theta, basis.T @ s


def block_krylov_topk(
    matvec: Callable[[Array], Array],
    v0: Array,
    k: int,
    *,
    depth: int = 2,
    key: Array,
    dtype=None,
) -> tuple[Array, Array]:
    r"""Top-``k`` eigenpairs by Rayleigh–Ritz on a block Krylov space seeded with ``v0``.

    .. math::  \mathcal K_d(A, V) = \operatorname{span}\{V, AV, \dots, A^{d-1} V\},\qquad
        H = U^\top A U = S \Theta S^\top,\qquad (\theta_i, U s_i)_{i \le k}

    with ``U = [U_0 … U_{d−1}]`` orthonormal (``U_0 = orth(V)``, each next block ``A U_j``
    orthogonalized against all earlier ones, two Gram–Schmidt passes), the Ritz pairs of ``A``
    on that space (block Lanczos with full reorthogonalization; ``d = 1`` is one step of
    subspace iteration's Rayleigh–Ritz). It is the warm start of a refresh: seeded with the
    previous refresh's Ritz vectors, a kernel that has moved little is resolved by ``d b``
    products (``b`` = columns of ``v0``) where a Lanczos from a random vector needs many more
    (THEORY.md §10). When a block adds no new direction (``A U_j`` inside the space: ``V`` spans
    an invariant subspace) the lost columns are replaced by random ones orthogonal to ``U``
    (``key``), as :func:`lanczos` restarts, so the Ritz pairs stay exact.

    Args:
      matvec: ``v (dim,) -> A v (dim,)``, ``A`` symmetric; called on ``d b`` vectors (vmapped
        over each block's columns).
      v0: ``(dim, b)`` start block, ``k ≤ b d ≤ dim``; its columns need not be orthonormal.
      k: number of top eigenpairs; depth: ``d``, the number of blocks.
      key: PRNG key for replacement columns; dtype: as :func:`lanczos_topk`.

    Returns:
      ``(eigenvalues (k,), eigenvectors (dim, k))``, descending, vectors as orthonormal columns.
    """
    dtype = resolve_dtype(dtype)
    v0 = jnp.asarray(v0, dtype)
    if v0.ndim != 2:
        raise ValueError(f"v0 must be a (dim, b) block of start vectors, got shape {v0.shape}.")
    dim, b = v0.shape
    if not 1 <= int(depth) or not 1 <= int(k) <= b * int(depth) <= dim:
        raise ValueError(
            f"need depth >= 1 and 1 <= k <= b·depth <= dim, got k={k}, b={b}, depth={depth}, "
            f"dim={dim}."
        )
    _check_operator(matvec, dim, dtype)
    mv = jax.vmap(lambda v: matvec(v).astype(dtype), in_axes=1, out_axes=1)
    eps = jnp.finfo(dtype).eps

    def orth(prev, w, scale, j):
        """``w``'s columns orthonormalized against ``prev`` (``(dim, c)`` or None) and each
        other; a column with no new direction is replaced by a random one."""
        for _ in range(2):
            w = w if prev is None else w - prev @ (prev.T @ w)
        nrm = jnp.linalg.norm(w, axis=0)
        lost = nrm <= 100 * eps * jnp.maximum(scale, jnp.finfo(dtype).tiny)
        fresh = jax.random.normal(jax.random.fold_in(key, j), w.shape, dtype)
        w = jnp.where(lost[None], fresh * jnp.maximum(nrm.max(), 1.0), w)
        for _ in range(2):  # "twice is enough", also for the QR of a nearly dependent block
            w = w if prev is None else w - prev @ (prev.T @ w)
            w = jnp.linalg.qr(w)[0]
        return w

    u = orth(None, v0, jnp.linalg.norm(v0, axis=0), 0)
    blocks, images = [u], [mv(u)]
    for j in range(1, int(depth)):
        prev = jnp.concatenate(blocks, axis=1)
        u = orth(prev, images[-1], jnp.linalg.norm(images[-1], axis=0), j)
        blocks.append(u)
        images.append(mv(u))
    u, au = jnp.concatenate(blocks, axis=1), jnp.concatenate(images, axis=1)
    h = u.T @ au
    theta, s = jnp.linalg.eigh(0.5 * (h + h.T))
    theta, s = theta[::-1][:k], s[:, ::-1][:, :k]
    return theta, u @ s


def _slq_nodes(matvec, dim, key, num_probes, num_iters, dtype):
    """Per probe vector ``z`` (Rademacher): Ritz values ``θ`` and weights ``τ = (e₁ᵀ s)²``."""

    def one(k):
        z = jax.random.rademacher(k, (dim,), dtype)
        t, _ = lanczos(matvec, z, num_iters, key=k, dtype=dtype)
        theta, s = jnp.linalg.eigh(t)
        return theta, s[0] ** 2

    return lax.map(one, jax.random.split(key, num_probes))


def slq_density(
    matvec: Callable[[Array], Array],
    dim: int,
    *,
    key: Array,
    grid: Array,
    sigma: float,
    num_probes: int = 8,
    num_iters: int = 40,
    dtype=None,
) -> tuple[Array, Array]:
    r"""Spectral density of a symmetric operator by stochastic Lanczos quadrature.

    .. math::  \rho(\lambda) = \frac{1}{N}\sum_i \delta(\lambda - \lambda_i)
        \approx \frac{1}{n_v}\sum_{v=1}^{n_v}\sum_{j=1}^{m} \tau_{vj}\,
        \mathcal{N}(\lambda;\, \theta_{vj}, \sigma^2)

    with ``θ_vj`` the Ritz values and ``τ_vj`` the squared first components of the Ritz vectors
    of ``m`` :func:`lanczos` steps from the normalized Rademacher vector ``z_v`` (Ubaru, Chen &
    Saad 2017,
    "Fast estimation of tr(f(A)) via stochastic Lanczos quadrature"; Ghorbani, Krishnan & Xiao
    2019 for Hessian / NTK densities). The density integrates to 1 over a grid that covers the
    spectrum. Moments ``∫ λ^q ρ`` are unbiased up to the quadrature error of ``m`` nodes, which
    is exact for ``q < 2m``.

    Args:
      matvec, dim, dtype: the operator, as :func:`lanczos_topk`.
      key: PRNG key for the probe vectors.
      grid: ``(G,)`` points at which the smoothed density is evaluated.
      sigma: width of the Gaussian smoothing (same units as the eigenvalues).
      num_probes: ``n_v`` probe vectors; num_iters: ``m ≤ dim`` Lanczos steps per probe.

    Returns:
      ``(density (G,), nodes)`` with ``nodes = (θ (n_v, m), τ (n_v, m))`` for exact moments:
      ``mean_v Σ_j τ_vj θ_vj^q``.
    """
    dtype = resolve_dtype(dtype)
    if not 1 <= num_iters <= dim:
        raise ValueError(f"num_iters must lie in [1, dim={dim}], got {num_iters}.")
    concrete = not isinstance(sigma, jax.core.Tracer)
    if num_probes < 1 or (concrete and not float(sigma) > 0):
        raise ValueError(f"need num_probes >= 1 and sigma > 0, got {num_probes}, {sigma}.")
    _check_operator(matvec, dim, dtype)
    theta, tau = _slq_nodes(matvec, dim, key, num_probes, num_iters, dtype)
    grid = jnp.asarray(grid, dtype)
    gauss = jnp.exp(-0.5 * ((grid[:, None, None] - theta[None]) / sigma) ** 2)
    density = jnp.sum(tau[None] * gauss, axis=(1, 2)) / (num_probes * sigma * jnp.sqrt(2 * jnp.pi))
    return density, (theta, tau)


def hutchinson_trace(
    matvec: Callable[[Array], Array], dim: int, *, key: Array, num_probes: int = 16, dtype=None
) -> tuple[Array, Array]:
    r"""Hutchinson's estimate of ``tr A = E[zᵀ A z]`` with Rademacher ``z``, and its standard error.

    Uses ``matfree.stochtrace`` (``estimator_monte_carlo`` with ``monte_carlo_trace``). The
    estimate is unbiased with variance ``2(‖A‖_F² − Σ_i A_ii²)/n_v``; the returned standard
    error is the sample standard deviation over the ``n_v = num_probes`` probes over ``√n_v``.
    """
    dtype = resolve_dtype(dtype)
    if num_probes < 2:
        raise ValueError(f"num_probes must be >= 2 (for the standard error), got {num_probes}.")
    _check_operator(matvec, dim, dtype)
    mv = lambda v: matvec(v.astype(dtype)).astype(dtype)
    sampler = matfree_stochtrace.sampler_signs(jnp.zeros((dim,), dtype), num=1)
    one = matfree_stochtrace.estimator_monte_carlo(matfree_stochtrace.monte_carlo_trace(), sampler)
    samples = lax.map(lambda k: one(mv, k), jax.random.split(key, num_probes))
    return jnp.mean(samples), jnp.std(samples, ddof=1) / jnp.sqrt(num_probes)
