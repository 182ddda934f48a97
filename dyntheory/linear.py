r"""Closed-form references for linear (and linearized) models under squared loss.

Model ``f(x) = φ(x)ᵀθ``, features ``Φ ∈ R^{n×P}`` (row ``i`` is ``φ(x_i)``), loss
``L(θ) = ‖Φθ − y‖² / (2n)``. The Jacobian of the train outputs is ``Φ`` itself, so the NTK is
exactly ``K = ΦΦᵀ`` and constant in time (THEORY.md §1–2 with ``J_S = Φ``, ``B = I/n``).

Full-batch GD ``θ ← θ − (η/n) Φᵀ(Φθ − y)`` moves the train residual ``r = Φθ − y`` as

    r_{t+1} = (I − ηK/n) r_t,   so   r_t = (I − ηK/n)^t r_0:

eigenmode ``i`` of ``K`` is multiplied by ``1 − ηλᵢ/n`` per step (stable iff ``η < 2n/λ_max``).
Gradient flow ``θ̇ = −∇L`` gives ``r(t) = exp(−tK/n) r_0``, the ``η → 0, ηt`` fixed limit.

For a network, the same formulas with ``K`` the empirical NTK at initialization are the
linearized (lazy / frozen-kernel) dynamics. Arrays ``r0, y, f0`` have leading dimension ``N``
matching ``K`` (``N = n*p`` for the full output-space kernel, flattened example-major); any
trailing dimensions are carried along (e.g. ``(n, p)`` targets with a trace kernel ``(n, n)``).
``n`` is always the number of training **examples** (the ``1/n`` in the loss).

Every function works in ``K``'s eigenbasis ``K = V diag(λ) Vᵀ``; pass float64 for round-off-level
references.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dyntheory import _linalg

Array = jax.Array


def linear_ntk(phi1: Array, phi2: Array | None = None, *, num_outputs: int = 1) -> Array:
    """NTK of a linear model: ``Φ₁Φ₂ᵀ``.

    Args:
      phi1: features ``(n1, P)``.
      phi2: features ``(n2, P)``; ``None`` means ``phi1``.
      num_outputs: ``p`` outputs sharing the features (``f(x) = Wφ(x)``, ``W ∈ R^{p×P}``): the
        kernel is then ``Φ₁Φ₂ᵀ ⊗ I_p``, example-major (row ``i*p + a``).

    Returns:
      ``(n1*p, n2*p)`` kernel.
    """
    phi2 = phi1 if phi2 is None else phi2
    if jnp.ndim(phi1) != 2 or jnp.ndim(phi2) != 2 or phi1.shape[1] != phi2.shape[1]:
        raise ValueError(
            f"features must be (n1, P) and (n2, P), got {jnp.shape(phi1)} and {jnp.shape(phi2)}."
        )
    k = phi1 @ phi2.T
    if num_outputs == 1:
        return k
    return jnp.kron(k, jnp.eye(num_outputs, dtype=k.dtype))


def _eig(k: Array) -> tuple[Array, Array]:
    if jnp.ndim(k) != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"K must be a square (N, N) kernel, got shape {jnp.shape(k)}.")
    return jnp.linalg.eigh((k + k.T) / 2)


def _apply_spectral(k: Array, x: Array, coef_fn) -> Array:
    """``V diag(coef_fn(λ)) Vᵀ x``, contracting ``x``'s leading axis."""
    x = jnp.asarray(x)
    if x.ndim == 0 or x.shape[0] != k.shape[0]:
        raise ValueError(f"leading dimension of {x.shape} does not match K of shape {k.shape}.")
    lam, v = _eig(k)
    coef = coef_fn(lam)
    xr = jnp.tensordot(v.T, x, axes=1)
    return jnp.tensordot(v, coef.reshape(coef.shape + (1,) * (x.ndim - 1)) * xr, axes=1)


def gd_decay(lam: Array, lr, steps, n) -> Array:
    """Per-mode GD factor ``(1 − ηλ/n)^t`` (``t`` an integer step count)."""
    return jnp.power(1.0 - lr * lam / n, steps)


def gd_residual(K: Array, r0: Array, lr, steps, n) -> Array:
    """Train residual after ``t`` full-batch GD steps: ``r_t = (I − ηK/n)^t r_0``.

    Args:
      K: ``(N, N)`` train kernel (``ΦΦᵀ``, or a frozen NTK).
      r0: ``(N, ...)`` initial residual ``f_0(X) − y``.
      lr: step size ``η``. steps: integer ``t``. n: number of training examples.

    Returns:
      ``r_t``, same shape as ``r0``.
    """
    return _apply_spectral(K, r0, lambda lam: gd_decay(lam, lr, steps, n))


def flow_residual(K: Array, r0: Array, t, n) -> Array:
    """Gradient-flow train residual ``r(t) = exp(−tK/n) r_0`` (shapes as in :func:`gd_residual`)."""
    return _apply_spectral(K, r0, lambda lam: jnp.exp(-t * lam / n))


def _gd_sum(lam: Array, lr, steps, n) -> Array:
    r"""``(η/n) Σ_{j<t} (1 − ηλ/n)^j = (1 − (1 − ηλ/n)^t)/λ``, equal to ``ηt/n`` at ``λ = 0``.

    For ``0 ≤ x = ηλ/n < 1`` it is evaluated as ``−expm1(t·log1p(−x))/λ``, accurate for tiny
    ``λ``; elsewhere directly.
    """
    x = lr * lam / n
    small = jnp.abs(x) < 1e-300
    safe_lam = jnp.where(small, 1.0, lam)
    safe_x = jnp.where((x < 1) & (x > -1), x, 0.0)
    smooth = -jnp.expm1(steps * jnp.log1p(-safe_x)) / safe_lam
    direct = (1.0 - jnp.power(1.0 - x, steps)) / safe_lam
    out = jnp.where((x < 1) & (x > -1), smooth, direct)
    return jnp.where(small, lr * steps / n, out)


def gd_predictions(
    K_train: Array,
    K_test_train: Array,
    y: Array,
    f0_train: Array,
    f0_test: Array,
    lr,
    steps,
    n,
) -> tuple[Array, Array]:
    r"""Train and test outputs of the linearized model after ``t`` full-batch GD steps.

    With ``r_0 = f_0(X) − y`` and ``r_j = (I − ηK/n)^j r_0``, each step changes outputs by
    ``−(η/n) K_{·S} r_j``, hence

        f_t(X) = y + (I − ηK/n)^t r_0,
        f_t(Q) = f_0(Q) − K_QS (η/n) Σ_{j<t} (I − ηK/n)^j r_0
               = f_0(Q) − K_QS V diag((1 − (1 − ηλ/n)^t)/λ) Vᵀ r_0

    (``ηt/n`` for ``λ = 0``; ``→ f_0(Q) − K_QS K⁺ r_0`` as ``t → ∞`` in the stable regime).

    Args:
      K_train: ``(N, N)`` train kernel ``K_SS``. K_test_train: ``(M, N)`` cross kernel ``K_QS``.
      y: ``(N, ...)`` targets. f0_train: ``(N, ...)`` and f0_test: ``(M, ...)`` initial outputs.
      lr, steps, n: step size ``η``, integer step count ``t``, number of training examples.

    Returns:
      ``(f_t(X) (N, ...), f_t(Q) (M, ...))``.
    """
    if jnp.ndim(K_test_train) != 2 or K_test_train.shape[1] != K_train.shape[0]:
        raise ValueError(
            f"K_test_train must be (M, {K_train.shape[0]}), got {jnp.shape(K_test_train)}."
        )
    r0 = jnp.asarray(f0_train) - jnp.asarray(y)
    f_train = y + gd_residual(K_train, r0, lr, steps, n)
    moved = _apply_spectral(K_train, r0, lambda lam: _gd_sum(lam, lr, steps, n))
    f_test = f0_test - jnp.tensordot(K_test_train, moved, axes=1)
    return f_train, f_test


def min_norm_solution(Phi: Array, y: Array, *, rtol: float | None = None) -> Array:
    """Minimum-norm least-squares solution ``θ* = Φ⁺ y`` (``argmin ‖θ‖`` over ``argmin ‖Φθ − y‖``).

    Full-batch GD (or flow) from ``θ_0 = 0`` converges to it when stable: the iterates never
    leave ``range(Φᵀ)``.

    Args:
      Phi: ``(n, P)`` features. y: ``(n,)`` or ``(n, p)`` targets.
      rtol: singular values below ``rtol · σ_max`` are treated as zero (default as
        ``jnp.linalg.pinv``: ``10 · max(n, P) · eps``).

    Returns:
      ``(P,)`` or ``(P, p)``.
    """
    if jnp.ndim(Phi) != 2 or jnp.shape(y)[:1] != Phi.shape[:1]:
        raise ValueError(f"need Phi (n, P) and y (n, ...), got {jnp.shape(Phi)}, {jnp.shape(y)}.")
    Phi = jnp.asarray(Phi)
    if rtol is None:
        rtol = 10 * max(Phi.shape) * float(jnp.finfo(Phi.dtype).eps)
    return jnp.tensordot(_linalg.pinv(Phi, rtol), y, axes=1)
