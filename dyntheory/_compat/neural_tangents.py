"""The one place dyntheory imports neural-tangents (0.6.5), patched to run on jax 0.9.2.

neural-tangents 0.6.5 was written against jax ~0.4.30. Later jax releases moved or removed some
of the internals it reaches into; this module puts back exactly those names before importing it,
and nothing more. Every patch only *adds* a missing name; an attribute that exists is never
overwritten, so on a jax that still has the old names these patches are no-ops. The one
replacement is neural-tangents' own private FLOP counter (last item).

What neural-tangents touches, and why each patch exists (measured on jax 0.9.2):

- ``jax.core.{Jaxpr, Var, Literal, JaxprEqn, Primitive, ClosedJaxpr}``: imported at module level
  by ``_src/empirical.py`` and ``_src/utils/rules.py`` (the STRUCTURED_DERIVATIVES interpreter
  walks jaxprs). jax moved them to ``jax.extend.core``; they are aliased back onto ``jax.core``.
- ``jax.util.safe_map / safe_zip``: ``_src/empirical.py`` does ``from jax.util import safe_map as
  map``. The public ``jax.util`` module is gone in 0.9; if it is missing a small module holding the
  two functions (from ``jax._src.util``) is registered as ``jax.util``.
- ``jax.interpreters.ad.source_info_util``: the structured backward pass calls
  ``ad.source_info_util.transform_name_stack / current_name_stack / user_context``; ``ad`` no
  longer re-exports it, so ``jax._src.source_info_util`` is attached.
- ``jax.interpreters.ad.config``: read as ``ad.config.jax_enable_checks``; ``jax.config`` is
  attached. (With ``jax_enable_checks=True`` neural-tangents still fails: it then calls
  ``jax.core.lattice_join``, which no longer exists. Leave checks off when using it.)
- ``jax.core.DShapedArray``: dynamic-shape arrays were removed; neural-tangents only asks
  ``type(aval) is core.DShapedArray``, so a class nothing is an instance of keeps that ``False``.
- ``jax.interpreters.ad.zeros_like_p``: removed primitive that ``_src/utils/rules.py`` uses as a
  key in its rule tables; a fresh, never-bound ``Primitive("zeros_like")`` keeps the tables valid
  (no jaxpr can contain it, so its rules are never looked up).
- ``neural_tangents.experimental``: imported by the package ``__init__`` and needs TensorFlow
  (the reason the package is installed with ``--no-deps``). A stub module is put in
  ``sys.modules`` first, so TensorFlow is never imported; touching its contents raises an error
  that says why.
- ``neural_tangents._src.empirical._get_flops`` (used by ``NtkImplementation.AUTO`` to pick the
  cheapest implementation) indexes ``Compiled.cost_analysis()[0]``; jax now returns a dict, not a
  list of dicts. It is replaced by a version that accepts both.
- ``ad.primitive_transposes[lax.slice_p / lax.dynamic_slice_p]``: the STRUCTURED_DERIVATIVES
  backward pass calls ``ad.get_primitive_transpose(prim)(ct, *invals, **params)``, the old
  ``ct -> [operand_ct]`` rule form. jax 0.9 moved these two primitives to the new accumulator form
  (``ad.fancy_transposes``), so any model that slices (gated activations split their pre-activation,
  attention splits heads) failed with ``NotImplementedError: Transpose rule (for reverse-mode
  differentiation) for 'slice' not implemented``. Rules of the old form are added for both:
  zero-padding the cotangent for ``slice`` and ``dynamic_update_slice`` into zeros for
  ``dynamic_slice`` (the same maps jax uses).

With these, all four ``NtkImplementation``s (JACOBIAN_CONTRACTION, NTK_VECTOR_PRODUCTS,
STRUCTURED_DERIVATIVES, AUTO) run and agree with a plain Jacobian contraction
(``tests/test_compat.py``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

NT_VERSION = "0.6.5"

INSTALL_HINT = (
    f"neural-tangents {NT_VERSION} is not installed. Install it without its TensorFlow "
    f"dependencies:  pip install --no-deps neural-tangents=={NT_VERSION} frozendict  "
    "(or run  bash scripts/setup.sh , which does this)."
)

_nt_module: types.ModuleType | None = None  # the patched module, once imported


class _NeverDShapedArray:
    """Stand-in for the removed ``jax.core.DShapedArray``: no value is ever of this type."""


def _add_missing(obj: Any, name: str, value: Any) -> None:
    """``setattr`` only when ``obj`` lacks ``name``: never overwrite what jax provides."""
    if not hasattr(obj, name):
        setattr(obj, name, value)


def _patch_jax() -> None:
    """Put back the jax names neural-tangents 0.6.5 needs (idempotent, add-only)."""
    import jax
    import jax._src.source_info_util as source_info_util
    import jax._src.util as jax_src_util
    import jax.core
    import jax.extend.core as jex_core
    from jax.interpreters import ad

    for name in ("Jaxpr", "Var", "Literal", "JaxprEqn", "Primitive", "ClosedJaxpr"):
        _add_missing(jax.core, name, getattr(jex_core, name))
    _add_missing(jax.core, "DShapedArray", _NeverDShapedArray)

    try:
        util = importlib.import_module("jax.util")
    except ImportError:
        util = types.ModuleType("jax.util", "safe_map/safe_zip restored for neural-tangents.")
        sys.modules["jax.util"] = util
        _add_missing(jax, "util", util)
    _add_missing(util, "safe_map", jax_src_util.safe_map)
    _add_missing(util, "safe_zip", jax_src_util.safe_zip)

    _add_missing(ad, "source_info_util", source_info_util)
    _add_missing(ad, "config", jax.config)
    if not hasattr(ad, "zeros_like_p"):
        ad.zeros_like_p = jex_core.Primitive("zeros_like")


def _slice_transpose(ct, operand, *, start_indices, limit_indices, strides):
    """Old-form transpose of ``lax.slice``: scatter ``ct`` back into zeros by padding."""
    import numpy as np
    from jax import lax
    from jax._src import ad_util
    from jax.interpreters import ad

    assert ad.is_undefined_primal(operand)
    shape = operand.aval.shape
    if type(ct) is ad_util.Zero:
        return [ad_util.Zero(operand.aval)]
    strides = (1,) * len(shape) if strides is None else tuple(strides)
    # the extent actually covered along each axis: last element taken, plus one
    taken = np.where(np.array(ct.shape) == 0, 0, 1 + (np.array(ct.shape) - 1) * strides)
    high = np.subtract(shape, np.add(start_indices, taken))
    pads = list(zip(start_indices, high, np.subtract(strides, 1), strict=True))
    out = lax.pad(ct, lax.full((), 0, ct.dtype), pads)
    assert out.shape == shape, (out.shape, shape)
    return [out]


def _dynamic_slice_transpose(ct, operand, *start_indices, slice_sizes):
    """Old-form transpose of ``lax.dynamic_slice``: ``ct`` written into zeros at the start."""
    from jax import lax
    from jax._src import ad_util
    from jax.interpreters import ad

    assert ad.is_undefined_primal(operand)
    if type(ct) is ad_util.Zero:
        return [ad_util.Zero(operand.aval)] + [None] * len(start_indices)
    zeros = lax.full(operand.aval.shape, 0, operand.aval.dtype)
    return [lax.dynamic_update_slice(zeros, ct, start_indices)] + [None] * len(start_indices)


def _patch_transposes() -> None:
    """Add old-form transpose rules for ``slice``/``dynamic_slice`` where jax has none."""
    from jax import lax
    from jax.interpreters import ad

    ad.primitive_transposes.setdefault(lax.slice_p, _slice_transpose)
    ad.primitive_transposes.setdefault(lax.dynamic_slice_p, _dynamic_slice_transpose)


def _experimental_stub() -> types.ModuleType:
    """A stand-in for the TensorFlow-only ``neural_tangents.experimental``."""
    stub = types.ModuleType(
        "neural_tangents.experimental",
        "Stub installed by dyntheory._compat: the real module needs TensorFlow.",
    )

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"neural_tangents.experimental.{name} is unavailable: dyntheory stubs the "
            "TensorFlow-only neural_tangents.experimental module (see "
            "dyntheory/_compat/neural_tangents.py)."
        )

    stub.__getattr__ = __getattr__
    return stub


def _get_flops(f, optimize: bool, *a, **kw) -> float:
    """neural-tangents' FLOP counter, accepting ``cost_analysis()`` as a dict or a list of dicts."""
    import jax

    lowered = jax.jit(f).lower(*a, **kw)
    analysis = lowered.compile().cost_analysis() if optimize else lowered.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0]
    return analysis["flops"]


def import_neural_tangents() -> types.ModuleType:
    """Return the ``neural_tangents`` module, patched for the installed jax (cached).

    Raises:
      ImportError: neural-tangents is not installed; the message says how to install it.
    """
    global _nt_module
    if _nt_module is not None:
        return _nt_module
    try:
        spec = importlib.util.find_spec("neural_tangents")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ImportError(INSTALL_HINT)

    _patch_jax()
    _patch_transposes()
    if "neural_tangents.experimental" not in sys.modules:
        sys.modules["neural_tangents.experimental"] = _experimental_stub()
    try:
        nt = importlib.import_module("neural_tangents")
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] == "neural_tangents":
            raise ImportError(INSTALL_HINT) from e
        raise ImportError(
            f"neural-tangents {NT_VERSION} is installed but failed to import ({e}). Its one "
            "runtime dependency beyond jax is frozendict:  pip install frozendict"
        ) from e
    _add_missing(nt, "experimental", sys.modules["neural_tangents.experimental"])

    from neural_tangents._src import empirical

    empirical._get_flops = _get_flops
    _nt_module = nt
    return nt
