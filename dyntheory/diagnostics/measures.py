r"""Trainability diagnostics at initialization: the measures.

Everything here reads one batch ``x`` (``(n, ...)``), targets ``y`` and a pure ``apply_fn(params,
x) -> (n, p)`` at its initial ``params``; nothing trains (the one-batch overfit test, the warnings
and the whole report are in :mod:`dyntheory.diagnostics.report`). ``apply_fn`` must treat
examples independently (no batch statistics), which every model of :mod:`dyntheory.models` does.

**Layers.** A *parameter group* is a leaf's path without its last key (``layers/3`` holds
``kernel`` and ``bias``). The *depth order* is the call order of the tapped dense layers when
``apply_fn`` comes from :func:`dyntheory.models.functional` (other groups follow in pytree order),
else the pytree order.

**Losses** (THEORY.md §1): ``"squared"`` ``Φ = ‖u − y‖²/(2n)`` with float targets ``(n, p)``,
``B = I/n``; ``"softmax_ce"`` with integer labels ``(n,)``, ``B = (1/n) blockdiag(diag π − ππᵀ)``.

Measures **[ours]** (the paper, Litman & Guo 2026, arXiv:2605.01172, §2, supplies the output-space
dynamics ``u̇ = −K g``, ``ġ = −B K g`` that the NTK ones linearize):

- :func:`gradient_norms`: per group ``‖∇_θℓ Φ‖``, ``‖θℓ‖`` and the relative gradient
  ``ρℓ = ‖∇_θℓ Φ‖/‖θℓ‖`` (the relative change of group ℓ per unit learning rate); the depth ratio
  ``ρ_first/ρ_last`` over the depth-ordered layers.
- :mod:`dyntheory.diagnostics.jacobian`: input–output Jacobian norms, per layer and end to end.
- :mod:`dyntheory.diagnostics.nonlinearity`: the share of a map's output variance that no
  affine function of its input explains, per activation and per layer.
- :func:`ntk_diagnostics`: the NTK at init and the linearized-GD stability bound
  ``η < 2/λ_max(B^{1/2} K B^{1/2})`` (``= 2n/λ_max(K)`` for squared loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dyntheory import losses, ntk, spectrum
from dyntheory.diagnostics.jacobian import jacobian_norms, tape_layout
from dyntheory.diagnostics.nonlinearity import (
    activation_nonlinearity,
    affine_unexplained,
    layer_nonlinearity,
)

LOSSES = tuple(losses.LOSSES)

__all__ = [
    "LOSSES",
    "activation_nonlinearity",
    "affine_unexplained",
    "check_batch",
    "gradient_norms",
    "jacobian_norms",
    "layer_nonlinearity",
    "layer_order",
    "linearized_loss_ratio",
    "loss_fn",
    "ntk_diagnostics",
    "param_groups",
    "tape_layout",
]


# ----------------------------------------------------------------------------- inputs


def loss_fn(loss: str):
    """``(u, y) -> Φ`` for ``loss`` in :data:`LOSSES` (:func:`dyntheory.losses.get_loss`)."""
    return losses.get_loss(loss).value


def check_batch(apply_fn, params, x, y, loss: str) -> jax.Array:
    """Validate ``(x, y)`` for ``loss``; return the outputs ``u = apply_fn(params, x)``, (n, p)."""
    loss_fn(loss)
    if jnp.ndim(x) < 1 or jnp.shape(x)[0] < 2:
        raise ValueError(f"x must be a batch (n, ...) with n >= 2 examples, got {jnp.shape(x)}")
    n = jnp.shape(x)[0]
    if jnp.ndim(y) < 1 or jnp.shape(y)[0] != n:
        raise ValueError(f"y must have the batch's {n} examples on axis 0, got {jnp.shape(y)}")
    out = jax.eval_shape(apply_fn, params, x)
    if len(out.shape) != 2 or out.shape[0] != n:
        raise ValueError(f"apply_fn must map (n, ...) to (n, p) outputs, got {out.shape}")
    u = jax.jit(apply_fn)(params, x)
    if loss == "squared" and jnp.shape(y) != u.shape:
        raise ValueError(
            f"squared loss needs float targets of the outputs' shape {u.shape}, got {jnp.shape(y)}"
        )
    if loss == "softmax_ce":
        if jnp.shape(y) != (n,) or not jnp.issubdtype(jnp.result_type(y), jnp.integer):
            raise ValueError(
                f"softmax_ce needs integer labels ({n},), got {jnp.shape(y)} {jnp.result_type(y)}"
            )
        if int(jnp.min(y)) < 0 or int(jnp.max(y)) >= u.shape[1]:
            raise ValueError(
                f"labels must lie in [0, {u.shape[1]}), got [{int(jnp.min(y))}, {int(jnp.max(y))}]"
            )
    return u


def _key_str(entry) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def param_groups(params: Any) -> dict[str, list[jax.Array]]:
    """``group name -> leaves``; the group is the leaf path minus its last key (``layers/0``)."""
    groups: dict[str, list[jax.Array]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [_key_str(k) for k in path]
        groups.setdefault("/".join(keys[:-1]) or keys[0], []).append(leaf)
    if not groups:
        raise ValueError("params has no array leaves")
    return groups


def _dense_order(apply_fn, params, x) -> list[str]:
    return tape_layout(apply_fn, params, x[:1])[0]


def layer_order(apply_fn, params, x) -> tuple[list[str], list[str]]:
    """``(all groups in depth order, the depth-ordered layers the ratios use)``.

    The ratio layers are the tapped dense layers in call order when there are at least two, else
    every group with nonzero parameters in pytree order.
    """
    groups = param_groups(params)
    dense = [k for k in _dense_order(apply_fn, params, x) if k in groups]
    order = dense + [g for g in groups if g not in dense]
    if len(dense) >= 2:
        return order, dense
    nonzero = [g for g in groups if any(np.any(np.asarray(v) != 0) for v in groups[g])]
    return order, nonzero


def _norm(leaves: Sequence[jax.Array]) -> float:
    return float(np.sqrt(sum(np.sum(np.square(np.asarray(v, np.float64))) for v in leaves)))


def gradient_norms(apply_fn, params, x, y, *, loss: str = "squared") -> dict[str, Any]:
    r"""Per-group gradient and parameter norms of the loss at ``params``.

    Returns:
      ``{"layers": [{"name", "param_norm", "grad_norm", "relative_grad"}] (depth order),
      "depth_layers": [depth-ordered names], "grad_ratio": ρ_first/ρ_last, "grad_spread":
      max ρ / min ρ, "loss": Φ}`` with ``ρℓ = ‖∇_θℓ Φ‖/‖θℓ‖`` (``None`` for an all-zero group).
      The ratios run over the depth layers without the last one (the readout, whose ρ tracks the
      output scale rather than backpropagation) when there are at least three, else over all.
    """
    check_batch(apply_fn, params, x, y, loss)
    f = loss_fn(loss)
    value, grads = jax.jit(jax.value_and_grad(lambda w: f(apply_fn(w, x), y)))(params)
    p_groups, g_groups = param_groups(params), param_groups(grads)
    order, depth = layer_order(apply_fn, params, x)
    rows = []
    for name in order:
        pn, gn = _norm(p_groups[name]), _norm(g_groups[name])
        rows.append(
            {
                "name": name,
                "param_norm": pn,
                "grad_norm": gn,
                "relative_grad": gn / pn if pn > 0 else None,
            }
        )
    rho = {r["name"]: r["relative_grad"] for r in rows}
    hidden = depth[:-1] if len(depth) >= 3 else depth  # the readout's ρ measures output scale
    chain = [rho[k] for k in hidden if rho[k] is not None]
    ratio = chain[0] / chain[-1] if len(chain) >= 2 and chain[-1] > 0 else None
    spread = max(chain) / min(chain) if len(chain) >= 2 and min(chain) > 0 else None
    return {
        "layers": rows,
        "depth_layers": depth,
        "grad_ratio": ratio,
        "grad_spread": spread,
        "loss": float(value),
    }


# ----------------------------------------------------------------------------- NTK


def _sqrt_psd(b: np.ndarray) -> np.ndarray:
    lam, v = np.linalg.eigh((b + b.T) / 2)
    return (v * np.sqrt(np.clip(lam, 0.0, None))[None, :]) @ v.T


def ntk_diagnostics(
    apply_fn, params, x, y, *, loss: str = "squared", implementation: str = "jacobian"
) -> dict[str, Any]:
    r"""NTK at init, its spectrum, alignment with the targets, and the GD stability bound.

    ``K = J Jᵀ`` (``(np, np)``, example-major, :func:`dyntheory.ntk.empirical_ntk`). Linearizing
    one full-batch GD step of size η around init, the output gradient moves as
    ``g ← (I − η B K) g`` (THEORY.md §2), stable iff

    .. math::  η < η_{\max} = 2/λ_{\max}(B^{1/2} K B^{1/2})
               \;(= 2n/λ_{\max}(K) \text{ for squared loss}).

    For squared loss this is exact for a linear model and holds at early times for a network; for
    cross-entropy ``B`` is the Hessian at init and changes as the logits move.

    Returns a dict: ``lambda_max, lambda_min, trace, condition_number,
    effective_rank_participation, effective_rank_entropy`` (of K, float64 when x64 is on;
    :mod:`dyntheory.spectrum`), ``numerical_rank`` (eigenvalues above ``N·eps·λ_max`` with the
    eps of K's compute dtype: the ones round-off resolves),
    ``kernel_target_alignment``, ``suggested_max_lr`` (η_max), ``eigenvalues`` (descending) and,
    for squared loss, ``residual_energy`` (``(Vᵀ r₀)²`` per eigenvector, ``r₀ = u₀ − y``) for
    :func:`linearized_loss_ratio`.
    """
    u = check_batch(apply_fn, params, x, y, loss)
    n, p = u.shape
    k_raw = ntk.empirical_ntk(apply_fn, params, x, implementation=implementation)
    eps = float(jnp.finfo(k_raw.dtype).eps)
    k = np.asarray(k_raw, np.float64)
    if not np.all(np.isfinite(k)):
        raise FloatingPointError("the NTK at init is not finite (exploding activations?)")
    k = (k + k.T) / 2
    lam, vecs = np.linalg.eigh(k)
    lam, vecs = lam[::-1], vecs[:, ::-1]
    summ = jax.jit(spectrum.summaries)(jnp.asarray(lam))  # one compile, not one per op
    out = {name: float(v) for name, v in summ.items()}
    kta = jax.jit(spectrum.kernel_target_alignment)(jnp.asarray(k), y)
    out["kernel_target_alignment"] = float(kta)
    out["numerical_rank"] = int(np.sum(lam > lam.size * eps * lam[0]))
    out["eigenvalues"] = lam.tolist()
    out["n"], out["p"] = int(n), int(p)
    if loss == "squared":
        out["suggested_max_lr"] = float(spectrum.gd_stability_lr(jnp.asarray(lam[0]), n))
        r0 = np.asarray(u, np.float64).reshape(-1) - np.asarray(y, np.float64).reshape(-1)
        out["residual_energy"] = ((vecs.T @ r0) ** 2).tolist()
    else:
        bh = _sqrt_psd(np.asarray(jax.jit(losses.softmax_out_hessian)(u), np.float64))
        out["suggested_max_lr"] = float(2.0 / np.linalg.eigvalsh(bh @ k @ bh)[-1])
    return out


def linearized_loss_ratio(eigenvalues, residual_energy, lr, steps, n: int) -> np.ndarray:
    r"""``Φ_lin(t)/Φ(0)`` of the frozen-NTK model under full-batch GD on squared loss.

    With ``K = V diag(λ) Vᵀ`` and ``c = Vᵀ r₀``: ``Φ_lin(t) = Σᵢ (1 − ηλᵢ/n)^{2t} cᵢ² / (2n)``
    (:mod:`dyntheory.linear`). ``lr`` and ``steps`` broadcast (scalars or arrays).
    """
    lam = np.asarray(eigenvalues, np.float64)
    c2 = np.asarray(residual_energy, np.float64)
    if lam.shape != c2.shape or lam.ndim != 1:
        raise ValueError(f"eigenvalues {lam.shape} and residual_energy {c2.shape} must match")
    lr, steps = np.broadcast_arrays(np.asarray(lr, np.float64), np.asarray(steps, np.float64))
    decay = (1.0 - lr[..., None] * lam / n) ** (2.0 * steps[..., None])
    return decay @ c2 / c2.sum()
