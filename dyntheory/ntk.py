r"""Empirical neural tangent kernel :math:`K(x, x') = J(x)\,J(x')^\top`.

For ``apply_fn(params, x) -> (n, p)``, :math:`J = \partial U/\partial w` stacks the per-example,
per-output parameter gradients, so :func:`empirical_ntk` returns

- ``trace=False``: the full output-space kernel ``(n1*p, n2*p)``, **example-major**: row
  ``i*p + a`` is output ``a`` of example ``i`` (THEORY.md §1, ``K_SS`` / ``K_QS``);
- ``trace=True``: ``(n1, n2)``, the **sum** over outputs :math:`\sum_a K_{ia,ja}` (neural-tangents'
  ``trace_axes`` takes the mean instead).

Implementations (``implementation=``), all exact up to round-off, and when each is best:

- ``"jacobian"``: per-example Jacobians (``vmap`` of ``jacrev``), contracted leaf by leaf. Memory
  :math:`O(n p P)`; works for any ``apply_fn``. The trusted reference; best for small models.
- ``"ntvp"``: NTK-vector products: column ``(j, b)`` of K is :math:`J_1 (J_2^\top e_{jb})`, one
  per-example VJP then one JVP through the network linearized on ``x1`` (``jax.linearize``, so
  its forward pass is shared), over the examples of ``x2`` in chunks of at most
  :data:`NTVP_BYTES` of gradients. ``J`` is never materialized: memory :math:`O(pP)` per chunk
  example instead of :math:`O(npP)`, cost about :math:`n_2 p` backward plus :math:`n_2 p`
  forward-mode passes. Best when ``P`` is too large for per-example Jacobians (the ``"auto"``
  fallback), or for weight-shared layers (convolutions) with modest ``n2*p``.
- ``"structured"``: per-layer Gram products :math:`(AA^\top + 1)\odot(\Delta\Delta^\top)` from
  each dense layer's inputs :math:`A` and output sensitivities :math:`\Delta`, summed over token
  positions; other parameters through the Jacobian path (:mod:`dyntheory._ntk_structured`).
  Needs the taps of an ``apply_fn`` from :func:`dyntheory.models.functional`. Fastest for MLPs
  and short-sequence transformers: cost :math:`O(n^2p^2\sum_\ell d_\ell)` instead of
  :math:`O(n^2p^2P)`.
- ``"neural_tangents"``: neural-tangents' ``empirical_ntk_fn`` with STRUCTURED_DERIVATIVES (via
  :mod:`dyntheory._compat`), an external cross-check.
- ``"auto"``: ``"structured"`` when ``apply_fn`` has dense-layer taps, else ``"jacobian"`` if
  the per-example Jacobians fit in :data:`JACOBIAN_BYTES`, else ``"ntvp"``.

``block_size=b`` tiles K in ``b x b`` blocks of examples (the last block padded), evaluated one
after another with ``lax.map``, so peak memory is that of a ``(b, b)`` tile plus K itself; each
tile recomputes its examples' Jacobians/features. With ``x2=None`` only the upper block triangle
is computed and mirrored.

Everything is jitted (``apply_fn`` is a static argument, hashed by identity, so reuse the same
function object to hit the compile cache) and may be called inside ``jit``.

Taps: the structured path needs, for every dense layer, its inputs :math:`A` and the sensitivity
:math:`\Delta = \partial f/\partial Z` of its outputs. The models' dense layers are
:class:`dyntheory.models.Linear`, whose output passes a tap point; the
:class:`~dyntheory.models.ApplyFn` returned by :func:`dyntheory.models.functional` lists those
layers (``apply_fn.dense``) and can run the model under a tape (``apply_fn.tapped``) that records
:math:`A` and adds a zero perturbation :math:`E` to each :math:`Z`, so :math:`\Delta` is the
gradient with respect to :math:`E`. A plain function has no taps: ``"structured"`` then raises,
and ``"auto"`` uses the Jacobian paths.

References:
  Jacot, Gabriel, Hongler (2018), arXiv:1806.07572; Novak, Sohl-Dickstein, Schoenholz (2022),
  "Fast Finite Width Neural Tangent Kernel", arXiv:2206.08720.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from dyntheory import _ntk_structured

IMPLEMENTATIONS = ("auto", "jacobian", "ntvp", "structured", "neural_tangents")
#: ``"auto"`` falls back from ``"jacobian"`` to ``"ntvp"`` above this many bytes of Jacobians.
JACOBIAN_BYTES = 2**30
#: ``"ntvp"`` keeps at most about this many bytes of parameter-sized vectors alive at once.
NTVP_BYTES = 2**28

ApplyFn = Callable[[Any, jax.Array], jax.Array]


def _per_example(apply_fn: ApplyFn) -> Callable:
    """``f(params, x_i) -> (p,)`` on one example."""
    return lambda params, xi: apply_fn(params, xi[None])[0]


def _jacobians(apply_fn: ApplyFn, params, x: jax.Array) -> list[jax.Array]:
    """Per-example Jacobian leaves, each ``(n, p, size)``."""
    jac = jax.vmap(jax.jacrev(_per_example(apply_fn)), in_axes=(None, 0))(params, x)
    return [j.reshape(*j.shape[:2], -1) for j in jax.tree.leaves(jac)]


def _contract(j1: jax.Array, j2: jax.Array, trace: bool) -> jax.Array:
    if trace:
        return jnp.einsum("iak,jak->ij", j1, j2)
    n1, p, _ = j1.shape
    return (j1.reshape(n1 * p, -1) @ j2.reshape(j2.shape[0] * p, -1).T).reshape(
        n1, p, j2.shape[0], p
    )


def _k_jacobian(apply_fn, params, x1, x2, trace):
    if x2 is None:
        j1 = j2 = _jacobians(apply_fn, params, x1)
    else:  # one pass over both sets (one trace, one compiled program), then split
        j = _jacobians(apply_fn, params, jnp.concatenate([x1, x2]))
        j1, j2 = [a[: x1.shape[0]] for a in j], [a[x1.shape[0] :] for a in j]
    return sum(_contract(a, b, trace) for a, b in zip(j1, j2, strict=True))


def _k_ntvp(apply_fn, params, x1, x2, trace):
    x2 = x1 if x2 is None else x2
    y1, jvp1 = jax.linearize(lambda w: apply_fn(w, x1), params)
    p = y1.shape[1]
    f = _per_example(apply_fn)

    def columns(xj):  # K[:, :, j, :] = J1 (J2^T e_jb) for every b, shape (p, n1, p)
        _, vjp = jax.vjp(lambda w: f(w, xj), params)
        grads = jax.vmap(lambda e: vjp(e)[0])(jnp.eye(p, dtype=y1.dtype))
        return jax.vmap(jvp1)(grads)

    # Examples of x2 in chunks, so at most `chunk * p` parameter-sized vectors live at once.
    n_params = sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(params))
    chunk = max(1, NTVP_BYTES // max(1, p * n_params))
    if chunk >= x2.shape[0]:
        cols = jax.vmap(columns)(x2)  # (n2, p, n1, p): cols[j, b, i, a]
    else:
        cols = lax.map(columns, x2, batch_size=chunk)
    if trace:
        return jnp.einsum("jbib->ij", cols)
    return cols.transpose(2, 3, 0, 1)


def _k_neural_tangents(apply_fn, params, x1, x2, trace):
    from dyntheory._compat import import_neural_tangents

    nt = import_neural_tangents()
    fn = nt.empirical_ntk_fn(
        apply_fn,
        trace_axes=(-1,) if trace else (),
        vmap_axes=0,
        implementation=nt.NtkImplementation.STRUCTURED_DERIVATIVES,
    )
    try:
        k = fn(x1, x2, params)
    except NotImplementedError as e:
        raise NotImplementedError(
            f"neural-tangents' STRUCTURED_DERIVATIVES cannot differentiate this model ({e}). "
            'Use implementation="structured" or "jacobian".'
        ) from e
    if trace:  # neural-tangents averages over the traced axis; we sum
        p = jax.eval_shape(apply_fn, params, x1[:1]).shape[-1]
        return k * p
    return k.transpose(0, 2, 1, 3)  # (n1, n2, p, p) -> (n1, p, n2, p)


_KERNELS = {
    "jacobian": _k_jacobian,
    "ntvp": _k_ntvp,
    "structured": _ntk_structured.structured_kernel,
    "neural_tangents": _k_neural_tangents,
}


def _pad_blocks(x: jax.Array, b: int) -> jax.Array:
    """``(n, ...) -> (ceil(n/b), b, ...)``, padding by repeating the last example."""
    nb = -(-x.shape[0] // b)
    pad = [(0, nb * b - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    return jnp.pad(x, pad, mode="edge").reshape(nb, b, *x.shape[1:])


def _tiled(kernel, params, x1, x2, b: int, trace: bool) -> jax.Array:
    sym = x2 is None
    xb1 = _pad_blocks(x1, b)
    xb2 = xb1 if sym else _pad_blocks(x2, b)
    nb1, nb2 = xb1.shape[0], xb2.shape[0]
    pairs = [(i, j) for i in range(nb1) for j in range(nb2) if not sym or j >= i]
    I = jnp.array([i for i, _ in pairs])
    J = jnp.array([j for _, j in pairs])
    blocks = lax.map(lambda ij: kernel(params, xb1[ij[0]], xb2[ij[1]], trace), (I, J))
    grid = jnp.zeros((nb1, nb2, *blocks.shape[1:]), blocks.dtype).at[I, J].set(blocks)
    if sym:  # K_ji = K_ij^T
        swap = (0, 2, 1) if trace else (0, 3, 4, 1, 2)
        grid = grid.at[J, I].set(blocks.transpose(swap))
    if trace:  # (nb1, nb2, b, b) -> (nb1 b, nb2 b)
        k = grid.transpose(0, 2, 1, 3).reshape(nb1 * b, nb2 * b)
        return k[: x1.shape[0], : (x1 if sym else x2).shape[0]]
    p = grid.shape[3]  # (nb1, nb2, b, p, b, p) -> (nb1 b, p, nb2 b, p)
    k = grid.transpose(0, 2, 3, 1, 4, 5).reshape(nb1 * b, p, nb2 * b, p)
    return k[: x1.shape[0], :, : (x1 if sym else x2).shape[0]]


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _ntk(apply_fn, implementation, trace, block_size, params, x1, x2):
    impl = _KERNELS[implementation]
    kernel = lambda w, a, c, tr: impl(apply_fn, w, a, c, tr)
    if block_size is None:
        k = kernel(params, x1, x2, trace)
    else:
        k = _tiled(kernel, params, x1, x2, block_size, trace)
    if trace:
        return k
    n1, p, n2, _ = k.shape
    return k.reshape(n1 * p, n2 * p)


def _check(apply_fn, params, x1, x2) -> jax.ShapeDtypeStruct:
    """Validate shapes; return the output struct of one example ``(1, p)``."""
    if jnp.ndim(x1) < 1:
        raise ValueError(f"x1 must have a leading example axis, got shape {jnp.shape(x1)}")
    if x2 is not None and tuple(jnp.shape(x1))[1:] != tuple(jnp.shape(x2))[1:]:
        raise ValueError(
            f"x1 and x2 must have the same per-example shape: x1 is {tuple(jnp.shape(x1))}, "
            f"x2 is {tuple(jnp.shape(x2))}"
        )
    one = jax.ShapeDtypeStruct((1, *jnp.shape(x1)[1:]), jnp.result_type(x1))
    try:
        out = jax.eval_shape(apply_fn, params, one)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"apply_fn rejects inputs of per-example shape {one.shape[1:]} ({one.dtype}): {e}"
        ) from e
    if not isinstance(out, jax.ShapeDtypeStruct) or len(out.shape) != 2 or out.shape[0] != 1:
        raise ValueError(f"apply_fn must map (n, ...) inputs to (n, p) outputs; got {out}")
    return out


def choose_implementation(apply_fn: ApplyFn, params, n: int, p: int) -> str:
    """What ``"auto"`` runs when ``n`` examples with ``p`` outputs each are differentiated at once.

    ``"structured"`` if ``apply_fn`` has dense-layer taps; else ``"jacobian"`` if the ``n*p``
    per-example gradients fit in :data:`JACOBIAN_BYTES`; else ``"ntvp"``.
    """
    if getattr(apply_fn, "dense", None) and callable(getattr(apply_fn, "tapped", None)):
        return "structured"
    jac_bytes = sum(n * p * x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(params))
    return "jacobian" if jac_bytes <= JACOBIAN_BYTES else "ntvp"


def empirical_ntk(
    apply_fn: ApplyFn,
    params: Any,
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    implementation: str = "auto",
    trace: bool = False,
    block_size: int | None = None,
) -> jax.Array:
    r"""Empirical NTK :math:`J(x_1) J(x_2)^\top` of ``apply_fn`` at ``params``.

    Args:
      apply_fn: ``apply_fn(params, x) -> (n, p)``, examples independent (e.g. from
        :func:`dyntheory.models.functional`).
      params: the parameter pytree.
      x1: ``(n1, ...)`` inputs. x2: ``(n2, ...)`` inputs with the same per-example shape, or
        ``None`` for ``x1`` (K_SS).
      implementation: one of :data:`IMPLEMENTATIONS` (see the module docstring).
      trace: return the ``(n1, n2)`` sum over outputs instead of the full kernel.
      block_size: tile the computation in blocks of this many examples.

    Returns:
      ``(n1*p, n2*p)`` with row ``i*p + a`` (example-major), or ``(n1, n2)`` if ``trace``.

    Raises:
      ValueError: unknown ``implementation``; mismatched per-example shapes of ``x1``/``x2`` or
        inputs ``apply_fn`` cannot take; ``"structured"`` on an ``apply_fn`` without taps;
        ``block_size < 1``.

    Example:
      >>> model = MLP(4, (32,), 3, activation="tanh", rngs=nnx.Rngs(0))
      >>> apply_fn, params = functional(model)
      >>> empirical_ntk(apply_fn, params, jnp.ones((5, 4))).shape
      (15, 15)
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"unknown implementation {implementation!r}; choose one of {list(IMPLEMENTATIONS)}"
        )
    if block_size is not None and (int(block_size) != block_size or block_size < 1):
        raise ValueError(f"block_size must be a positive integer or None, got {block_size!r}")
    out = _check(apply_fn, params, x1, x2)
    n1, n2 = jnp.shape(x1)[0], 0 if x2 is None else jnp.shape(x2)[0]
    if block_size is not None and block_size >= max(n1, n2):
        block_size = None
    if implementation == "auto":  # examples whose Jacobians are alive at once
        n = n1 + n2 if block_size is None else 2 * block_size
        implementation = choose_implementation(apply_fn, params, n, out.shape[1])
    if implementation == "structured":
        _ntk_structured.check_taps(apply_fn)
    block = None if block_size is None else int(block_size)
    return _ntk(apply_fn, implementation, bool(trace), block, params, x1, x2)


def _chunks(x: jax.Array, size: int) -> tuple[jax.Array, int]:
    """``x`` zero-padded to a multiple of ``size`` and reshaped ``(chunks, size, ...)``."""
    n = x.shape[0]
    pad = (-n) % size
    xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    return xp.reshape(-1, size, *x.shape[1:]), pad


def ntk_matvec(
    apply_fn: ApplyFn,
    params: Any,
    x: jax.Array,
    x2: jax.Array | None = None,
    *,
    precond: Any = None,
    chunk_size: int | None = None,
) -> Callable[[jax.Array], jax.Array]:
    r"""The NTK as an operator, :math:`v \mapsto J(x)\,\mathrm{diag}(p)\,J(x_2)^\top v`, never
    forming K (THEORY.md §10: one vjp and one jvp per product).

    ``v`` is flat ``(n2*p,)`` and the result ``(n*p,)``, both in the example-major order of
    :func:`empirical_ntk` (``x2 = None``: ``x2 = x``, the square ``K_SS``; otherwise the cross
    block, e.g. ``K_QS`` with ``x`` the query set). ``precond``: a pytree like ``params`` of
    non-negative step sizes ``p`` (the effective kernel ``K_eff`` of an adaptive optimizer,
    :mod:`dyntheory.optim.state`), None for the plain NTK. ``chunk_size``: examples per
    vjp/jvp (the last chunk zero-padded; padded rows get zero cotangents and their outputs are
    dropped), so memory is that of one chunk's activations; None: all at once. The products are
    computed in the model's dtype and returned in ``v``'s. Usable inside ``jit`` and loops, e.g.
    as the operator of :func:`dyntheory.krylov.lanczos_topk`.
    """
    x2 = x if x2 is None else x2
    out = _check(apply_fn, params, x2, None)
    p_out = out.shape[1]
    dim_in = jnp.shape(x2)[0] * p_out
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}.")
    scale = (
        (lambda ct: ct) if precond is None else (lambda ct: jax.tree.map(jnp.multiply, ct, precond))
    )

    def vjp_sum(v):  # J(x2)ᵀ v, summed over chunks
        vv = v.reshape(-1, p_out).astype(out.dtype)
        if chunk_size is None:
            return jax.vjp(lambda w: apply_fn(w, x2), params)[1](vv)[0]
        xs, pad = _chunks(x2, chunk_size)
        vs, _ = _chunks(vv, chunk_size)
        one = lambda a: jax.vjp(lambda w: apply_fn(w, a[0]), params)[1](a[1])[0]
        return jax.tree.map(lambda t: jnp.sum(t, 0), jax.lax.map(one, (xs, vs)))

    def matvec(v: jax.Array) -> jax.Array:
        if jnp.shape(v) != (dim_in,):
            raise ValueError(f"v must have shape ({dim_in},) = (n*p,), got {jnp.shape(v)}")
        ct = scale(vjp_sum(v))
        return output_jvp(apply_fn, params, x, ct, chunk_size=chunk_size).astype(v.dtype)

    return matvec


def output_jvp(
    apply_fn: ApplyFn, params: Any, x: jax.Array, tangent: Any, *, chunk_size: int | None = None
) -> jax.Array:
    r"""``J(x) t``: how the outputs on ``x`` move along the parameter direction ``t`` (a pytree
    like ``params``), flat ``(n*p,)`` in :func:`empirical_ntk`'s example-major order, in the
    model's dtype. One jvp, over ``chunk_size`` examples at a time (None: all at once); e.g. the
    output image ``J (p ⊙ m)`` of Adam's momentum or ``J w`` of the weights
    (:mod:`dyntheory.momentum`)."""
    if chunk_size is None:
        return jax.jvp(lambda w: apply_fn(w, x), (params,), (tangent,))[1].reshape(-1)
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size}.")
    xs, _ = _chunks(x, chunk_size)
    one = lambda a: jax.jvp(lambda w: apply_fn(w, a), (params,), (tangent,))[1]
    ys = jax.lax.map(one, xs)
    return ys.reshape(-1, ys.shape[-1])[: jnp.shape(x)[0]].reshape(-1)


def effective_ntk(apply_fn: ApplyFn, params: Any, precond: Any, x1, x2=None, **ntk_kwargs):
    r"""``K_eff = J(x1) diag(p) J(x2)ᵀ``: the kernel that moves the outputs under a diagonal
    preconditioner ``p`` (THEORY.md §3; ``p`` from :mod:`dyntheory.optim.state`).

    Computed as the plain NTK of ``δ ↦ f(w + √p ⊙ δ)`` at ``δ = 0`` (whose Jacobian is
    ``J diag(√p)``), so every :func:`empirical_ntk` implementation applies. Shape and ordering as
    :func:`empirical_ntk` (example-major ``(n1*p_out, n2*p_out)``). ``p`` is a pytree like
    ``params`` with non-negative leaves.
    """
    root = jax.tree.map(lambda q: jnp.sqrt(q).astype(jnp.result_type(q)), precond)
    shifted = lambda d, x: apply_fn(
        jax.tree.map(lambda w, r, e: w + (r * e).astype(w.dtype), params, root, d), x
    )
    zeros = jax.tree.map(jnp.zeros_like, params)
    return empirical_ntk(shifted, zeros, x1, x2, **ntk_kwargs)


def kernel(apply_fn: ApplyFn, params: Any, x1, x2=None, precond=None, **ntk_kwargs) -> jax.Array:
    """:func:`empirical_ntk` when ``precond`` is None, else :func:`effective_ntk`."""
    if precond is None:
        return empirical_ntk(apply_fn, params, x1, x2, **ntk_kwargs)
    return effective_ntk(apply_fn, params, precond, x1, x2, **ntk_kwargs)
