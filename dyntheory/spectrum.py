r"""Kernel spectra: dense eigh, matrix-free top-k Lanczos, SLQ densities, traces, summaries.

The matrix-free parts (:func:`lanczos`, :func:`lanczos_topk`, :func:`slq_density`,
:func:`hutchinson_trace`) touch an operator only through ``v -> A v``: with
:func:`dyntheory.ntk.ntk_matvec` the NTK of a whole training set is never formed. The trace
estimator is ``matfree``'s; the Lanczos recursion is this module's, because it restarts on
breakdown (see :func:`lanczos`).

Conventions. A kernel ``k`` is a symmetric PSD matrix of shape ``(N, N)``: the full output-space
NTK ``K_SS`` (``N = n*p``, example-major, row ``i*p + a``; THEORY.md §1) or its trace over outputs
(``N = n``). Eigenvalues are returned in **descending** order and eigenvectors as **columns**:
``k ≈ V diag(λ) Vᵀ`` with ``V[:, i]`` belonging to ``λ[i]``.

Summaries (each also a function of its own):

- ``lambda_max``, ``lambda_min``, ``trace = Σλ``.
- ``effective_rank_participation = (Σλ)² / Σλ²``: the participation ratio, in ``[1, N]``.
- ``effective_rank_entropy = exp(H(p))`` with ``p = λ/Σλ``: Roy & Vetterli's (2007) entropy
  effective rank, also in ``[1, N]``; both equal ``r`` for ``r`` equal nonzero eigenvalues.
- ``condition_number = λ_max / λ_min⁺``, ``λ_min⁺`` the smallest eigenvalue above
  ``rtol·λ_max`` (the conditioning of ``k`` on its numerical range).
- ``kernel_target_alignment = ⟨k, yyᵀ⟩_F / (‖k‖_F ‖yyᵀ‖_F)`` (Cristianini et al., 2001).
- ``gd_stability_lr = 2n/λ_max``: for the loss ``‖u − y‖²/(2n)`` the linearized full-batch GD map
  is ``r ← (I − ηK/n) r``, stable iff ``|1 − ηλ_max/n| < 1``, i.e. ``η < 2n/λ_max``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from matfree import stochtrace as matfree_stochtrace

Array = jax.Array

_X64_FIX = (
    "float64 was requested but jax_enable_x64 is off, so JAX would silently compute in float32. "
    "Enable it before any JAX computation:  jax.config.update('jax_enable_x64', True)  "
    "(or set the environment variable JAX_ENABLE_X64=1)."
)


def _resolve_dtype(dtype) -> jnp.dtype:
    """``dtype`` as a float dtype JAX will really use; float64 without x64 is an error."""
    if dtype is None:
        return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype, got {dtype}.")
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(_X64_FIX)
    return dtype


def _check_square(k: Array, name: str = "k") -> None:
    if jnp.ndim(k) != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(
            f"{name} must be a square (N, N) symmetric matrix, got shape {jnp.shape(k)}. "
            "A cross kernel K_QS (m*p, n*p) has no eigendecomposition; pass K_SS."
        )


def eigh(k: Array, dtype=None, *, check_symmetric: bool = True) -> tuple[Array, Array]:
    """Symmetric eigendecomposition ``k = V diag(λ) Vᵀ``, eigenvalues descending.

    Args:
      k: ``(N, N)`` symmetric matrix.
      dtype: compute dtype; ``jnp.float64`` upcasts (needs ``jax_enable_x64``). ``None`` keeps
        ``k``'s dtype.
      check_symmetric: when ``k`` is concrete, raise if ``‖k − kᵀ‖_F > 1e-3 ‖k‖_F`` (a wrong
        matrix, not round-off). ``k`` is symmetrized before the decomposition either way.

    Returns:
      ``(eigenvalues (N,), eigenvectors (N, N))``, ``eigenvectors[:, i]`` for ``eigenvalues[i]``.
    """
    k = jnp.asarray(k)
    _check_square(k)
    if dtype is not None:
        k = k.astype(_resolve_dtype(dtype))
    if check_symmetric and not isinstance(k, jax.core.Tracer):
        asym = float(jnp.linalg.norm(k - k.T))
        if asym > 1e-3 * float(jnp.linalg.norm(k)):
            raise ValueError(
                f"k is not symmetric: ‖k − kᵀ‖_F = {asym:.3g} vs ‖k‖_F = "
                f"{float(jnp.linalg.norm(k)):.3g}. Pass check_symmetric=False to symmetrize anyway."
            )
    evals, evecs = jnp.linalg.eigh((k + k.T) / 2)
    return evals[::-1], evecs[:, ::-1]


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
    dtype = _resolve_dtype(dtype)
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

    Returns:
      ``(eigenvalues (k,), eigenvectors (dim, k))``, descending, vectors as orthonormal columns.
    """
    dtype = _resolve_dtype(dtype)
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

    t, basis = lanczos(matvec, jax.random.normal(key, (dim,), dtype), m, key=key, dtype=dtype)
    theta, s = jnp.linalg.eigh(t)
    theta, s = theta[::-1][:k], s[:, ::-1][:, :k]
    return theta, basis.T @ s


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
    dtype = _resolve_dtype(dtype)
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
    dtype = _resolve_dtype(dtype)
    if num_probes < 2:
        raise ValueError(f"num_probes must be >= 2 (for the standard error), got {num_probes}.")
    _check_operator(matvec, dim, dtype)
    mv = lambda v: matvec(v.astype(dtype)).astype(dtype)
    sampler = matfree_stochtrace.sampler_signs(jnp.zeros((dim,), dtype), num=1)
    one = matfree_stochtrace.estimator_monte_carlo(matfree_stochtrace.monte_carlo_trace(), sampler)
    samples = lax.map(lambda k: one(mv, k), jax.random.split(key, num_probes))
    return jnp.mean(samples), jnp.std(samples, ddof=1) / jnp.sqrt(num_probes)


# ----------------------------------------------------------------------------- summaries


def _eigenvalues(k_or_eigs: Array) -> Array:
    x = jnp.asarray(k_or_eigs)
    if x.ndim == 1:
        return jnp.sort(x)[::-1]
    _check_square(x, "k_or_eigs")
    return jnp.linalg.eigvalsh((x + x.T) / 2)[::-1]


def lambda_max(k_or_eigs: Array) -> Array:
    """Largest eigenvalue of a kernel ``(N, N)`` or of an eigenvalue vector ``(N,)``."""
    return jnp.max(_eigenvalues(k_or_eigs))


def lambda_min(k_or_eigs: Array) -> Array:
    """Smallest eigenvalue (may be ~0 or slightly negative from round-off for a PSD kernel)."""
    return jnp.min(_eigenvalues(k_or_eigs))


def trace(k_or_eigs: Array) -> Array:
    """``tr k = Σλ``."""
    x = jnp.asarray(k_or_eigs)
    return jnp.sum(x) if x.ndim == 1 else jnp.trace(x)


def participation_ratio(k_or_eigs: Array) -> Array:
    """Participation-ratio effective rank ``(Σλ)² / Σλ²`` (negative round-off clipped to 0)."""
    lam = jnp.clip(_eigenvalues(k_or_eigs), 0.0)
    return jnp.sum(lam) ** 2 / jnp.sum(lam**2)


def entropy_effective_rank(k_or_eigs: Array) -> Array:
    """Entropy effective rank ``exp(−Σ pᵢ log pᵢ)``, ``p = λ/Σλ`` (Roy & Vetterli, 2007)."""
    lam = jnp.clip(_eigenvalues(k_or_eigs), 0.0)
    p = lam / jnp.sum(lam)
    plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
    return jnp.exp(-jnp.sum(plogp))


def effective_rank(k_or_eigs: Array, kind: str = "participation") -> Array:
    """Effective rank: ``kind="participation"`` ``(Σλ)²/Σλ²`` or ``"entropy"`` ``exp(H(λ/Σλ))``."""
    if kind == "participation":
        return participation_ratio(k_or_eigs)
    if kind == "entropy":
        return entropy_effective_rank(k_or_eigs)
    raise ValueError(f"unknown effective-rank kind {kind!r}; use 'participation' or 'entropy'.")


def condition_number(k_or_eigs: Array, *, rtol: float | None = None) -> Array:
    """``λ_max / λ_min⁺`` over eigenvalues ``> rtol·λ_max`` (default ``rtol = N·eps``)."""
    lam = _eigenvalues(k_or_eigs)
    if rtol is None:
        rtol = lam.shape[0] * float(jnp.finfo(lam.dtype).eps)
    lmax = lam[0]
    positive = lam > rtol * lmax
    lmin = jnp.min(jnp.where(positive, lam, jnp.inf))
    return jnp.where(lmax > 0, lmax / lmin, jnp.nan)


def gd_stability_lr(k_or_lambda_max: Array, n: int) -> Array:
    """Largest stable full-batch GD step ``2n/λ_max`` for the loss ``‖u − y‖²/(2n)``.

    ``k_or_lambda_max`` is a kernel, an eigenvalue vector, or ``λ_max`` itself (a scalar).
    """
    x = jnp.asarray(k_or_lambda_max)
    lmax = x if x.ndim == 0 else lambda_max(x)
    return 2.0 * n / lmax


def _target_gram_terms(k: Array, targets: Array) -> tuple[Array, Array]:
    """``(⟨k, T⟩_F, ‖T‖_F)`` for the target Gram matrix ``T``, without forming ``T``."""
    big_n = k.shape[0]
    y = jnp.asarray(targets)
    if y.ndim == 1 and jnp.issubdtype(y.dtype, jnp.integer):  # class labels
        n = y.shape[0]
        if n == big_n:  # trace kernel: T_ij = [y_i = y_j] = (one_hot one_hotᵀ)_ij
            t = (y[:, None] == y[None, :]).astype(k.dtype)
            return jnp.sum(k * t), jnp.linalg.norm(t)
        if big_n % n:
            raise ValueError(f"{n} labels do not divide the kernel size {big_n}.")
        y = jax.nn.one_hot(y, big_n // n, dtype=k.dtype)
    y = y.astype(k.dtype)
    if y.size == big_n:  # full output-space kernel (n*p, n*p), or p = 1: T = vec(y) vec(y)ᵀ
        v = y.reshape(-1)
        return v @ (k @ v), jnp.sum(v**2)
    if y.ndim == 2 and y.shape[0] == big_n:  # trace kernel (n, n) with targets (n, p): T = YYᵀ
        return jnp.trace(y.T @ (k @ y)), jnp.linalg.norm(y.T @ y)
    raise ValueError(
        f"targets of shape {y.shape} do not match a kernel of shape {k.shape}: expected (n*p,) or "
        "(n, p) for the full (n*p, n*p) kernel, or (n, p) / integer labels (n,) for a trace kernel."
    )


def kernel_target_alignment(k: Array, targets: Array) -> Array:
    r"""Kernel-target alignment ``⟨k, T⟩_F / (‖k‖_F ‖T‖_F)``, in ``[-1, 1]`` (``[0, 1]`` for PSD).

    Args:
      k: ``(N, N)`` kernel: the full NTK (``N = n*p``) or its trace over outputs (``N = n``).
      targets: for the full kernel, ``y`` of shape ``(n, p)`` or ``(n*p,)``, flattened
        example-major to match ``k``; ``T = yyᵀ``. For a trace kernel, ``Y`` of shape ``(n, p)``
        and ``T = YYᵀ`` (``p = 1`` is the same as above). Integer class labels ``(n,)`` are
        one-hot encoded first (``p = N/n`` classes for a full kernel).
    """
    k = jnp.asarray(k)
    _check_square(k)
    inner, t_norm = _target_gram_terms(k, targets)
    return inner / (jnp.linalg.norm(k) * t_norm)


def summaries(
    k_or_eigs: Array, *, n: int | None = None, targets: Array | None = None
) -> dict[str, Array]:
    """All scalar summaries of a kernel ``(N, N)`` or of its eigenvalues ``(N,)``, as a flat dict.

    Keys: ``lambda_max, lambda_min, trace, effective_rank_participation, effective_rank_entropy,
    condition_number``; ``kernel_target_alignment`` when ``targets`` is given (needs the matrix);
    ``gd_stability_lr`` (``2n/λ_max``) when ``n``, the number of training examples, is given or
    can be read from ``targets`` of shape ``(n, p)`` (or ``(n,)`` labels).
    """
    x = jnp.asarray(k_or_eigs)
    lam = _eigenvalues(x)
    out = {
        "lambda_max": lam[0],
        "lambda_min": lam[-1],
        "trace": trace(x),
        "effective_rank_participation": participation_ratio(lam),
        "effective_rank_entropy": entropy_effective_rank(lam),
        "condition_number": condition_number(lam),
    }
    if targets is not None:
        if x.ndim != 2:
            raise ValueError("kernel_target_alignment needs the kernel matrix, not eigenvalues.")
        out["kernel_target_alignment"] = kernel_target_alignment(x, targets)
        if n is None and jnp.ndim(targets) in (1, 2):
            n = jnp.shape(targets)[0]
    if n is not None:
        out["gd_stability_lr"] = gd_stability_lr(lam[0], n)
    return out


def power_law_exponent(
    eigs: Array, lo: int, hi: int, *, return_prefactor: bool = False
) -> float | tuple[float, float]:
    """Least-squares fit of ``λ_k ≈ c · k^(−a)`` over ranks ``lo ≤ k ≤ hi`` (1-based, inclusive).

    ``eigs`` are sorted descending first; ``k = 1`` is ``λ_max``. Fits ``log λ_k`` against
    ``log k``; all fitted eigenvalues must be positive. Returns ``a`` (and ``c`` if asked).
    """
    lam = np.sort(np.asarray(eigs, np.float64).reshape(-1))[::-1]
    if not (1 <= lo < hi <= lam.shape[0]):
        raise ValueError(
            f"need 1 <= lo < hi <= {lam.shape[0]} (1-based ranks), got lo={lo}, hi={hi}."
        )
    ranks = np.arange(lo, hi + 1, dtype=np.float64)
    sel = lam[lo - 1 : hi]
    if np.any(sel <= 0):
        raise ValueError(f"eigenvalues at ranks {lo}..{hi} must be positive to fit a power law.")
    slope, intercept = np.polyfit(np.log(ranks), np.log(sel), 1)
    return (-float(slope), float(np.exp(intercept))) if return_prefactor else -float(slope)
