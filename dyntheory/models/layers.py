r"""Building blocks: a dense layer with an NTK tap point, DyT, and the norm factory.

**Taps.** :class:`Linear` computes :math:`Z = A W + b` and then calls :func:`tap`. Outside a
:func:`recording` context the tap returns :math:`Z` unchanged (no cost after tracing). Inside one,
the active :class:`Tape`

- records :math:`A` as rows ``(S, d_in)`` (all leading axes flattened; repeated calls of the same
  layer, e.g. weight sharing, are concatenated in call order), and
- adds a perturbation :math:`E` ``(S, d_out)`` to :math:`Z` when one is given, so that
  :math:`\partial f / \partial E` at :math:`E = 0` is the output sensitivity :math:`\Delta` of the
  layer.

That is all the structured NTK (``dyntheory._ntk_structured``) needs: the layer's Jacobian block is
:math:`\partial f/\partial W_{kl} = \sum_s A_{sk} \Delta_{sl}`. Layers are identified by their path
in the params dict (``"blocks/0/mlp_in"``); :class:`dyntheory.models.functional.ApplyFn` builds
that map and runs the model under a tape.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from flax import nnx

NORMS = ("layernorm", "dyt", None)


class Tape:
    """What one traced forward pass records at the :class:`Linear` tap points.

    Attributes:
      keys: ``id(module) -> layer key`` for the tapped layers of the model being run.
      perturbations: ``key -> (S, d_out)`` added to the layer outputs, or ``None`` (record only).
      inputs: ``key -> list of (rows, d_in)`` inputs, in call order.
      outputs: ``key -> (d_out, dtype)`` of the layer's output.
    """

    def __init__(self, keys: dict[int, str], perturbations: dict[str, jax.Array] | None = None):
        self.keys = keys
        self.perturbations = perturbations
        self.inputs: dict[str, list[jax.Array]] = {}
        self.outputs: dict[str, tuple[int, jnp.dtype]] = {}
        self._rows: dict[str, int] = {}

    def __call__(self, module: nnx.Module, x: jax.Array, z: jax.Array) -> jax.Array:
        key = self.keys.get(id(module))
        if key is None:  # a Linear that is not part of the model under this tape
            return z
        rows = x.reshape(-1, x.shape[-1])
        self.inputs.setdefault(key, []).append(rows)
        self.outputs[key] = (z.shape[-1], z.dtype)
        start = self._rows.get(key, 0)
        self._rows[key] = start + rows.shape[0]
        if self.perturbations is not None:
            z = z + self.perturbations[key][start : start + rows.shape[0]].reshape(z.shape)
        return z

    def stacked_inputs(self) -> dict[str, jax.Array]:
        """``key -> (S, d_in)``: every row each layer saw, calls concatenated."""
        return {k: jnp.concatenate(v, axis=0) for k, v in self.inputs.items()}

    def perturbation_shapes(self) -> dict[str, jax.ShapeDtypeStruct]:
        """``key -> (S, d_out)``: the perturbation each layer accepts (S rows seen in total)."""
        return {
            k: jax.ShapeDtypeStruct((self._rows[k], d), dtype)
            for k, (d, dtype) in self.outputs.items()
        }


_TAPE: contextvars.ContextVar[Tape | None] = contextvars.ContextVar("dyntheory_tape", default=None)


@contextlib.contextmanager
def recording(tape: Tape) -> Iterator[Tape]:
    """Run the enclosed forward pass under ``tape``."""
    token = _TAPE.set(tape)
    try:
        yield tape
    finally:
        _TAPE.reset(token)


def tap(module: nnx.Module, x: jax.Array, z: jax.Array) -> jax.Array:
    """Tap point: identity unless a :class:`Tape` is recording."""
    tape = _TAPE.get()
    return z if tape is None else tape(module, x, z)


def _bcast(v: jax.Array, ndim: int) -> jax.Array:
    """A feature vector ``(d,)`` shaped to broadcast against ``(..., d)`` without rank promotion."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


class Linear(nnx.Module):
    r"""Dense layer :math:`Z = A W + b` on the last axis, with a tap point (see module doc).

    ``kernel`` ``(d_in, d_out)`` is LeCun-normal, ``bias`` ``(d_out,)`` zero.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_features = in_features
        self.out_features = out_features
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (in_features, out_features), dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), dtype)) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        z = x @ self.kernel[...]
        if self.bias is not None:
            z = z + _bcast(self.bias[...], z.ndim)
        return tap(self, x, z)


class DyT(nnx.Module):
    r"""Dynamic tanh, :math:`\gamma \odot \tanh(\alpha x) + \beta`, a drop-in for LayerNorm.

    :math:`\alpha` is one learnable scalar (initialised to ``alpha0``), :math:`\gamma, \beta`
    learnable per-feature scale and shift (ones, zeros).

    References:
      Zhu, Chen, He, LeCun, Liu (2025), "Transformers without Normalization", arXiv:2503.10622.
    """

    def __init__(self, features: int, *, alpha0: float = 0.5, dtype=jnp.float32):
        self.alpha = nnx.Param(jnp.asarray(alpha0, dtype))
        self.scale = nnx.Param(jnp.ones((features,), dtype))
        self.shift = nnx.Param(jnp.zeros((features,), dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.tanh(self.alpha[...] * x)
        return _bcast(self.scale[...], x.ndim) * y + _bcast(self.shift[...], x.ndim)


def check_norm(name: str | None) -> None:
    """Raise ``ValueError`` (listing the allowed names) unless ``name`` is in :data:`NORMS`."""
    if name not in NORMS:
        raise ValueError(f"unknown norm {name!r}; choose one of {list(NORMS)}")


def make_norm(name: str | None, features: int, *, dtype, rngs: nnx.Rngs) -> nnx.Module | None:
    """``"layernorm"`` -> :class:`flax.nnx.LayerNorm`, ``"dyt"`` -> :class:`DyT`, ``None`` -> None.

    Raises:
      ValueError: any other name (the message lists the allowed ones).
    """
    check_norm(name)
    if name == "layernorm":
        return nnx.LayerNorm(features, dtype=dtype, param_dtype=dtype, rngs=rngs)
    if name == "dyt":
        return DyT(features, dtype=dtype)
    return None
