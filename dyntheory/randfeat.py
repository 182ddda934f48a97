r"""Random-features regression, its minimum-norm solution, and its channel/reservoir accounting.

The model is linear in its parameters, ``f(x) = φ(x)ᵀθ`` with ``N`` fixed random features, so its
NTK is exactly the feature Gram matrix: ``K_SS = ΦΦᵀ`` (``n × n``) and ``K_QS = Φ_Q Φᵀ``
(``m × n``), with ``Φ = φ(X)`` of shape ``(n, N)``. Feature maps (``W`` has i.i.d. ``N(0, 1)``
entries, ``(N, d)``; ``b ~ U[0, 2π)``; ``ℓ`` a bandwidth, default ``√d``)::

    "relu":     φ(x) = relu(W x / √d) / √N          K → ‖x‖‖x'‖ (sin ϑ + (π − ϑ) cos ϑ) / (2π d)
    "fourier":  φ(x) = √(2/N) cos(W x / ℓ + b)       K → exp(−‖x − x'‖² / (2ℓ²))

(the arc-cosine kernel of Cho & Saul 2009, and Rahimi & Recht 2007's random Fourier features).

**Minimum-norm least squares.** ``θ̂ = Φ⁺ y = Φᵀ K⁺ y``: the least-squares solution for
``N < n``, the interpolant of least ``‖θ‖`` for ``N ≥ n``. Test predictions ``Φ_Q θ̂ = K_QS K⁺ y``.
Computed from the SVD ``Φ = U S Vᵀ`` (never by inverting ``K``, which squares the conditioning);
singular values below ``rcond · s_max`` (default ``max(n, N) · eps``) count as zero.

**Gradient flow and the dissipation Gramian** (THEORY.md §3). Gradient flow on
``Φ_S(θ) = ‖Φθ − y‖²/(2n)`` from ``θ = 0`` moves the outputs by ``u̇ = −K g`` with
``g = (u − y)/n``, so ``ġ = −(K/n) g``: the kernel is constant and the propagator is
``P(t) = exp(−tK/n)``, symmetric. THEORY's squared-loss identities then give, in closed form,

    W_S(0, t) = (n/2)(I − PᵀP) = (n/2)(I − exp(−2tK/n)),    D = n(I − P),
    G_Q = ∫₀ᵗ K_QS P(τ) dτ = n K_QS K⁺ (I − P)

(``K_QS Π_ker K = 0`` because ``ker K = ker Φᵀ``). As ``t → ∞``, ``P → Π_ker(K)``, hence

    W_∞ = (n/2) Π_range(K),    D_∞ = n Π_range(K),    G_∞ = n K_QS K⁺.

So for the minimum-norm solution — the limit of gradient flow from zero — the signal channel is
``range(K)`` and the reservoir ``ker K``; the dissipated fraction ``λ(W_S)/(n/2)`` is exactly 1 on
the channel and 0 on the reservoir. ``ker K`` is ``{0}`` once ``rank Φ = n`` (``N ≥ n``), and
``n − N``-dimensional below. Check: ``−G_∞ g(0) = K_QS K⁺ y`` is the min-norm test prediction, and
``g(0)ᵀ W_∞ g(0) = ‖Π_range y‖²/(2n)`` is the drop of the training loss.

**What peaks at the interpolation threshold** (THEORY §7: "near the interpolation threshold small
kernel eigenvalues collapse and noise enters the channel"). Split the labels ``y = y* + ε`` (clean
target and label noise), so ``g(0) = g_clean + g_noise`` with ``g_noise = −ε/n``
(:func:`dyntheory.split.residual_parts`), and apply :func:`dyntheory.split.four_cell` to ``W_∞``
and ``G_∞``. :func:`summarize` reports

* ``noise_channel_fraction_train = ‖Π_range ε‖²/‖ε‖²``: the share of the noise the flow dissipates
  (fits). It does **not** peak: about ``N/n`` below the threshold, exactly 1 above. ``W_∞`` is a
  projector, blind to how *small* the eigenvalues through which the noise is fitted are.
* ``noise_test_energy = ‖G_∞ g_noise‖²/m = ‖K_QS K⁺ ε‖²/m``: the label-noise energy the channel
  carries to the test outputs (the variance part of the test error). The noise is delivered through
  ``K⁺``, i.e. amplified by ``1/λ`` along each channel direction; at ``N ≈ n`` the smallest
  nonzero eigenvalues of ``K`` collapse to ~0, so this blows up. Below the threshold the reservoir
  ``ker K`` holds ``1 − N/n`` of the noise away from the test outputs; above it, more features lift
  the small eigenvalues and the amplification falls again.
* ``noise_in_channel_fraction = ‖G_∞ g_noise‖² / (‖G_∞ g_noise‖² + ‖G_∞ g_clean‖²)``: the share of
  the test-output energy sent through the channel that is label noise. It rises towards the
  threshold and falls beyond it; at exactly ``N = n`` one collapsed direction dominates both terms,
  and the share there is whatever mix of noise and unrepresentable clean target that direction
  carries, so its maximum is at the threshold but may sit one grid point to either side of it.
* ``noise_amplification = εᵀK⁺ε · (tr K/n) / ‖ε‖²``: the min-norm parameter cost ``‖Φ⁺ε‖²`` of
  fitting the noise, made scale-free (1 if ``K`` were a multiple of ``I``); it peaks at ``N = n``.

References:
  Litman & Guo, arXiv:2605.01172 (2026), §3 and §7; Belkin, Hsu, Ma & Mandal, "Reconciling modern
  machine learning practice and the bias-variance trade-off", arXiv:1812.11118; Mei & Montanari,
  "The generalization error of random features regression", arXiv:1908.05355.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dyntheory import dissipation, split
from dyntheory.names import FEATURE_MAPS


class RandomFeatures(NamedTuple):
    """Random feature weights; take the first ``N`` rows for an ``N``-feature model (nested)."""

    weights: jax.Array  # (N, d) i.i.d. N(0, 1)
    phases: jax.Array  # (N,) U[0, 2π), used by the Fourier map only


class MinNormFit(NamedTuple):
    """The minimum-norm least-squares solution and the spectrum of its feature Gram matrix."""

    theta: jax.Array  # (N,) θ̂ = Φ⁺ y
    train_pred: jax.Array  # (n,) Φ θ̂
    test_pred: jax.Array  # (m,) Φ_Q θ̂ = K_QS K⁺ y
    eigvals: jax.Array  # (n,) eigenvalues of K = ΦΦᵀ, descending (zeros past the rank)
    rank: jax.Array  # () int32, numerical rank of Φ


class Accounting(NamedTuple):
    """:class:`MinNormFit` plus the four-cell accounting of ``W_∞``/``G_∞`` (module docstring)."""

    fit: MinNormFit
    cells: split.FourCell  # of (g_clean, g_noise) = (−y*/n, −ε/n) under W_∞ = (n/2)Π_range(K)
    noise_param_norm2: jax.Array  # () εᵀK⁺ε = ‖Φ⁺ε‖², the min-norm cost of fitting the noise
    trace_k: jax.Array  # () tr K


def init_features(key: jax.Array, n_features: int, in_dim: int, dtype=None) -> RandomFeatures:
    """Draw ``n_features`` random features for ``in_dim``-dimensional inputs.

    ``dtype`` defaults to float64 when ``jax_enable_x64`` is on (float32 otherwise).
    """
    if int(n_features) < 1 or int(in_dim) < 1:
        raise ValueError(f"n_features and in_dim must be >= 1, got {n_features}, {in_dim}")
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64 if dtype is None else dtype)
    kw, kb = jax.random.split(key)
    w = jax.random.normal(kw, (int(n_features), int(in_dim)), dtype)
    b = jax.random.uniform(kb, (int(n_features),), dtype, 0.0, 2 * math.pi)
    return RandomFeatures(w, b)


def features(
    kind: str, rf: RandomFeatures, x: jax.Array, n_features=None, bandwidth=None
) -> jax.Array:
    r"""The feature matrix ``Φ = φ(x)``, shape ``(n, N)``, for inputs ``x`` of shape ``(n, d)``.

    Args:
      kind: ``"relu"`` or ``"fourier"`` (module docstring).
      rf: from :func:`init_features`; ``n_features`` (default: all) takes its first rows.
      x: inputs ``(n, d)``.
      n_features: a Python int gives ``(n, N)``. A JAX integer scalar (may be traced) gives the
        full width ``(n, N_all)`` with the columns past ``N`` set to zero and the ``N``-feature
        normalization: the same ``K``, ``θ̂`` (padded with zeros) and predictions, so one
        compilation serves a whole sweep over ``N`` (and ``vmap`` can run over it).
      bandwidth: the Fourier map's ``ℓ`` (default ``√d``); ignored by ``"relu"``.
    """
    if kind not in FEATURE_MAPS:
        raise ValueError(f"kind must be one of {FEATURE_MAPS}, got {kind!r}")
    n_all, d = rf.weights.shape
    if jnp.ndim(x) != 2 or jnp.shape(x)[1] != d:
        raise ValueError(f"x must have shape (n, {d}), got {jnp.shape(x)}")
    ell = math.sqrt(d) if bandwidth is None else float(bandwidth)
    if not ell > 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    traced = isinstance(n_features, jax.Array)
    if traced:
        n_feat, w, b = n_features, rf.weights, rf.phases
        if not isinstance(n_features, jax.core.Tracer) and not 1 <= int(n_features) <= n_all:
            raise ValueError(f"n_features must lie in [1, {n_all}], got {int(n_features)}")
    else:
        n_feat = n_all if n_features is None else int(n_features)
        if not 1 <= n_feat <= n_all:
            raise ValueError(f"n_features must lie in [1, {n_all}], got {n_features}")
        w, b = rf.weights[:n_feat], rf.phases[:n_feat]
    x = jnp.asarray(x, w.dtype)
    nf = jnp.asarray(n_feat, w.dtype)
    if kind == "relu":
        phi = jax.nn.relu(x @ w.T / math.sqrt(d)) / jnp.sqrt(nf)
    else:
        phi = jnp.sqrt(2.0 / nf) * jnp.cos(x @ w.T / ell + b[None, :])
    if traced:
        phi = jnp.where(jnp.arange(n_all)[None, :] < n_feat, phi, 0.0)
    return phi


class _SVD(NamedTuple):
    u: jax.Array  # (n, r) left singular vectors, r = min(n, N)
    s: jax.Array  # (r,) singular values, descending
    vt: jax.Array  # (r, N)
    keep: jax.Array  # (r,) bool, numerically nonzero


def _svd(phi: jax.Array, rcond: float | None) -> _SVD:
    """Thin SVD of ``Φ`` with the numerically nonzero singular values marked."""
    if jnp.ndim(phi) != 2:
        raise ValueError(f"phi must be a matrix (n, N), got shape {jnp.shape(phi)}")
    if phi.shape[0] <= phi.shape[1]:
        u, s, vt = jnp.linalg.svd(phi, full_matrices=False)
    else:  # LAPACK is much faster on the wide orientation: Φᵀ = V S Uᵀ
        v, s, ut = jnp.linalg.svd(phi.T, full_matrices=False)
        u, vt = ut.T, v.T
    if rcond is None:
        rcond = max(phi.shape) * float(jnp.finfo(phi.dtype).eps)
    return _SVD(u, s, vt, s > rcond * s[0])


def _check_test(phi_train, phi_test):
    if phi_test is None:
        return jnp.zeros((0, phi_train.shape[1]), phi_train.dtype)
    if jnp.ndim(phi_test) != 2 or phi_test.shape[1] != phi_train.shape[1]:
        raise ValueError(
            f"phi_test must have shape (m, {phi_train.shape[1]}), got {jnp.shape(phi_test)}"
        )
    return phi_test


def _s_inv(sv: _SVD) -> jax.Array:
    return jnp.where(sv.keep, 1.0 / jnp.where(sv.keep, sv.s, 1.0), 0.0)


def _fit(sv: _SVD, phi_train, y, phi_test) -> MinNormFit:
    n = phi_train.shape[0]
    theta = sv.vt.T @ (_s_inv(sv) * (sv.u.T @ jnp.asarray(y, sv.u.dtype)))
    eig = jnp.zeros((n,), sv.s.dtype).at[: sv.s.shape[0]].set(jnp.where(sv.keep, sv.s**2, 0.0))
    return MinNormFit(
        theta, phi_train @ theta, phi_test @ theta, eig, jnp.sum(sv.keep).astype(jnp.int32)
    )


def _operators(sv: _SVD, n: int, phi_test, t: float) -> dissipation.DissipationState:
    lam = sv.s**2
    decay = jnp.exp(-t * lam / n) if math.isfinite(t) else jnp.zeros_like(lam)
    one_m = jnp.where(sv.keep, 1.0 - decay, 0.0)  # 1 − P on the range, 0 on the numerical kernel
    one_m2 = jnp.where(sv.keep, 1.0 - decay * decay, 0.0)
    u = sv.u
    P = jnp.eye(n, dtype=u.dtype) - (u * one_m[None, :]) @ u.T
    W = (n / 2) * (u * one_m2[None, :]) @ u.T
    D = n * (u * one_m[None, :]) @ u.T
    G = n * ((phi_test @ sv.vt.T) * (_s_inv(sv) * one_m)[None, :]) @ u.T  # K_QS K⁺ = Φ_Q V S⁻¹ Uᵀ
    return dissipation.DissipationState(
        P=P,
        W=0.5 * (W + W.T),
        D=0.5 * (D + D.T),
        G=G,
        count=jnp.zeros((), jnp.int32),
        time=jnp.asarray(t, u.dtype),
    )


@functools.partial(jax.jit, static_argnames="rcond")
def min_norm_fit(
    phi_train: jax.Array,
    y: jax.Array,
    phi_test: jax.Array | None = None,
    rcond: float | None = None,
) -> MinNormFit:
    """``θ̂ = Φ⁺ y`` and its predictions; see the module docstring. ``y`` has shape ``(n,)``."""
    n = phi_train.shape[0]
    if jnp.shape(y) != (n,):
        raise ValueError(f"y must have shape ({n},), got {jnp.shape(y)}")
    phi_test = _check_test(phi_train, phi_test)
    return _fit(_svd(phi_train, rcond), phi_train, y, phi_test)


def gradient_flow_operators(
    phi_train: jax.Array,
    phi_test: jax.Array | None = None,
    t: float = math.inf,
    rcond: float | None = None,
) -> dissipation.DissipationState:
    r"""Closed-form ``(P, W_S, D, G_Q)`` of gradient flow on ``‖Φθ − y‖²/(2n)`` for a time ``t``.

    The continuous-time counterpart of :mod:`dyntheory.dissipation`'s accumulator for a constant
    kernel ``K = ΦΦᵀ`` (module docstring): in ``K``'s eigenbasis a mode of eigenvalue ``λ`` has
    ``P = e^{−tλ/n}``, ``W = (n/2)(1 − P²)``, ``D = n(1 − P)``, and ``G_Q = n K_QS K⁺(I − P)``.
    ``t = inf`` (default) gives the minimum-norm limit ``W_∞ = (n/2)Π_range(K)``. Returned as a
    :class:`dyntheory.dissipation.DissipationState` with ``count = 0`` and ``time = t``.
    """
    phi_test = _check_test(phi_train, phi_test)
    if not t >= 0:
        raise ValueError(f"t must be non-negative, got {t}")
    return _operators(_svd(phi_train, rcond), phi_train.shape[0], phi_test, t)


@functools.partial(jax.jit, static_argnames="rcond")
def min_norm_accounting(
    phi_train: jax.Array,
    phi_test: jax.Array,
    y_clean: jax.Array,
    y_noisy: jax.Array,
    rcond: float | None = None,
) -> Accounting:
    r"""Fit ``θ̂ = Φ⁺ y_noisy`` and account for it with ``W_∞``, ``G_∞`` (module docstring).

    The four cells are :func:`dyntheory.split.four_cell` of ``g(0) = −y_noisy/n`` split into
    ``g_clean = −y_clean/n`` and ``g_noise = (y_clean − y_noisy)/n``, with the channel
    ``range(K)`` (dissipated fraction 1) and the reservoir ``ker K`` (fraction 0). One SVD.
    """
    n = phi_train.shape[0]
    for name, v in (("y_clean", y_clean), ("y_noisy", y_noisy)):
        if jnp.shape(v) != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {jnp.shape(v)}")
    phi_test = _check_test(phi_train, phi_test)
    sv = _svd(phi_train, rcond)
    fit = _fit(sv, phi_train, y_noisy, phi_test)
    ops = _operators(sv, n, phi_test, math.inf)
    sp = split.split(ops.W, threshold=0.5, mode="dissipated_fraction", n_examples=n)
    dtype = ops.W.dtype
    u0 = jnp.zeros((n, 1), dtype)
    g_clean, g_noise = split.residual_parts(
        u0, jnp.asarray(y_clean, dtype)[:, None], jnp.asarray(y_noisy, dtype)[:, None]
    )
    cells = split.four_cell(sp, ops.W, g_clean, g_noise, ops.G)
    eps_proj = _s_inv(sv) * (sv.u.T @ (-n * g_noise))  # θ_ε = V S⁻¹ Uᵀ ε, so ‖θ_ε‖² = ‖S⁻¹Uᵀε‖²
    return Accounting(fit, cells, jnp.sum(eps_proj**2), jnp.sum(fit.eigvals))


def summarize(acc: Accounting, y_test: jax.Array, y_train_noisy: jax.Array) -> dict[str, jax.Array]:
    r"""Scalar summary of one fit (the quantities the module docstring defines); jit/vmap-able.

    ``y_test`` are the clean test targets; ``y_train_noisy`` the labels the model was fitted to.
    Keys: ``test_mse``, ``train_mse``, ``rank``, ``lambda_max``, ``lambda_min_nonzero``,
    ``noise_channel_fraction_train``, ``noise_test_energy``, ``clean_test_energy``,
    ``noise_in_channel_fraction``, ``noise_gain`` (noise test energy per unit of label-noise
    energy ``‖ε‖²/n``), ``noise_amplification``, ``invisible_test_energy`` (the reservoir cells'
    test energy; Prop. 3.2 says 0). Values are 0-d arrays.
    """
    fit, c = acc.fit, acc.cells
    m = fit.test_pred.shape[0]
    n = fit.train_pred.shape[0]
    if jnp.shape(y_test) != (m,) or jnp.shape(y_train_noisy) != (n,):
        raise ValueError(
            f"y_test must have shape ({m},) and y_train_noisy ({n},), "
            f"got {jnp.shape(y_test)} and {jnp.shape(y_train_noisy)}"
        )
    tiny = jnp.finfo(c.train_energy.dtype).tiny
    noise_energy = c.train_energy[1, 0] + c.train_energy[1, 1]  # ‖ε‖²/n²
    m_ = max(m, 1)
    return {
        "test_mse": jnp.mean((fit.test_pred - y_test) ** 2),
        "train_mse": jnp.mean((fit.train_pred - y_train_noisy) ** 2),
        "rank": fit.rank,
        "lambda_max": fit.eigvals[0],
        "lambda_min_nonzero": fit.eigvals[jnp.maximum(fit.rank - 1, 0)],
        "noise_channel_fraction_train": c.train_energy[1, 0] / jnp.maximum(noise_energy, tiny),
        "noise_test_energy": c.test_energy[1, 0] / m_,
        "clean_test_energy": c.test_energy[0, 0] / m_,
        "noise_in_channel_fraction": c.test_energy[1, 0]
        / jnp.maximum(c.test_energy[1, 0] + c.test_energy[0, 0], tiny),
        "noise_gain": (c.test_energy[1, 0] / m_) / jnp.maximum(n * noise_energy, tiny),
        "noise_amplification": acc.noise_param_norm2
        * acc.trace_k
        / n
        / jnp.maximum(n * n * noise_energy, tiny),
        "invisible_test_energy": (c.test_energy[0, 1] + c.test_energy[1, 1]) / m_,
    }
