r"""The activation zoo: elementwise nonlinearities and the gated (GLU) family.

Elementwise: ``relu``, ``gelu`` (exact, :math:`x\,\Phi(x)`), ``silu``/``swish``
(:math:`x\,\sigma(\beta x)`), ``sigmoid``, ``tanh``, ``softplus`` (:math:`\log(1 + e^x)`) and
``identity`` (alias ``linear``).

Gated, after Shazeer (2020), "GLU Variants Improve Transformer", arXiv:2002.05202: the layer before
a gated activation projects to ``2 * width`` features :math:`h = [a, b]` and the activation returns
:math:`g(a) \odot b` with gate :math:`g` = sigmoid (``glu``), relu (``reglu``), gelu (``geglu``) or
swish (``swiglu``). Gated entries of :data:`ACTIVATIONS` therefore halve the last axis.

``β`` of the swish family (``silu``, ``swish``, ``swiglu``) is fixed by :func:`get_activation`;
the registry entries use ``β = 1``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Activation = Callable[[jax.Array], jax.Array]


def _gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


def _swish(beta: float) -> Activation:
    if beta == 1.0:
        return jax.nn.silu
    return lambda x: x * jax.nn.sigmoid(beta * x)


def _identity(x: jax.Array) -> jax.Array:
    return x


def _gated(gate: Activation) -> Activation:
    def gated(h: jax.Array) -> jax.Array:
        # Slices, not jnp.split: neural-tangents' structured derivatives reject multi-output
        # primitives such as ``split``.
        w = h.shape[-1] // 2
        if h.shape[-1] != 2 * w:
            raise ValueError(f"a gated activation needs an even last axis, got {h.shape}")
        return gate(h[..., :w]) * h[..., w:]

    return gated


_ELEMENTWISE: dict[str, Activation] = {
    "relu": jax.nn.relu,
    "gelu": _gelu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "identity": _identity,
    "linear": _identity,
}
# name -> gate g in g(a) * b
_GATES: dict[str, Activation] = {
    "glu": jax.nn.sigmoid,
    "reglu": jax.nn.relu,
    "geglu": _gelu,
    "swiglu": jax.nn.silu,
}
_SWISH_FAMILY = frozenset({"silu", "swish", "swiglu"})

#: Every activation by name. Gated entries map ``(..., 2w) -> (..., w)``. Its keys are
#: :data:`dyntheory.names.ACTIVATIONS` (configs check names there, without JAX).
ACTIVATIONS: dict[str, Activation] = {
    **_ELEMENTWISE,
    **{name: _gated(gate) for name, gate in _GATES.items()},
}
#: Names of the gated activations (their layer projects to twice the width).
GATED_ACTIVATIONS: frozenset[str] = frozenset(_GATES)


def get_activation(name: str, *, beta: float = 1.0) -> Activation:
    r"""The activation called ``name``; ``beta`` is swish's β in :math:`x\,\sigma(\beta x)`.

    Raises:
      ValueError: unknown ``name`` (the message lists the known ones), or ``beta != 1`` for an
        activation outside the swish family.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    if beta != 1.0 and name not in _SWISH_FAMILY:
        raise ValueError(
            f"beta={beta} only applies to the swish family {sorted(_SWISH_FAMILY)}, not {name!r}"
        )
    if name in _GATES:
        gate = _swish(beta) if name == "swiglu" else _GATES[name]
        return _gated(gate)
    if name in ("silu", "swish"):
        return _swish(beta)
    return ACTIVATIONS[name]


def is_gated(name: str) -> bool:
    """Whether ``name`` is a gated activation (its input has twice the output width)."""
    return name in GATED_ACTIVATIONS
