r"""Input–output Jacobian norms at initialization, per layer and end to end.

For a batch ``x`` ``(n, ...)`` and a batched map ``f`` whose examples are independent, the
per-example Jacobian is ``J_i = ∂f(x)_i/∂x_i`` (``(M, D)``: flattened per-example output and
input sizes). Reported per map: the Frobenius norm ``‖J_i‖_F`` and the spectral norm
``σ_max(J_i)``, summarized over the batch as ``frobenius = (mean_i ‖J_i‖_F²)^{1/2}`` and
``spectral = mean_i σ_max(J_i)`` (with ``spectral_max = max_i``).

Maps (THEORY.md §1 notation; the per-layer ones need the taps of
:func:`dyntheory.models.functional`):

- ``end_to_end``: ``x ↦ f(x)``. Frobenius exactly (one JVP or VJP per basis vector of the
  smaller side), spectral exactly from those when that side is small, else by power iteration
  on ``J_iᵀ J_i`` (batched over examples: one JVP and one VJP per iteration),
  :func:`per_example_norms`.
- ``input_to_layer[ℓ]``: ``x ↦ A_ℓ``, the input of dense layer ℓ (forward signal propagation;
  ``A_first = x`` gives ``J = I``).
- ``layer_to_output[ℓ]``: ``Z_ℓ ↦ f``, the output's sensitivity to dense layer ℓ's output
  ``Z_ℓ = A_ℓ W_ℓ + b_ℓ`` (the backpropagated error of layer ℓ; its size sets ``‖∇W_ℓ‖``).

The per-layer Jacobians are formed densely from the small side (the ``D`` input coordinates, or
the ``p`` outputs), so their spectral norms are exact (``eigh`` of the small Gram matrix). Inputs
that are integer tokens have no input Jacobian: only ``layer_to_output`` is computed. [ours]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["gram_norms", "jacobian_norms", "per_example_norms", "tape_layout"]


def _basis(n: int, size: int, shape, dtype) -> jax.Array:
    """``(size, n, *shape)``: basis vector ``k`` of the per-example space, in every example."""
    eye = jnp.eye(size, dtype=dtype)
    return jnp.broadcast_to(eye[:, None, :], (size, n, size)).reshape(size, n, *shape)


def _row_norm(v: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=1))


def per_example_norms(
    f, x: jax.Array, *, key: jax.Array | None = None, num_iters: int = 50, exact_limit: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-example ``‖J_i‖_F`` and ``σ_max(J_i)``, each ``(n,)``, of a batched map ``f``.

    Frobenius: :math:`‖J_i‖_F^2 = \sum_k ‖J_i e_k‖^2` over the smaller side's basis (exact).
    Spectral: when the smaller side has at most ``exact_limit`` coordinates, those basis passes
    already give ``J_i`` densely and :func:`gram_norms` is exact (``p = 1`` outputs:
    :math:`σ_{\max} = ‖J_i‖_F`); otherwise power iteration
    :math:`v ← J_iᵀ J_i v/‖J_iᵀ J_i v‖` from a Gaussian start, ``num_iters`` times, then
    :math:`σ = ‖J_i v‖` (a lower bound converging geometrically in :math:`(σ_2/σ_1)^2`).
    """
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1, got {num_iters}")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise ValueError(f"the input Jacobian needs float inputs, got dtype {jnp.result_type(x)}")
    key = jax.random.key(0) if key is None else key
    n = x.shape[0]

    @jax.jit
    def run(x, key):
        y, f_jvp = jax.linearize(f, x)
        if y.ndim < 1 or y.shape[0] != n:
            raise ValueError(f"f must keep the batch axis ({n}), got output shape {y.shape}")
        f_vjp = jax.linear_transpose(f_jvp, x)
        d_in, d_out = x[0].size, y[0].size
        if d_in <= d_out:
            cols = jax.vmap(f_jvp)(_basis(n, d_in, x.shape[1:], x.dtype))
        else:
            cols = jax.vmap(lambda c: f_vjp(c)[0])(_basis(n, d_out, y.shape[1:], y.dtype))
        cols = cols.reshape(cols.shape[0], n, -1)
        fro = jnp.sqrt(jnp.sum(jnp.square(cols), axis=(0, 2)))
        if min(d_in, d_out) <= exact_limit:
            return fro, None, cols

        def normalize(v):
            nrm = _row_norm(v)
            return v / jnp.where(nrm > 0, nrm, 1.0).reshape((n,) + (1,) * (v.ndim - 1))

        v0 = normalize(jax.random.normal(key, x.shape, x.dtype))
        v = lax.fori_loop(0, num_iters, lambda _, v: normalize(f_vjp(f_jvp(v))[0]), v0)
        return fro, _row_norm(f_jvp(v)), None

    fro, spec, cols = run(x, key)
    if spec is None:
        spec = gram_norms(np.asarray(cols).transpose(1, 0, 2))[1]
    return np.asarray(fro, np.float64), np.asarray(spec, np.float64)


def gram_norms(j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(‖J_i‖_F, σ_max(J_i))`` of dense per-example Jacobians ``(n, M, D)``, exactly."""
    j = np.asarray(j, np.float64)
    fro = np.sqrt(np.sum(j**2, axis=(1, 2)))
    g = j @ j.transpose(0, 2, 1) if j.shape[1] <= j.shape[2] else j.transpose(0, 2, 1) @ j
    spec = np.sqrt(np.clip(np.linalg.eigvalsh(g)[:, -1], 0.0, None))
    return fro, spec


def tape_layout(apply_fn, params, x) -> tuple[list[str], dict[str, jax.ShapeDtypeStruct]]:
    """Tapped dense layers of ``apply_fn`` on ``x``: call order and ``key -> (S, d_out)``.

    Read by tracing only (no compute); ``([], {})`` for an ``apply_fn`` without taps.
    """
    if not callable(getattr(apply_fn, "tapped", None)):
        return [], {}
    seen: dict[str, Any] = {}

    def run(w, z):
        y, tape = apply_fn.tapped(w, z)
        seen["keys"], seen["shapes"] = list(tape.inputs), tape.perturbation_shapes()
        return y

    jax.eval_shape(run, params, x)
    return seen["keys"], seen["shapes"]


def _summary(fro: np.ndarray, spec: np.ndarray) -> dict[str, float]:
    return {
        "frobenius": float(np.sqrt(np.mean(fro**2))),
        "spectral": float(np.mean(spec)),
        "spectral_max": float(np.max(spec)),
    }


def _input_to_layer(apply_fn, params, x, keys, max_elements, notes) -> list[dict]:
    n, d_in = x.shape[0], x[0].size

    def f(z):
        tape = apply_fn.tapped(params, z)[1]
        return {k: v.reshape(n, -1) for k, v in tape.stacked_inputs().items() if k in keys}

    widths = {k: s.shape[1] for k, s in jax.eval_shape(f, x).items()}
    if d_in * n * sum(widths.values()) > max_elements:
        notes.append(
            f"input_to_layer skipped: {d_in} x {n} x {sum(widths.values())} Jacobian "
            f"entries exceed max_elements={max_elements}"
        )
        return []
    cols = jax.jit(
        lambda z: jax.vmap(jax.linearize(f, z)[1])(_basis(n, d_in, z.shape[1:], z.dtype))
    )(x)  # key -> (D, n, m)
    rows = []
    for k in keys:
        if k not in cols:
            continue
        fro, spec = gram_norms(np.asarray(cols[k]).transpose(1, 2, 0))
        rows.append({"layer": k, **_summary(fro, spec)})
    return rows


def _layer_to_output(apply_fn, params, x, shapes, max_elements, notes) -> list[dict]:
    n = x.shape[0]
    keys = [k for k, s in shapes.items() if s.shape[0] % n == 0]
    for k in shapes:
        if k not in keys:
            notes.append(f"layer_to_output skipped {k}: {shapes[k].shape[0]} rows for {n} examples")
    p = jax.eval_shape(apply_fn, params, x).shape[1]
    if p * sum(int(np.prod(s.shape)) for s in shapes.values()) > max_elements:
        notes.append(f"layer_to_output skipped: more than max_elements={max_elements} entries")
        return []

    @jax.jit
    def run(x):
        e0 = {k: jnp.zeros(s.shape, s.dtype) for k, s in shapes.items()}
        u, g_vjp = jax.vjp(lambda e: apply_fn.tapped(params, x, e)[0], e0)
        cts = jnp.broadcast_to(jnp.eye(p, dtype=u.dtype)[:, None, :], (p, n, p))
        grads = jax.vmap(g_vjp)(cts)[0]  # key -> (p, S, d)
        return {k: grads[k].reshape(p, n, -1) for k in keys}

    grads = run(x)
    rows = []
    for k in keys:
        fro, spec = gram_norms(np.asarray(grads[k]).transpose(1, 0, 2))
        rows.append({"layer": k, **_summary(fro, spec)})
    return rows


def jacobian_norms(
    apply_fn,
    params,
    x: jax.Array,
    *,
    key: jax.Array | None = None,
    num_iters: int = 50,
    per_layer: bool = True,
    max_elements: int = 2**24,
) -> dict[str, Any]:
    """Jacobian norms of ``apply_fn`` at ``params`` on the batch ``x`` (see the module docstring).

    Args:
      apply_fn, params: the model; examples must be independent.
      x: ``(n, ...)`` inputs (float for the input Jacobians; integer tokens skip them).
      key: PRNG key of the power iteration's start; num_iters: its iterations.
      per_layer: also the per-layer Jacobians (else only ``end_to_end``).
      max_elements: per-layer Jacobians with more entries than this are skipped (noted).

    Returns:
      ``{"end_to_end": {frobenius, spectral, spectral_max} | None, "input_to_layer": [{"layer",
      ...}], "layer_to_output": [{"layer", ...}], "notes": [str]}``, layers in call order.
    """
    if jnp.ndim(x) < 1 or jnp.shape(x)[0] < 1:
        raise ValueError(f"x must be a batch (n, ...), got shape {jnp.shape(x)}")
    x = jnp.asarray(x)
    out: dict[str, Any] = {
        "end_to_end": None,
        "input_to_layer": [],
        "layer_to_output": [],
        "notes": [],
    }
    float_in = jnp.issubdtype(x.dtype, jnp.floating)
    if float_in:
        fro, spec = per_example_norms(
            lambda z: apply_fn(params, z), x, key=key, num_iters=num_iters
        )
        out["end_to_end"] = _summary(fro, spec)
    else:
        out["notes"].append(f"{x.dtype} inputs (tokens): no input Jacobian")
    if not per_layer:
        return out
    if not callable(getattr(apply_fn, "tapped", None)):
        out["notes"].append("apply_fn has no dense-layer taps: no per-layer Jacobians")
        return out
    order, shapes = tape_layout(apply_fn, params, x)
    keys = [k for k in order if shapes[k].shape[0] % x.shape[0] == 0]
    if float_in:
        out["input_to_layer"] = _input_to_layer(
            apply_fn, params, x, keys, max_elements, out["notes"]
        )
    out["layer_to_output"] = _layer_to_output(
        apply_fn, params, x, shapes, max_elements, out["notes"]
    )
    return out
