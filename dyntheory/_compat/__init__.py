"""Compatibility shims for third-party packages pinned to older jax releases.

``neural_tangents`` is imported only through :func:`import_neural_tangents`.
"""

from dyntheory._compat.neural_tangents import import_neural_tangents

__all__ = ["import_neural_tangents"]
