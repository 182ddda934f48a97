r"""The structured empirical NTK: per-layer Gram products instead of full Jacobians.

A dense layer :math:`Z = A W + b` applied to rows :math:`s = 1..S` of one example (one row per
token for a per-token layer, :math:`S = 1` for an MLP layer) has Jacobian block
:math:`\partial f_a(x_i)/\partial W_{kl} = \sum_s A_{isk}\,\Delta_{ia,sl}`, with
:math:`\Delta_{ia,s} = \partial f_a(x_i)/\partial Z_{is}` the backpropagated output sensitivity.
Its share of :math:`K = J J^\top` is therefore

.. math::  K^{W,b}_{ia,jb} = \sum_{s,t} \big(A_{is}\cdot A_{jt} + 1\big)\,
           \big(\Delta_{ia,s}\cdot\Delta_{jb,t}\big)

(the ``+ 1`` is the bias), i.e. :math:`(AA^\top + 1) \odot (\Delta\Delta^\top)` for
:math:`S = 1`. This never forms the :math:`(np, d_{in} d_{out})` Jacobian block. When
:math:`S^2(d_{in} + d_{out})` exceeds :math:`d_{in} d_{out}` the layer's Jacobian block
:math:`\sum_s A_s^\top \Delta_s` is formed and contracted instead (cheaper for long sequences).
Parameters outside tapped layers (norm scales, embeddings, DyT's α, conv kernels, ...) go through
the plain per-example Jacobian. Everything sums.

:math:`A` and :math:`\Delta` come from one per-example reverse pass: the model runs under a
:class:`~dyntheory.models.layers.Tape` with zero perturbations :math:`E` added to each tapped
layer's output, and :math:`\Delta = \partial f / \partial E` is read off together with the
Jacobian of the other parameters (``jax.jacrev`` over both, ``vmap`` over examples).

References:
  Novak, Sohl-Dickstein, Schoenholz (2022), "Fast Finite Width Neural Tangent Kernel",
  arXiv:2206.08720 (neural-tangents' STRUCTURED_DERIVATIVES).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import traverse_util


class Features(NamedTuple):
    """Per-example ingredients of the structured kernel of ``n`` examples with ``p`` outputs."""

    inputs: dict[str, jax.Array]  # key -> (n, S, d_in): rows the layer saw
    deltas: dict[str, jax.Array]  # key -> (n, p, S, d_out): df_a / dZ_s
    rest: dict[str, jax.Array]  # "a/b/c" -> (n, p, *shape): Jacobian of untapped params


def check_taps(apply_fn) -> None:
    """Raise ``ValueError`` unless ``apply_fn`` exposes dense-layer taps."""
    dense = getattr(apply_fn, "dense", None)
    if not callable(getattr(apply_fn, "tapped", None)) or dense is None:
        raise ValueError(
            f'implementation="structured" needs the dense-layer taps of an apply_fn built by '
            f"dyntheory.models.functional(model); got {apply_fn!r}, which has none (a wrapped or "
            f'hand-written function). Pass the ApplyFn itself, or use "jacobian"/"ntvp".'
        )
    if not dense:
        raise ValueError(
            f'implementation="structured" found no dyntheory.models.Linear layer in {apply_fn!r}: '
            f"its layers (e.g. flax.nnx.Linear, nnx.Conv) are not supported by the structured "
            f'path. Build the model from dyntheory.models.Linear or use "jacobian"/"ntvp".'
        )


def _split(apply_fn, params) -> tuple[dict, dict, dict]:
    """Flat ``(dense, rest, has_bias)``; ``rest`` keyed by ``"a/b/c"`` (sortable pytree keys)."""
    flat = traverse_util.flatten_dict(params)
    dense_paths = set()
    for layer in apply_fn.dense.values():
        dense_paths.add(layer.kernel)
        if layer.bias is not None:
            dense_paths.add(layer.bias)
    dense = {k: v for k, v in flat.items() if k in dense_paths}
    rest = {"/".join(map(str, k)): v for k, v in flat.items() if k not in dense_paths}
    has_bias = {key: layer.bias is not None for key, layer in apply_fn.dense.items()}
    return dense, rest, has_bias


def features(apply_fn, params, x: jax.Array) -> Features:
    """:class:`Features` of the examples ``x`` ``(n, ...)``."""
    dense, rest, _ = _split(apply_fn, params)
    rest_paths = {"/".join(map(str, k)): k for k in traverse_util.flatten_dict(params)}

    def full(rest_flat):
        flat = dict(dense)
        flat.update({rest_paths[k]: v for k, v in rest_flat.items()})
        return traverse_util.unflatten_dict(flat)

    shapes: dict[str, jax.ShapeDtypeStruct] = {}

    def probe(xi):
        y, tape = apply_fn.tapped(params, xi[None])
        shapes.update(tape.perturbation_shapes())
        return y

    jax.eval_shape(probe, jax.ShapeDtypeStruct(x.shape[1:], x.dtype))
    n = x.shape[0]
    zeros = {k: jnp.zeros((n, *s.shape), s.dtype) for k, s in shapes.items()}

    def one(rest_flat, pert, xi):
        y, tape = apply_fn.tapped(full(rest_flat), xi[None], pert)
        return y[0], tape.stacked_inputs()

    jac = jax.jacrev(one, argnums=(0, 1), has_aux=True)
    (j_rest, deltas), inputs = jax.vmap(jac, in_axes=(None, 0, 0))(rest, zeros, x)
    return Features(inputs, deltas, j_rest)


def _gram(a: jax.Array, b: jax.Array) -> jax.Array:
    """``(n1, p, *s) x (n2, p, *s) -> (n1, p, n2, p)`` contraction over the trailing axes."""
    n1, p = a.shape[:2]
    n2 = b.shape[0]
    a = a.reshape(n1 * p, -1)
    b = b.reshape(n2 * p, -1)
    return (a @ b.T).reshape(n1, p, n2, p)


def _gram_trace(a: jax.Array, b: jax.Array) -> jax.Array:
    """``sum_a`` of :func:`_gram`'s diagonal output pairs: ``(n1, n2)``."""
    return jnp.einsum("iak,jak->ij", a.reshape(*a.shape[:2], -1), b.reshape(*b.shape[:2], -1))


def _layer(a1, d1, a2, d2, bias: bool, trace: bool) -> jax.Array:
    """One tapped layer's share of K: ``(n1, p, n2, p)``, or ``(n1, n2)`` if ``trace``."""
    S, d_in = a1.shape[1:]
    p, _, d_out = d1.shape[1:]
    if S == 1:
        ga = a1[:, 0] @ a2[:, 0].T + (1.0 if bias else 0.0)
        if trace:
            return ga * _gram_trace(d1, d2)
        return ga[:, None, :, None] * _gram(d1, d2)
    if S * S * (d_in + d_out) <= d_in * d_out:  # the Gram form is cheaper
        ga = jnp.einsum("isk,jtk->ijst", a1, a2) + (1.0 if bias else 0.0)
        spec = "ijst,iask,jatk->ij" if trace else "ijst,iask,jbtk->iajb"
        return jnp.einsum(spec, ga, d1, d2)
    # Form the layer's Jacobian block sum_s A_s^T Delta_s (and sum_s Delta_s for the bias).
    j1 = jnp.einsum("isk,iasl->iakl", a1, d1)
    j2 = jnp.einsum("isk,iasl->iakl", a2, d2)
    contract = _gram_trace if trace else _gram
    k = contract(j1, j2)
    if bias:
        k = k + contract(d1.sum(axis=2), d2.sum(axis=2))
    return k


def kernel_from_features(f1: Features, f2: Features, has_bias: dict[str, bool], trace: bool):
    """Sum of every tapped layer's share and the untapped parameters' ``J Jᵀ``."""
    k: Any = 0.0
    for key in f1.deltas:
        k = k + _layer(
            f1.inputs[key], f1.deltas[key], f2.inputs[key], f2.deltas[key], has_bias[key], trace
        )
    contract = _gram_trace if trace else _gram
    for name in f1.rest:
        k = k + contract(f1.rest[name], f2.rest[name])
    return k


def structured_kernel(apply_fn, params, x1, x2, trace: bool) -> jax.Array:
    """``(n1, p, n2, p)`` (or ``(n1, n2)`` summed over outputs); ``x2=None`` means ``x1``."""
    check_taps(apply_fn)
    _, _, has_bias = _split(apply_fn, params)
    if x2 is None:
        f1 = f2 = features(apply_fn, params, x1)
    else:  # one pass over both sets (one trace, one compiled program), then split
        f = features(apply_fn, params, jnp.concatenate([x1, x2]))
        n1 = x1.shape[0]
        f1 = jax.tree.map(lambda a: a[:n1], f)
        f2 = jax.tree.map(lambda a: a[n1:], f)
    return kernel_from_features(f1, f2, has_bias, trace)
