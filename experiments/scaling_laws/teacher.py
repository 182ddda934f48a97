r"""Exact teacher-student sweeps on power-law data: loss vs data ``D``, model size ``N``, steps.

**Task.** ``x ∈ R^M`` Gaussian with covariance ``Σ = diag(λ_k)``, ``λ_k = k^{−a}``; the teacher
``y = w*ᵀx`` with ``w*_k = s_k k^{−(b−a)/2}`` (``s_k = ±1`` random per seed), so the target power
per eigenmode is ``c_k = λ_k w*_k² = k^{−b}`` (noiseless labels). ``M`` stands in for ``∞``: it is
kept ≥ 8× the largest ``D`` and ``N``. The student is linear in ``N`` random projections,
``f(x) = θᵀ F x`` (``F`` Gaussian, ``N × M``; ``F = I`` for "all features"), and every loss is the
exact population risk ``(Fᵀθ − w*)ᵀ Σ (Fᵀθ − w*)`` (no test sample needed).

**Sweeps** (seeds batched with ``vmap``, float64):

* data: ridgeless (minimum-norm) least squares on all ``M`` features from ``D`` samples;
* model: the population-optimal student on ``N`` random projections (infinite data);
* time: full-batch gradient descent from ``θ = 0`` on ``D_time`` samples, all features, in closed
  form in the eigenbasis of the ``D_time × D_time`` Gram matrix, at log-spaced steps;
* joint: ``N`` projections and ``D`` samples, ridge tuned per point (oracle, on a log grid), which
  removes the ``N = D`` interpolation peak (Nakkiran et al. 2021) so the additive law can hold.

**Theory** (what the fitted exponents are compared with). With ``c_k ∝ k^{−b}`` and
``λ_k ∝ k^{−a}``, ``1 < b < 2a + 1``: noiseless ridgeless (or optimally regularized) regression
learns the modes ``k ≲ D`` and its risk is the tail ``Σ_{k>D} c_k``, so ``L(D) ∝ D^{−(b−1)}``
(Spigler, Geiger & Wyart 2020; Bordelon, Canatar & Pehlevan 2020; Cui et al. 2021: ``2αr`` with
capacity ``α = a`` and source ``r = (b − 1)/(2a)``). The best ``N``-projection student misses the
tail past ``k ≈ N``: ``L(N) ∝ N^{−(b−1)}`` (Maloney, Roberts & Sully 2022; Bordelon, Atanasov &
Pehlevan 2024). Gradient flow learns mode ``k`` once ``t λ_k ≳ 1``, i.e. ``k ≲ t^{1/a}``:
``L(t) = Σ_k c_k e^{−2λ_k t} ∝ t^{−(b−1)/a}``.

**Spectral prediction.** From a sample alone: the decay exponent of the empirical Gram (= NTK of
the linear model) eigenvalues estimates ``a``, and the tail of the label power in its eigenbasis,
``T_k = Σ_{j>k} (u_jᵀy)²/‖y‖²``, decays like ``k^{−(b−1)}``, which predicts the data exponent.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from dyntheory import spectrum


def teacher(key, M: int, a: float, b: float):
    """``(λ (M,), w* (M,))`` for one seed."""
    k = jnp.arange(1, M + 1, dtype=jnp.float64)
    lam = k ** (-a)
    signs = jnp.where(jax.random.bernoulli(key, 0.5, (M,)), 1.0, -1.0)
    return lam, signs * k ** (-(b - a) / 2)


def sample(key, D: int, lam):
    """``D`` inputs ``(D, M)`` with covariance ``diag(λ)``."""
    return jax.random.normal(key, (D, lam.shape[0]), jnp.float64) * jnp.sqrt(lam)[None, :]


def _risk(theta_full, w, lam):
    """Population risk of the linear predictor ``θ_full ∈ R^M`` (trailing axis)."""
    e = theta_full - w
    return jnp.sum(lam * e * e, axis=-1)


def data_sweep(key, cfg, Ds: list[int]):
    """Ridgeless least squares on all features, nested samples: risk per ``D``, shape ``(|D|,)``."""
    kt, kx = jax.random.split(key)
    lam, w = teacher(kt, cfg.M, cfg.a, cfg.b)
    X = sample(kx, max(Ds), lam)
    y = X @ w
    out = []
    for D in Ds:
        Xd = X[:D]
        theta = Xd.T @ jnp.linalg.solve(Xd @ Xd.T, y[:D])
        out.append(_risk(theta, w, lam))
    return jnp.stack(out)


def model_sweep(key, cfg, Ns: list[int]):
    """Population-optimal student on ``N`` random projections: risk per ``N``."""
    kt, kf = jax.random.split(key)
    lam, w = teacher(kt, cfg.M, cfg.a, cfg.b)
    F = jax.random.normal(kf, (max(Ns), cfg.M), jnp.float64)
    total = jnp.sum(lam * w * w)
    out = []
    for N in Ns:
        Fn = F[:N]
        A = (Fn * lam[None, :]) @ Fn.T
        v = Fn @ (lam * w)
        out.append(total - v @ jnp.linalg.solve(A, v))
    return jnp.stack(out)


def time_sweep(key, cfg, steps):
    """Full-batch GD from 0 on ``D_time`` samples (step ``η = lr·D/λ_max(XXᵀ)``): risk per step."""
    kt, kx = jax.random.split(key)
    lam, w = teacher(kt, cfg.M, cfg.a, cfg.b)
    X = sample(kx, cfg.D_time, lam)
    y = X @ w
    ev, U = jnp.linalg.eigh(X @ X.T)  # loss ‖Xθ − y‖²/(2D): modes decay as (1 − η ev/D)^t
    ev = jnp.maximum(ev, 0.0)
    eta = cfg.lr * cfg.D_time / ev[-1]
    r = 1.0 - eta * ev / cfg.D_time
    uy = U.T @ y
    t = jnp.asarray(steps, jnp.float64)[:, None]
    # θ_t = Xᵀ U diag((1 − r^t)/ev) Uᵀ y  (θ_0 = 0); modes with ev = 0 never move
    pos = (ev > 0)[None, :]
    gain = jnp.where(pos, (1.0 - r[None, :] ** t) / jnp.where(ev > 0, ev, 1.0)[None, :], 0.0)
    theta = (gain * uy[None, :]) @ U.T @ X  # (T, M)
    return _risk(theta, w[None, :], lam[None, :])


def joint_sweep(key, cfg, Ns: list[int], Ds: list[int]):
    """``N`` projections × ``D`` samples, oracle ridge on a log grid: risk ``(|N|, |D|)``.

    Features and samples are padded to ``(max D, max N)`` with zeros (a zero row or column leaves
    the ridge solution unchanged), so one compiled body serves the whole grid.
    """
    kt, kx, kf = jax.random.split(key, 3)
    lam, w = teacher(kt, cfg.M, cfg.a, cfg.b)
    n_max, d_max = max(Ns), max(Ds)
    F = jax.random.normal(kf, (n_max, cfg.M), jnp.float64) / math.sqrt(cfg.M)
    X = sample(kx, d_max, lam)
    y = X @ w
    Z = X @ F.T  # (D_max, N_max)
    ridges = jnp.logspace(cfg.ridge_min, cfg.ridge_max, cfg.n_ridges)
    grid = jnp.asarray([(N, D) for N in Ns for D in Ds], jnp.int32)

    def one(nd):
        N, D = nd[0], nd[1]
        mask_r = (jnp.arange(d_max) < D).astype(Z.dtype)
        mask_c = (jnp.arange(n_max) < N).astype(Z.dtype)
        Zm = Z * mask_r[:, None] * mask_c[None, :]
        u, s, vt = jnp.linalg.svd(Zm, full_matrices=False)
        uy = u.T @ (y * mask_r)
        scale = s[0] ** 2
        coef = (s[None, :] / (s[None, :] ** 2 + ridges[:, None] * scale)) * uy[None, :]
        theta = coef @ vt  # (J, N_max), zero on padded columns
        risk = _risk(theta @ F, w[None, :], lam[None, :])
        return jnp.min(risk)

    return jax.lax.map(one, grid).reshape(len(Ns), len(Ds))


def spectral_prediction(key, cfg, D: int) -> dict:
    """Exponents read off one sample's Gram matrix (the linear model's NTK) and labels."""
    kt, kx = jax.random.split(key)
    lam, w = teacher(kt, cfg.M, cfg.a, cfg.b)
    X = sample(kx, D, lam)
    y = X @ w
    return gram_exponents(np.asarray(X @ X.T), np.asarray(y), cfg.fit_lo, cfg.fit_hi_frac)


def gram_exponents(k: np.ndarray, y: np.ndarray, lo: int, hi_frac: float) -> dict:
    r"""Eigenvalue decay ``a`` of a Gram/NTK matrix and the decay of the labels' tail power.

    ``y`` is ``(n,)`` or ``(n, p)`` (one column per output); the tail power is
    ``T_k = Σ_{j>k} ‖u_jᵀ y‖² / ‖y‖²`` and its decay exponent predicts the data exponent.
    Fits over ranks ``lo … hi_frac·n``.
    """
    k = np.asarray(k, np.float64)
    y = np.asarray(y, np.float64).reshape(k.shape[0], -1)
    ev, U = np.linalg.eigh(0.5 * (k + k.T))
    ev, U = ev[::-1], U[:, ::-1]
    hi = max(lo + 2, int(hi_frac * k.shape[0]))
    a_hat = spectrum.power_law_exponent(np.maximum(ev, 1e-300), lo, hi)
    power = np.sum((U.T @ y) ** 2, axis=1)
    tail = (np.sum(power) - np.cumsum(power)) / np.sum(power)  # T_k, k = 1..n
    tail_fit = spectrum.power_law_exponent(np.maximum(tail[:hi], 1e-300), lo, hi)
    return {
        "eigenvalue_exponent": float(a_hat),
        "target_tail_exponent": float(tail_fit),
        "predicted_data_exponent": float(tail_fit),
        "fit_ranks": [lo, hi],
    }
