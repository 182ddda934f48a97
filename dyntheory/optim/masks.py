r"""The population-risk gates of PRM (paper Sec. 6, Algorithm 1).

A gate turns the bias-corrected squared mean gradient :math:`\hat m^2` and the bias-corrected
gradient variance :math:`\hat s` of each coordinate into a factor :math:`q \in [0, 1]` that
multiplies Adam's direction. All three compare the coherent signal :math:`\hat m^2` with the
noise :math:`\alpha \hat s` (paper Thm 6.5: a coordinate lowers the population risk to first order
iff :math:`\mu_k^2 > \Sigma_{B,k}/(b-1)`):

.. math::

  \text{hard:}\quad q = \mathbb 1[\hat m^2 > \alpha \hat s] \qquad
  \text{soft:}\quad q = \frac{\delta}{\delta + \lambda \hat s + \varepsilon},\;
    \delta = \max(\hat m^2 - \alpha \hat s, 0) \qquad
  \text{snr:}\quad q = \frac{\hat m^2}{\hat m^2 + \lambda \alpha \hat s + \varepsilon}

with :math:`\lambda` the ``softness``. ``snr`` never shuts fully and equals ½ on the boundary
:math:`\hat m^2 = \hat s` when :math:`\lambda = \alpha = 1` (and :math:`\varepsilon = 0`; the
default :math:`\varepsilon = 10^{-8}` moves it by :math:`\varepsilon / (2 \hat m^2)`).

Every function here is elementwise over arrays, takes ``alpha``, ``softness`` and ``eps`` as
values (Python numbers or traced arrays, so they can be changed under
:func:`optax.inject_hyperparams` without recompiling) and keeps the dtype of ``m2``. Concrete
values (Python numbers, NumPy scalars, concrete JAX arrays) must be finite and >= 0, else
``ValueError``; traced values are not checked.

References:
  E. Litman and G. Guo, "A Theory of Generalization in Deep Learning", arXiv:2605.01172,
  Sec. 6, Algorithm 1, Thm 6.5 and App. F.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from dyntheory.optim._checks import check_choice, check_range

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def _check_gate_args(alpha: ArrayLike, softness: ArrayLike, eps: ArrayLike) -> None:
    for name, value in (("alpha", alpha), ("softness", softness), ("eps", eps)):
        check_range(name, value, 0.0)


def hard_gate(m2: Array, s: Array, *, alpha: ArrayLike, softness: ArrayLike, eps: ArrayLike):
    r"""``q = 1[m̂² > α ŝ]``: update a coordinate only where signal beats noise (Thm 6.5).

    ``softness`` and ``eps`` enter no formula here; they are accepted (and checked) so that every
    gate has the same signature. A tie ``m̂² = α ŝ`` is closed; at ``t = 1`` with ``α = 1`` every
    coordinate sits on that tie up to rounding (``m̂² = ŝ = g²``), which is what ``warmup_steps``
    is for.
    """
    _check_gate_args(alpha, softness, eps)
    return (m2 > alpha * s).astype(m2.dtype)


def soft_gate(m2: Array, s: Array, *, alpha: ArrayLike, softness: ArrayLike, eps: ArrayLike):
    r"""``q = δ / (δ + λ ŝ + ε)`` with ``δ = max(m̂² − α ŝ, 0)``: zero wherever ``hard`` is."""
    _check_gate_args(alpha, softness, eps)
    delta = jnp.maximum(m2 - alpha * s, 0)
    return delta / (delta + softness * s + eps)


def snr_gate(m2: Array, s: Array, *, alpha: ArrayLike, softness: ArrayLike, eps: ArrayLike):
    r"""``q = m̂² / (m̂² + λ α ŝ + ε)``: a signal-to-noise ratio that never shuts completely."""
    _check_gate_args(alpha, softness, eps)
    return m2 / (m2 + softness * alpha * s + eps)


GATES: dict[str, Callable[..., Array]] = {"snr": snr_gate, "soft": soft_gate, "hard": hard_gate}
REDUCTIONS = ("per_parameter", "per_tensor")


def paired_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """``(sum(a), sum(b))`` in one pass over memory (a single variadic reduce), in float32 or wider.

    Two ``jnp.sum`` calls make XLA:CPU materialize their inputs for two separate reductions; one
    variadic reduce lets it fuse the elementwise producers into a single loop.
    """
    acc = jnp.promote_types(jnp.promote_types(a.dtype, b.dtype), jnp.float32)
    zero = jnp.zeros((), acc)
    return jax.lax.reduce(
        (a.astype(acc), b.astype(acc)),
        (zero, zero),
        lambda x, y: (x[0] + y[0], x[1] + y[1]),
        tuple(range(a.ndim)),
    )


def tensor_gate(
    m2: Array, s: Array, *, mask: str, alpha: ArrayLike, softness: ArrayLike, eps: ArrayLike
) -> Array:
    r"""The one ``q`` (a scalar) of ``reduction="per_tensor"`` for a tensor.

    The mask applied to the tensor's arithmetic means ``mean(m̂²)`` and ``mean(ŝ)`` over all its
    elements. [ours] The paper says "the tensor's mean m̂² and mean ŝ" without more: we take the
    mean of m̂² (not the square of the mean m̂, which would cancel signs), unweighted over every
    element, accumulated in at least float32 so that large bfloat16 tensors are not summed in 8 bits
    of mantissa. The result has that accumulation dtype.
    """
    check_choice("mask", mask, tuple(GATES))
    total_m2, total_s = paired_sum(m2, s)
    n = max(m2.size, 1)
    return GATES[mask](total_m2 / n, total_s / n, alpha=alpha, softness=softness, eps=eps)


def gate(
    m2: Array,
    s: Array,
    *,
    mask: str,
    reduction: str,
    alpha: ArrayLike,
    softness: ArrayLike,
    eps: ArrayLike,
) -> Array:
    r"""The gate ``q`` for one tensor (one pytree leaf), shaped like ``m2`` and in its dtype.

    ``reduction="per_parameter"`` applies the mask elementwise; ``reduction="per_tensor"`` applies
    it once to the leaf's means (:func:`tensor_gate`) and broadcasts that ``q`` to the leaf's shape.
    """
    check_choice("mask", mask, tuple(GATES))
    check_choice("reduction", reduction, REDUCTIONS)
    if reduction == "per_parameter":
        return GATES[mask](m2, s, alpha=alpha, softness=softness, eps=eps).astype(m2.dtype)
    q = tensor_gate(m2, s, mask=mask, alpha=alpha, softness=softness, eps=eps)
    return jnp.broadcast_to(q.astype(m2.dtype), m2.shape)
