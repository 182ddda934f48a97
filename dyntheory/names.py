"""The names of the library's choices, as plain tuples: an experiment's config validates a name
against them without loading JAX (``dyntheory list`` reads every config).

- :data:`ACTIVATIONS`: the keys of :data:`dyntheory.models.activations.ACTIVATIONS`, in order;
- :data:`FEATURE_MAPS`: the random-feature maps of :func:`dyntheory.randfeat.features`.
"""

from __future__ import annotations

ACTIVATIONS = (
    "relu",
    "gelu",
    "silu",
    "swish",
    "sigmoid",
    "tanh",
    "softplus",
    "identity",
    "linear",
    "glu",
    "reglu",
    "geglu",
    "swiglu",
)
FEATURE_MAPS = ("relu", "fourier")

__all__ = ["ACTIVATIONS", "FEATURE_MAPS"]
