r"""Kernel spectra: dense eigh and scalar summaries.

The matrix-free counterparts (Lanczos top-k, SLQ densities, Hutchinson traces) are in
:mod:`dyntheory.krylov`.

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

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_X64_FIX = (
    "float64 was requested but jax_enable_x64 is off, so JAX would silently compute in float32. "
    "Enable it before any JAX computation:  jax.config.update('jax_enable_x64', True)  "
    "(or set the environment variable JAX_ENABLE_X64=1)."
)


def resolve_dtype(dtype) -> jnp.dtype:
    """``dtype``, default float64 when x64 is on (else float32); float64 without x64 raises."""
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
        k = k.astype(resolve_dtype(dtype))
    if check_symmetric and not isinstance(k, jax.core.Tracer):
        asym = float(jnp.linalg.norm(k - k.T))
        if asym > 1e-3 * float(jnp.linalg.norm(k)):
            raise ValueError(
                f"k is not symmetric: ‖k − kᵀ‖_F = {asym:.3g} vs ‖k‖_F = "
                f"{float(jnp.linalg.norm(k)):.3g}. Pass check_symmetric=False to symmetrize anyway."
            )
    evals, evecs = jnp.linalg.eigh((k + k.T) / 2)
    return evals[::-1], evecs[:, ::-1]


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
