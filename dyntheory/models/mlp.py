r"""Multilayer perceptron with the activation zoo, and the embedding MLP for modular arithmetic.

Hidden layer :math:`\ell` (pre-norm, so a norm sits *between* consecutive dense layers):

.. math::  z_\ell = \phi\big(W_\ell\,\mathrm{norm}_{\ell-1}(h_{\ell-1}) + b_\ell\big), \qquad
           h_\ell = h_{\ell-1} + z_\ell \text{ (residual, when widths match) else } z_\ell,

with no norm on the raw input (:math:`\ell = 1`) and a norm before the readout
:math:`f(x) = W_{\rm out}\,\mathrm{norm}_L(h_L) + b_{\rm out}`. A gated :math:`\phi` (glu, reglu,
geglu, swiglu) makes :math:`W_\ell` project to twice the width. ``hidden=()`` is the linear model
:math:`f(x) = W x + b`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from dyntheory.models.activations import get_activation, is_gated
from dyntheory.models.layers import Linear, check_norm, make_norm


def _widths(hidden: int | Sequence[int]) -> tuple[int, ...]:
    return (hidden,) if isinstance(hidden, int) else tuple(int(h) for h in hidden)


class MLP(nnx.Module):
    """``(n, in_features) -> (n, out_features)``.

    Args:
      in_features, hidden, out_features: layer widths; ``hidden`` an int or a sequence (``()``
        gives a linear model).
      activation: a name in :data:`dyntheory.models.ACTIVATIONS`.
      norm: ``None``, ``"layernorm"`` or ``"dyt"``, applied between layers and before the readout.
      residual: add a skip connection around each hidden layer whose input and output widths match.
      beta: swish's β (``silu``/``swish``/``swiglu`` only).
      dtype: parameter and compute dtype.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int | Sequence[int],
        out_features: int,
        *,
        activation: str = "relu",
        norm: str | None = None,
        residual: bool = False,
        beta: float = 1.0,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        hidden = _widths(hidden)
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.act = get_activation(activation, beta=beta)
        check_norm(norm)
        gate = 2 if is_gated(activation) else 1
        d_in = (in_features, *hidden)[: len(hidden)]
        self.layers = nnx.List(
            [Linear(a, gate * b, dtype=dtype, rngs=rngs) for a, b in zip(d_in, hidden, strict=True)]
        )
        self.skips = tuple(residual and a == b for a, b in zip(d_in, hidden, strict=True))
        self.norms = (
            nnx.List([make_norm(norm, h, dtype=dtype, rngs=rngs) for h in hidden])
            if norm is not None
            else None
        )
        self.readout = Linear(
            hidden[-1] if hidden else in_features, out_features, dtype=dtype, rngs=rngs
        )

    def features(self, x: jax.Array) -> jax.Array:
        """The last hidden layer after its norm, ``(n, hidden[-1])`` (the readout's input)."""
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"MLP expects inputs (..., {self.in_features}), got shape {tuple(x.shape)}"
            )
        h = x
        for i, (layer, skip) in enumerate(zip(self.layers, self.skips, strict=True)):
            u = h if i == 0 or self.norms is None else self.norms[i - 1](h)
            z = self.act(layer(u))
            h = h + z if skip else z
        if self.norms is not None and len(self.norms):
            h = self.norms[-1](h)
        return h

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.readout(self.features(x))


class EmbedMLP(nnx.Module):
    r"""Token embedding then an :class:`MLP`: ``(n, n_tokens) int -> (n, out_features)``.

    For modular arithmetic :math:`(a, b) \mapsto a \circ b \bmod q`: one embedding table shared by
    all token slots, the ``n_tokens`` embeddings concatenated into the MLP input. ``out_features``
    defaults to ``vocab_size``. The other keyword arguments go to :class:`MLP`.
    """

    def __init__(
        self,
        vocab_size: int,
        out_features: int | None = None,
        *,
        n_tokens: int = 2,
        embed_dim: int = 128,
        hidden: int | Sequence[int] = (512,),
        activation: str = "relu",
        norm: str | None = None,
        residual: bool = False,
        beta: float = 1.0,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.vocab_size = vocab_size
        self.n_tokens = n_tokens
        self.embed = nnx.Embed(vocab_size, embed_dim, param_dtype=dtype, dtype=dtype, rngs=rngs)
        self.mlp = MLP(
            n_tokens * embed_dim,
            hidden,
            vocab_size if out_features is None else out_features,
            activation=activation,
            norm=norm,
            residual=residual,
            beta=beta,
            dtype=dtype,
            rngs=rngs,
        )

    def __call__(self, tokens: jax.Array) -> jax.Array:
        if tokens.ndim != 2 or tokens.shape[1] != self.n_tokens:
            raise ValueError(
                f"EmbedMLP expects integer tokens (n, {self.n_tokens}), got shape "
                f"{tuple(tokens.shape)}"
            )
        e = self.embed(tokens)
        return self.mlp(e.reshape(e.shape[0], -1))
