"""Flax nnx models and the pure ``(apply_fn, params)`` view of them.

- :class:`MLP` (activation zoo, LayerNorm/DyT, residual), :class:`EmbedMLP` (modular arithmetic),
  :class:`CNN`, :class:`Transformer` (decoder-only, causal, last-position logits).
- :func:`functional` -> ``(apply_fn, params)``; :func:`abstract` (the same, params as shapes,
  nothing initialized); :func:`count_params`.
- :data:`ACTIVATIONS` (name -> function), :func:`get_activation`, :class:`DyT`, :class:`Linear`
  (the dense layer with the tap the structured NTK reads).
"""

from dyntheory.models.activations import (
    ACTIVATIONS,
    GATED_ACTIVATIONS,
    get_activation,
    is_gated,
)
from dyntheory.models.cnn import CNN
from dyntheory.models.functional import ApplyFn, DenseLayer, abstract, count_params, functional
from dyntheory.models.layers import NORMS, DyT, Linear, make_norm
from dyntheory.models.mlp import MLP, EmbedMLP
from dyntheory.models.transformer import Transformer

__all__ = [
    "ACTIVATIONS",
    "CNN",
    "GATED_ACTIVATIONS",
    "NORMS",
    "MLP",
    "ApplyFn",
    "DenseLayer",
    "DyT",
    "EmbedMLP",
    "Linear",
    "Transformer",
    "count_params",
    "abstract",
    "functional",
    "get_activation",
    "is_gated",
    "make_norm",
]
