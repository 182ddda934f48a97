r"""Turn an nnx model into the pure pair ``(apply_fn, params)`` every other module consumes.

``params`` is the model's :class:`flax.nnx.Param` state as a nested dict of arrays (no
``Variable`` wrappers); ``apply_fn(params, x)`` rebuilds the model with :func:`flax.nnx.merge` and
calls it. The rebuild happens at trace time only, so under ``jit`` it costs nothing, and ``params``
may carry a leading ``vmap`` axis (an ensemble). Non-parameter state (none in the models here) is
captured as constants.

``apply_fn`` is an :class:`ApplyFn`; besides being called it exposes the dense-layer taps that the
structured NTK uses: :attr:`ApplyFn.dense` (layer key -> param paths) and :meth:`ApplyFn.tapped`
(forward pass recording each tapped layer's inputs and adding perturbations to its outputs; see
:mod:`dyntheory.models.layers`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from dyntheory.models.layers import Linear, Tape, recording

Params = dict[str, Any]


class DenseLayer(NamedTuple):
    """Where a tapped layer's parameters live in ``params``."""

    kernel: tuple  # path of the (d_in, d_out) kernel
    bias: tuple | None  # path of the (d_out,) bias, or None


def _key(path: tuple) -> str:
    return "/".join(str(p) for p in path)


class ApplyFn:
    """``apply_fn(params, x) -> model(x)`` (or ``getattr(model, method)(x)``), pure.

    Hashed by identity, so it can be a static argument of ``jax.jit``.

    Attributes:
      dense: ``layer key -> DenseLayer`` for every :class:`~dyntheory.models.layers.Linear` in the
        model (keys are the module paths joined by ``/``, e.g. ``"layers/0"``).
    """

    def __init__(self, graphdef: nnx.GraphDef, other: nnx.State, method: str | None, dense):
        self.graphdef = graphdef
        self.other = other
        self.method = method
        self.dense: dict[str, DenseLayer] = dense

    def _model(self, params: Params):
        return nnx.merge(self.graphdef, params, self.other)

    def _run(self, model, x):
        return model(x) if self.method is None else getattr(model, self.method)(x)

    def __call__(self, params: Params, x: jax.Array) -> jax.Array:
        return self._run(self._model(params), x)

    def tapped(
        self, params: Params, x: jax.Array, perturbations: dict[str, jax.Array] | None = None
    ) -> tuple[jax.Array, Tape]:
        """Forward pass under a :class:`~dyntheory.models.layers.Tape`.

        Returns ``(output, tape)``; ``tape.stacked_inputs()[key]`` is ``(S, d_in)``, every row
        layer ``key`` saw. ``perturbations[key]`` ``(S, d_out)``, if given, is added to the rows of
        that layer's output in the same order.
        """
        model = self._model(params)
        keys = {id(m): _key(path) for path, m in nnx.iter_modules(model) if isinstance(m, Linear)}
        with recording(Tape(keys, perturbations)) as tape:
            y = self._run(model, x)
        return y, tape

    def __repr__(self) -> str:
        name = self.graphdef.type.__name__ if hasattr(self.graphdef, "type") else "model"
        return f"ApplyFn({name}{'' if self.method is None else '.' + self.method})"


def functional(model: nnx.Module, method: str | None = None) -> tuple[ApplyFn, Params]:
    """Split ``model`` into ``(apply_fn, params)``.

    Args:
      model: any :class:`flax.nnx.Module`.
      method: call ``model.<method>(x)`` instead of ``model(x)`` (e.g. ``"hidden_states"``).

    Returns:
      ``apply_fn(params, x)`` and ``params``, a nested dict of the model's ``nnx.Param`` arrays.
      ``nnx.merge(apply_fn.graphdef, params, apply_fn.other)`` rebuilds the model.
    """
    graphdef, params, other = nnx.split(model, nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    dense = {}
    for path, m in nnx.iter_modules(model):
        if isinstance(m, Linear):
            dense[_key(path)] = DenseLayer(
                (*path, "kernel"), None if m.bias is None else (*path, "bias")
            )
    return ApplyFn(graphdef, other, method, dense), params


def abstract(build: Callable[[], nnx.Module], method: str | None = None) -> tuple[ApplyFn, Params]:
    """:func:`functional` of ``build()`` without running its initializers: ``(apply_fn, shapes)``,
    ``shapes`` the params as :class:`jax.ShapeDtypeStruct` (for :func:`count_params`, abstract
    evaluation and sharding). The same ``apply_fn`` as from a built model; nothing is computed or
    compiled. A model with non-parameter state (captured as constants) is built for real.
    """
    model = nnx.eval_shape(build)
    apply_fn, shapes = functional(model, method)
    if jax.tree.leaves(apply_fn.other):
        return functional(build(), method)
    return apply_fn, shapes


def count_params(tree: Any) -> int:
    """Number of scalar parameters of a params pytree or of an nnx model's ``nnx.Param`` state."""
    if isinstance(tree, nnx.Module):
        tree = nnx.state(tree, nnx.Param)
    return int(sum(np.prod(np.shape(x), dtype=np.int64) for x in jax.tree.leaves(tree)))
