r"""How nonlinear a network is at initialization: per activation and per layer. [ours]

The measure of a map ``X ↦ Y`` on a batch: the share of ``Y``'s variance that the best affine
function of ``X`` leaves unexplained (one minus R²; 0 for an affine map, up to 1).

- :func:`activation_nonlinearity`: an activation alone on Gaussian inputs ``N(0, σ²)``, by
  quadrature (relu ``(π − 2)/(2π − 2)`` at every σ; tanh ``≈ ⅔σ⁴``; the GLU family via its gate),
  so the zoo of :mod:`dyntheory.models.activations` can be compared.
- :func:`affine_unexplained`: the sample version with the degrees-of-freedom correction.
- :func:`layer_nonlinearity`: per tapped dense layer of a model, the block between consecutive
  dense layers and the activation on its actual pre-activations.

Part of the trainability diagnostics (:mod:`dyntheory.diagnostics`); the paper (Litman & Guo
2026, arXiv:2605.01172, §2) linearizes the dynamics around the realized path, and this measures
how far from linear the network map itself is at the start of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dyntheory.diagnostics.jacobian import tape_layout
from dyntheory.models.activations import get_activation, is_gated

__all__ = ["activation_nonlinearity", "affine_unexplained", "layer_nonlinearity"]


def activation_nonlinearity(
    name: str, scale: float = 1.0, *, beta: float = 1.0, num_points: int = 40_001
) -> float:
    r"""Share of ``φ(z)``'s variance no affine function of the input explains, ``z ~ N(0, σ²)``.

    Elementwise ``φ``: :math:`N(φ, σ) = 1 − \mathrm{Cov}(φ(z), z)^2 / (σ^2\,\mathrm{Var}\,φ(z))`,
    0 for affine ``φ``; relu gives :math:`(π − 2)/(2π − 2) ≈ 0.266` at every σ (it is positively
    homogeneous); tanh gives :math:`\tfrac{2}{3}σ^4 + O(σ^6)`. Gated ``g(a)·b`` with ``a, b``
    i.i.d. ``N(0, σ²)`` and the affine fit on ``(a, b)``: :math:`N = 1 − E[g(a)]^2/E[g(a)^2]`.
    Computed by the trapezoid rule on ``[−12σ, 12σ]`` (``num_points`` nodes, one at 0), to
    ~1e-6 absolute. [ours]
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    phi = get_activation(name, beta=beta)
    if is_gated(name):  # recover the gate g from g(a)·1
        gate = lambda a: phi(jnp.concatenate([a, jnp.ones_like(a)], axis=-1))
    else:
        gate = phi
    z = np.linspace(-12.0 * scale, 12.0 * scale, num_points | 1)
    w = np.exp(-0.5 * (z / scale) ** 2)
    w[[0, -1]] *= 0.5
    w /= w.sum()
    v = np.asarray(gate(jnp.asarray(z)[None, :])[0], np.float64)  # float64 when x64 is on
    m1, m2 = w @ v, w @ v**2
    if is_gated(name):
        return float(1.0 - m1**2 / m2)
    var = m2 - m1**2
    if var <= 0:
        raise ValueError(f"activation {name!r} is constant at scale {scale}")
    cov = w @ (v * z)
    return float(max(1.0 - cov**2 / (scale**2 * var), 0.0))


def affine_unexplained(inputs, outputs) -> float:
    r"""Adjusted share of ``outputs``' variance not explained by the best affine fit on ``inputs``.

    With rows ``(S, d)`` and ``(S, m)``, the least-squares fit ``Y ≈ X M + c``, residual sum of
    squares RSS and total (centred) TSS, and ``r = rank(X − X̄)``:

    .. math::  N = \frac{\mathrm{RSS}/(S − 1 − r)}{\mathrm{TSS}/(S − 1)}

    (one minus the adjusted R², summed over output columns; the degrees of freedom remove the
    downward bias of fitting ``r + 1`` coefficients on ``S`` rows). 0 exactly for an affine map;
    about the population share otherwise. Needs ``S > r + 1``. [ours]
    """
    X = np.asarray(inputs, np.float64).reshape(np.shape(inputs)[0], -1)
    Y = np.asarray(outputs, np.float64).reshape(np.shape(outputs)[0], -1)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"inputs and outputs need the same rows, got {X.shape} and {Y.shape}")
    S = X.shape[0]
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    tss = float(np.sum(Yc**2))
    if tss == 0:
        raise ValueError("outputs are constant over the batch: the variance share is undefined")
    coef, _, rank, _ = np.linalg.lstsq(Xc, Yc, rcond=None)
    if S - 1 - rank <= 0:
        raise ValueError(
            f"the affine fit needs more rows than rank(inputs) + 1: {S} rows, rank "
            f"{rank}; use a larger batch"
        )
    rss = float(np.sum((Yc - Xc @ coef) ** 2))
    return (rss / (S - 1 - rank)) / (tss / (S - 1))


def _default_activation_layers(keys: Sequence[str]) -> list[str]:
    """Dense layers followed by the activation in the zoo: ``.../layers/<i>`` and ``.../mlp_in``."""
    out = []
    for k in keys:
        parts = k.split("/")
        if parts[-1] == "mlp_in" or (
            len(parts) >= 2 and parts[-2] == "layers" and parts[-1].isdigit()
        ):
            out.append(k)
    return out


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _per_feature_unexplained(z: np.ndarray, h: np.ndarray, gated: bool) -> float:
    """Adjusted unexplained share of ``h (S, m)`` fitting column j on its own pre-activations."""
    S, m = h.shape
    regs = np.stack([z[:, :m], z[:, m:]], -1) if gated else z[:, :, None]  # (S, m, k)
    k = regs.shape[-1]
    rc, hc = regs - regs.mean(0), h - h.mean(0)
    gram = np.einsum("sjk,sjl->jkl", rc, rc)
    cross = np.einsum("sjk,sj->jk", rc, hc)
    beta = np.einsum("jkl,jl->jk", np.linalg.pinv(gram), cross)
    rss = np.sum((hc - np.einsum("sjk,jk->sj", rc, beta)) ** 2)
    tss = np.sum(hc**2)
    if tss == 0 or S - 1 - k <= 0:
        return float("nan")
    return float((rss / (S - 1 - k)) / (tss / (S - 1)))


def layer_nonlinearity(
    apply_fn,
    params,
    x,
    *,
    activation: str | None = None,
    beta: float = 1.0,
    activation_layers: Sequence[str] | None = None,
) -> dict[str, Any]:
    r"""Per-layer nonlinearity on the batch (needs the taps of :func:`dyntheory.models.functional`).

    - ``blocks``: for consecutive tapped dense layers ``ℓ, ℓ'`` (call order) seeing the same rows,
      :func:`affine_unexplained` of the input of ``ℓ'`` given the input of ``ℓ``: how nonlinear
      the block between them (activation, norm, residual) is on this batch. A block whose fit
      would need more rows than the batch has is listed under ``skipped``.
    - ``activation`` (when ``activation`` is named): per activation layer, the activation alone on
      the layer's actual pre-activations ``Z = A W + b``, each output feature fitted on its own
      pre-activation(s) (one, or two for a gated φ) — the sample version of
      :func:`activation_nonlinearity`.

    Returns ``{"blocks": [{"from", "to", "nonlinearity"}], "activation": [{"layer",
    "nonlinearity", "preact_std"}], "skipped": [{"from", "to", "reason"}]}``.
    """
    if not callable(getattr(apply_fn, "tapped", None)):
        raise ValueError(
            "layer_nonlinearity needs an apply_fn with dense-layer taps "
            "(from dyntheory.models.functional)"
        )
    stacked = jax.jit(lambda w, z: apply_fn.tapped(w, z)[1].stacked_inputs())(params, x)
    inputs = {k: np.asarray(v, np.float64) for k, v in stacked.items()}
    inputs = {k: inputs[k] for k in tape_layout(apply_fn, params, x)[0]}  # call order
    keys = list(inputs)
    blocks, skipped = [], []
    for a, b in zip(keys[:-1], keys[1:], strict=True):
        xa, xb = inputs[a], inputs[b]
        if xa.shape[0] != xb.shape[0]:
            skipped.append({"from": a, "to": b, "reason": "different row counts"})
            continue
        rank = np.linalg.matrix_rank(xa - xa.mean(0))
        if xa.shape[0] - 1 - rank <= 0:
            skipped.append({"from": a, "to": b, "reason": f"{xa.shape[0]} rows <= rank {rank} + 1"})
            continue
        if not np.any(xb != xb[:1]):
            skipped.append({"from": a, "to": b, "reason": "output constant over the batch"})
            continue
        blocks.append({"from": a, "to": b, "nonlinearity": affine_unexplained(xa, xb)})
    acts = []
    if activation is not None:
        phi = get_activation(activation, beta=beta)
        chosen = (
            _default_activation_layers(keys) if activation_layers is None else activation_layers
        )
        for k in chosen:
            if k not in apply_fn.dense:
                raise ValueError(f"{k!r} is not a dense layer; known: {sorted(apply_fn.dense)}")
            layer = apply_fn.dense[k]
            W = np.asarray(_get(params, layer.kernel), np.float64)
            z = inputs[k] @ W
            if layer.bias is not None:
                z = z + np.asarray(_get(params, layer.bias), np.float64)[None, :]
            h = np.asarray(phi(jnp.asarray(z)), np.float64)
            value = _per_feature_unexplained(z, h, is_gated(activation))
            if np.isnan(value):
                skipped.append({"from": k, "to": k, "reason": "activation constant over the batch"})
                continue
            acts.append({"layer": k, "preact_std": float(z.std()), "nonlinearity": value})
    return {"blocks": blocks, "activation": acts, "skipped": skipped}
