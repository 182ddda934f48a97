r"""Signals, noise, Fourier features and the metrics of the INR experiment.

An implicit neural representation fits ``f(x) ≈ s(x)`` from noisy samples ``y_i = s(x_i) + ε_i``
(``ε_i ~ N(0, σ²)`` i.i.d.). The network sees random Fourier features (Tancik et al. 2020,
arXiv:2006.10739) ``γ(x) = [cos 2πBx, sin 2πBx]`` with a fixed ``B ∈ R^{m×d}``, ``B_ij ~ N(0, ς²)``.

Signals (generated in code, no downloads):
- ``sines1d``: ``s(x) = Σ_k a_k sin(2π f_k x + φ_k)`` on ``x ∈ [0, 1)``.
- ``blobs2d``: a smooth synthetic grey image on ``[0, 1)²`` — Gaussian blobs, a soft-edged disc
  and a plane wave — scaled to ``[0, 1]``.
- ``hopper2d``: matplotlib's bundled sample photo ``grace_hopper.jpg`` (ships with matplotlib, no
  download), grey, box-downsampled to ``side × side``, in ``[0, 1]``.

Metrics (all against arrays on the same points):
- ``psnr(f, s) = 10 log10(R² / mean((f − s)²))`` with ``R = max(s) − min(s)``, the clean signal's
  dynamic range (skimage's ``data_range`` convention; ``R = 1`` for the images).
- **noise_fit** ``= 1 − ‖f − y‖² / ‖ε‖²``: the fraction of the noise energy the fit has absorbed.
  0 when ``f = s`` (fits the clean signal exactly), 1 when ``f = y`` (interpolates the noise);
  negative while ``f`` is further from the targets than the clean signal is.
- **noise_coef** ``= ⟨f − s, ε⟩ / ‖ε‖²``: the least-squares coefficient of the fit's error on the
  noise, i.e. how much of ``ε`` is *in* the fit. 0 for any error uncorrelated with the noise
  (underfitting the signal does not count), 1 for ``f = s + ε``. ``noise_fit = 2·noise_coef −
  ‖f − s‖²/‖ε‖²``. We report ``noise_coef`` as "memorization" and ``noise_fit`` alongside.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.inr.config import SIGNALS


class Samples(NamedTuple):
    """Training samples of a signal: coordinates, clean values, noise and noisy targets."""

    x: np.ndarray  # (n, d) coordinates in [0, 1)^d
    clean: np.ndarray  # (n,)
    noise: np.ndarray  # (n,)  ε, std σ
    y: np.ndarray  # (n,)  clean + noise


# ---------------------------------------------------------------------------------------------
# Signals: s(x) on a grid. Every function returns (coords (n, d), values (n,)) as float64 numpy.


def grid_coords(side: int, dim: int) -> np.ndarray:
    """``side**dim`` equispaced points of ``[0, 1)^dim``, row-major: ``(side**dim, dim)``."""
    g = np.arange(side) / side
    mesh = np.meshgrid(*([g] * dim), indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def sines1d(x: np.ndarray) -> np.ndarray:
    """A fixed sum of five sinusoids (frequencies 1–24 cycles per unit): ``(n, 1) → (n,)``."""
    freqs = np.array([1.0, 3.0, 7.0, 12.0, 24.0])
    amps = np.array([1.0, 0.6, 0.5, 0.35, 0.25])
    phases = np.array([0.0, 1.1, 2.3, 0.4, 4.0])
    return np.sum(amps * np.sin(2 * np.pi * freqs * x[:, :1] + phases), axis=1)


def blobs2d(x: np.ndarray) -> np.ndarray:
    """A smooth synthetic image in ``[0, 1]``: ``(n, 2) → (n,)``."""
    u, v = x[:, 0], x[:, 1]
    img = np.zeros_like(u)
    for cu, cv, w, a in [(0.3, 0.3, 0.08, 1.0), (0.7, 0.35, 0.12, 0.7), (0.45, 0.75, 0.05, 0.9)]:
        img += a * np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * w**2))
    r = np.sqrt((u - 0.72) ** 2 + (v - 0.72) ** 2)
    img += 0.6 / (1 + np.exp((r - 0.15) / 0.01))  # soft-edged disc
    img += 0.25 * np.sin(2 * np.pi * (3 * u + 5 * v))  # plane wave
    return (img - img.min()) / (img.max() - img.min())


def hopper_image(side: int) -> np.ndarray:
    """matplotlib's ``grace_hopper.jpg``, grey, centre-cropped square, box-downsampled to
    ``side × side``, scaled to [0, 1]: ``(side, side)``."""
    import matplotlib.cbook
    import matplotlib.image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        rgb = matplotlib.image.imread(f, format="jpg").astype(np.float64)
    grey = rgb[..., :3].mean(axis=-1)
    h, w = grey.shape
    s = min(h, w) // side * side
    top, left = (h - s) // 2, (w - s) // 2
    crop = grey[top : top + s, left : left + s]
    k = s // side
    small = crop.reshape(side, k, side, k).mean(axis=(1, 3))
    return (small - small.min()) / (small.max() - small.min())


def signal_on_grid(name: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The named signal on the ``side`` (1-D) or ``side × side`` (2-D) grid: coords, values."""
    if name == "sines1d":
        x = grid_coords(side, 1)
        return x, sines1d(x)
    if name == "blobs2d":
        x = grid_coords(side, 2)
        return x, blobs2d(x)
    if name == "hopper2d":
        return grid_coords(side, 2), hopper_image(side).ravel()
    raise ValueError(f"unknown signal {name!r}; expected one of {SIGNALS}")


def signal_dim(name: str) -> int:
    if name not in SIGNALS:
        raise ValueError(f"unknown signal {name!r}; expected one of {SIGNALS}")
    return 1 if name.endswith("1d") else 2


def split_train(n_side: int, dim: int, stride: int) -> np.ndarray:
    """Indices (into the row-major grid) of the training samples: every ``stride``-th grid point
    along each axis. ``stride = 1`` trains on the whole grid (pure denoising)."""
    idx = np.arange(n_side)
    keep = idx % stride == 0
    mask = keep
    for _ in range(dim - 1):
        mask = np.logical_and.outer(mask, keep)
    return np.flatnonzero(mask.ravel())


def add_noise(key: jax.Array, clean: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """``ε ~ N(0, σ²)`` shaped like ``clean``, deterministic in ``key``: ``(ε, clean + ε)``."""
    # Drawn in float32 whatever jax_enable_x64 says, so the noise is the same in tests and runs.
    eps = sigma * np.asarray(jax.random.normal(key, clean.shape, jnp.float32), dtype=np.float64)
    return eps, clean + eps


# ---------------------------------------------------------------------------------------------
# Fourier features.


def fourier_matrix(key: jax.Array, n_features: int, dim: int, scale: float) -> np.ndarray:
    """``B ∈ R^{m×d}``, ``B_ij ~ N(0, scale²)``."""
    return scale * np.asarray(jax.random.normal(key, (n_features, dim), jnp.float32), np.float64)


def fourier_features(x, B):
    """``γ(x) = [cos 2πBx, sin 2πBx]``: ``(n, d), (m, d) → (n, 2m)``. Works for numpy and jax."""
    xp = jnp if isinstance(x, jax.Array) else np
    proj = 2 * np.pi * x @ B.T
    return xp.concatenate([xp.cos(proj), xp.sin(proj)], axis=1)


# ---------------------------------------------------------------------------------------------
# Metrics.


def psnr(f, s, data_range=None):
    """``10 log10(R² / mean((f − s)²))``, ``R = max(s) − min(s)`` unless given."""
    xp = jnp if isinstance(f, jax.Array) or isinstance(s, jax.Array) else np
    r = (xp.max(s) - xp.min(s)) if data_range is None else data_range
    mse = xp.mean((f - s) ** 2)
    return 10.0 * xp.log10(r**2 / mse)


def noise_fit(f, y, eps):
    """``1 − ‖f − y‖² / ‖ε‖²`` (module docstring)."""
    xp = jnp if isinstance(f, jax.Array) else np
    return 1.0 - xp.sum((f - y) ** 2) / xp.sum(eps**2)


def noise_coef(f, clean, eps):
    """``⟨f − s, ε⟩ / ‖ε‖²`` (module docstring)."""
    xp = jnp if isinstance(f, jax.Array) else np
    return xp.sum((f - clean) * eps) / xp.sum(eps**2)


def masked_metrics(f, clean, y, eps, train, data_range) -> dict:
    """All the INR metrics at once, for arrays on the whole grid (jax or numpy, shape ``(N,)``).

    ``train`` is 1 at the training samples and 0 elsewhere; ``y`` and ``eps`` are only read where
    ``train`` is 1. Keys: ``psnr`` (clean, whole grid), ``psnr_train`` (clean, training points),
    ``psnr_heldout`` and ``mse_heldout`` (clean, the other points; NaN if there are none),
    ``mse_noisy`` (to the noisy targets), ``noise_fit`` and ``noise_coef`` (on the training
    points; module docstring).
    """
    xp = jnp if isinstance(f, jax.Array) else np
    held = 1.0 - train
    err2 = (f - clean) ** 2
    n_tr, n_held = xp.sum(train), xp.sum(held)
    peak = data_range**2
    e2 = xp.sum(train * eps**2)
    resid2 = xp.sum(train * (f - y) ** 2)
    held_mse = xp.where(n_held > 0, xp.sum(held * err2) / xp.maximum(n_held, 1), xp.nan)
    return {
        "psnr": 10.0 * xp.log10(peak / xp.mean(err2)),
        "psnr_train": 10.0 * xp.log10(peak / (xp.sum(train * err2) / n_tr)),
        "psnr_heldout": 10.0 * xp.log10(peak / held_mse),
        "mse_heldout": held_mse,
        "mse_noisy": resid2 / n_tr,
        "noise_fit": 1.0 - resid2 / e2,
        "noise_coef": xp.sum(train * (f - clean) * eps) / e2,
    }
