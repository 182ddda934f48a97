r"""The signal/reservoir split of output space by the dissipation Gramian ``W_S`` (THEORY.md §3).

The **signal channel** is ``range(W_S)`` and the **reservoir** ``ker(W_S)``; in a real network the
split is soft, so it is made at a threshold on ``W_S``'s eigenvalues (paper's exact cutoff not
available: ours), and the whole spectrum is always returned so a user can choose another one.

Threshold modes (``λ`` an eigenvalue of ``W_S``; its direction is in the channel iff
score > threshold):

* ``"relative"`` (default): score ``λ/λ_max``.
* ``"dissipated_fraction"``: score ``λ/(n/2)`` for squared loss with ``n`` examples. Since
  ``W_S = (n/2)(I − PᵀP)``, this is the fraction of a unit-gradient direction's loss that training
  has dissipated, in ``[0, 1]``, independent of the run.
* ``"absolute"``: score ``λ``.

Shapes: ``np`` train outputs, ``mq`` query outputs, vectors flattened example-major.

References:
  Litman & Guo, "A Theory of Generalization in Deep Learning", arXiv:2605.01172 (2026), §3 and
  Prop. 3.2 (test invisibility: ``ker W_S ⊆ ker G_Q``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dyntheory import _linalg

_MODES = ("relative", "dissipated_fraction", "absolute")


class Split(NamedTuple):
    """Eigendecomposition of ``W_S`` and the channel/reservoir projectors."""

    eigvals: jax.Array  # (np,) eigenvalues of W_S, descending
    eigvecs: jax.Array  # (np, np) orthonormal eigenvectors, column i for eigvals[i]
    channel: jax.Array  # (np,) bool, eigvecs[:, i] is in the signal channel
    threshold: jax.Array  # () the absolute eigenvalue cutoff the mode and threshold resolved to
    channel_projector: jax.Array  # (np, np) Π_c, orthogonal projector onto the channel
    reservoir_projector: jax.Array  # (np, np) Π_r = I − Π_c


class FourCell(NamedTuple):
    r"""Clean signal vs label noise × channel vs reservoir. Index ``[part, sub]``: part 0 = clean,
    1 = noise; sub 0 = channel, 1 = reservoir."""

    train_energy: jax.Array  # (2, 2) ‖Π_sub g_part‖²
    dissipated: jax.Array  # (2, 2) g_partᵀ Π_sub W_S Π_sub g_part, loss each cell dissipates
    test_displacement: jax.Array  # (2, 2, mq) −G_Q Π_sub g_part
    test_energy: jax.Array  # (2, 2) ‖G_Q Π_sub g_part‖²


def split(
    W: jax.Array, threshold: float = 1e-3, mode: str = "relative", n_examples: int | None = None
) -> Split:
    r"""Split output space by the eigenvalues of the (symmetric PSD) Gramian ``W``.

    Args:
      W: ``(np, np)`` Gramian ``W_S`` (e.g. ``DissipationState.W``); its symmetric part is used.
        A concrete ``W`` with NaN / Inf entries, or a negative or non-finite concrete
        ``threshold``, raises ``ValueError``.
      threshold: cutoff on the mode's score (see the module docstring), finite and ``>= 0``;
        may be traced.
      mode: ``"relative"``, ``"dissipated_fraction"`` (needs ``n_examples``) or ``"absolute"``.
      n_examples: number of train examples ``n`` (not outputs) for ``"dissipated_fraction"``.
    """
    shape = jnp.shape(W)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"W must be a square matrix, got shape {shape}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    W = jnp.asarray(W)
    # concrete inputs are checked here; traced ones by their producer (the Dissipation probe)
    if not isinstance(threshold, jax.core.Tracer):
        t = float(np.asarray(threshold))
        if not (math.isfinite(t) and t >= 0):
            raise ValueError(f"threshold must be a finite number >= 0, got {t}")
    if not isinstance(W, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(W))):
        raise ValueError("W has NaN or infinite entries")
    lam, V = jnp.linalg.eigh(0.5 * (W + W.T))
    lam, V = lam[::-1], V[:, ::-1]
    if mode == "relative":
        cut = threshold * lam[0]
    elif mode == "dissipated_fraction":
        if n_examples is None or int(n_examples) <= 0:
            raise ValueError("mode='dissipated_fraction' needs a positive n_examples")
        cut = threshold * (int(n_examples) / 2)
    else:
        cut = jnp.asarray(threshold, lam.dtype)
    channel = lam > cut
    Vc = V * channel.astype(V.dtype)[None, :]
    pi_c = Vc @ V.T
    pi_c = 0.5 * (pi_c + pi_c.T)
    pi_r = jnp.eye(shape[0], dtype=pi_c.dtype) - pi_c
    return Split(lam, V, channel, jnp.asarray(cut, lam.dtype), pi_c, pi_r)


def energies(sp: Split, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""``(‖Π_c v‖², ‖Π_r v‖²)`` for ``v`` of shape ``(np,)`` or ``(np, k)`` (one pair per column).

    Computed in the eigenbasis, so the two add up to ``‖v‖²`` to round-off.
    """
    v = jnp.asarray(v)
    if v.ndim not in (1, 2) or v.shape[0] != sp.eigvecs.shape[0]:
        raise ValueError(f"v must have shape ({sp.eigvecs.shape[0]},) or (np, k), got {v.shape}")
    coef2 = jnp.square(sp.eigvecs.T @ v)
    mask = sp.channel.astype(coef2.dtype)
    if v.ndim == 2:
        mask = mask[:, None]
    return jnp.sum(mask * coef2, axis=0), jnp.sum((1 - mask) * coef2, axis=0)


def residual_parts(
    u: jax.Array, y_clean: jax.Array, y_noisy: jax.Array
) -> tuple[jax.Array, jax.Array]:
    r"""Squared loss: split ``g = (u − y_noisy)/n`` into ``g_clean = (u − y_clean)/n`` and
    ``g_noise = (y_clean − y_noisy)/n`` (flattened example-major), so ``g = g_clean + g_noise``."""
    if not jnp.shape(u) == jnp.shape(y_clean) == jnp.shape(y_noisy):
        raise ValueError(
            f"u {jnp.shape(u)}, y_clean {jnp.shape(y_clean)} and y_noisy {jnp.shape(y_noisy)} "
            "must have one shape"
        )
    n = jnp.shape(u)[0]
    return ((u - y_clean) / n).reshape(-1), ((y_clean - y_noisy) / n).reshape(-1)


def four_cell(
    sp: Split, W: jax.Array, g_clean: jax.Array, g_noise: jax.Array, G: jax.Array | None = None
) -> FourCell:
    r"""The four-cell decomposition of the train residual and of its effect on the test outputs.

    The output gradient at the start time ``s`` is ``g(s) = g_clean + g_noise`` (for squared loss
    from :func:`residual_parts`: the part due to the clean-target residual and the part due to the
    label noise ``−ε/n``). Each part is projected on the channel and the reservoir, giving four
    cells ``(part, sub)`` with

    * ``train_energy = ‖Π_sub g_part‖²`` (rows add up to ``‖g_part‖²``);
    * ``dissipated = g_partᵀ Π_sub W_S Π_sub g_part``, the training loss each cell accounts for
      (over the two subs it is ``g_partᵀ W_S g_part`` exactly, ``Π`` commuting with ``W_S``);
    * ``test_displacement = −G_Q Π_sub g_part``: the four vectors add up to the predicted test
      displacement ``U_Q(T) − U_Q(s) = −G_Q g(s)``, so the test error at ``T`` is
      ``U_Q(s) − y_Q + Σ_cells test_displacement``;
    * ``test_energy = ‖G_Q Π_sub g_part‖²``.

    Test invisibility (Prop. 3.2) says the reservoir column of ``test_displacement`` is ~0: fitting
    label noise stored there does not move the test outputs. Without ``G`` the test fields have
    ``mq = 0``.
    """
    n = sp.eigvecs.shape[0]
    for name, v in (("g_clean", g_clean), ("g_noise", g_noise)):
        if jnp.shape(v) != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {jnp.shape(v)}")
    if jnp.shape(W) != (n, n):
        raise ValueError(f"W has shape {jnp.shape(W)}, the split is of a ({n}, {n}) Gramian")
    dtype = sp.eigvecs.dtype
    G = jnp.zeros((0, n), dtype) if G is None else _check_g(sp, G)
    parts = jnp.stack([g_clean, g_noise]).astype(dtype)  # (2, np)
    projs = jnp.stack([sp.channel_projector, sp.reservoir_projector])  # (2, np, np)
    cells = jnp.einsum("sab,pb->psa", projs, parts)  # (part, sub, np): Π_sub g_part
    train_energy = jnp.sum(jnp.square(cells), axis=-1)
    dissipated = jnp.einsum("psa,ab,psb->ps", cells, W, cells)
    test_disp = -jnp.einsum("qa,psa->psq", G, cells)
    return FourCell(train_energy, dissipated, test_disp, jnp.sum(jnp.square(test_disp), axis=-1))


def invisibility_residual(sp: Split, G: jax.Array, relative: bool = True) -> jax.Array:
    r"""``‖G_Q Π_r‖₂`` (spectral norm), over ``‖G_Q‖₂`` when ``relative``; Prop. 3.2 says 0."""
    G = _check_g(sp, G)
    res = _linalg.spectral_norm(G @ sp.reservoir_projector)
    if relative:
        res = res / jnp.maximum(_linalg.spectral_norm(G), jnp.finfo(res.dtype).tiny)
    return res


def _check_g(sp: Split, G) -> jax.Array:
    n = sp.eigvecs.shape[0]
    if jnp.ndim(G) != 2 or jnp.shape(G)[1] != n:
        raise ValueError(f"G must have shape (mq, {n}), got {jnp.shape(G)}")
    return jnp.asarray(G, sp.eigvecs.dtype)


def top_rel_err(eigvals: jax.Array, reference: jax.Array, k: int) -> jax.Array:
    r"""``max_{i<k} |λ_i − λ_i^ref| / |λ_i^ref|``: the top ``k`` eigenvalues of an approximate
    ``W_S`` (a low-rank or tracked-basis spectrum) against a reference (the dense one), both
    descending (``(r,)`` and ``(m,)``; ``k`` is cut to the shorter). A reference eigenvalue
    below ``eps·|λ_0^ref|`` counts as that floor, so an exact zero does not divide. The check
    that the spectrum which is split is the reference's (THEORY.md §10, "The low-rank spectrum,
    and what loses it"). Returns ``()``.
    """
    k = min(int(k), eigvals.shape[0], reference.shape[0])
    if k < 1:
        raise ValueError(f"top_rel_err compares k >= 1 eigenvalues, got k = {k}.")
    top = reference[:k]
    tiny = jnp.finfo(top.dtype).eps * jnp.abs(top[0]) + jnp.finfo(top.dtype).tiny
    return jnp.max(jnp.abs(eigvals[:k] - top) / jnp.maximum(jnp.abs(top), tiny))
