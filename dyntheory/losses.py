r"""Losses in output space, with the output-space gradient ``g`` and Hessian ``B`` of THEORY.md §1.

Every loss is a mean over the ``n`` examples on the leading axis, so that

* squared loss ``Φ_S(u) = ‖u − y‖² / (2n)`` has ``g = (u − y)/n`` and ``B = I/n``, and
  ``Φ_S = (n/2)‖g‖²``;
* softmax cross-entropy ``Φ_S(u) = −(1/n) Σ_i log softmax(u_i)[y_i]`` has, with
  ``π_i = softmax(u_i)``, ``g_i = (π_i − e_{y_i})/n`` and
  ``B = (1/n) blockdiag(diag(π_i) − π_i π_iᵀ)``.

Output-space vectors are flattened example-major: entry ``i*p + a`` is output ``a`` of example
``i`` (``u.reshape(-1)`` for ``u`` of shape ``(n, p)``). These are the ``g`` and ``out_hessian``
that :mod:`dyntheory.dissipation` consumes.

**The loss registry.** :data:`LOSSES` maps a name (``"squared"``, ``"softmax_ce"``) to an
:class:`OutputLoss` bundling ``Φ``, ``g``, ``B`` and the aux metrics; :func:`get_loss` looks one up
with a clear error, and :func:`loss_fn` turns a name into the engine's
``loss_fn(apply_fn, params, batch, key) -> (loss, aux)``. The engine, the probes and the
diagnostics all choose a loss by name through here.

References:
  Litman & Guo, "A Theory of Generalization in Deep Learning", arXiv:2605.01172 (2026), §2.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def _n_examples(u: jax.Array) -> int:
    if jnp.ndim(u) == 0:
        raise ValueError("outputs must have a leading example axis, got a scalar")
    return u.shape[0]


def squared_loss(u: jax.Array, y: jax.Array) -> jax.Array:
    r"""``‖u − y‖² / (2n)`` for outputs ``u`` and targets ``y`` of shape ``(n,)`` or ``(n, p)``."""
    if jnp.shape(u) != jnp.shape(y):
        raise ValueError(f"outputs {jnp.shape(u)} and targets {jnp.shape(y)} differ in shape")
    return 0.5 * jnp.sum(jnp.square(u - y)) / _n_examples(u)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    r"""Mean over examples of ``−log softmax(logits_i)[labels_i]``.

    Args:
      logits: ``(n, p)`` unnormalised log-probabilities.
      labels: ``(n,)`` integer class indices in ``[0, p)``.
    """
    _check_logits_labels(logits, labels)
    logp = jax.nn.log_softmax(logits, axis=-1)  # stable: subtracts the row max
    picked = jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return -jnp.mean(picked)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of examples whose arg-max logit equals the integer label."""
    _check_logits_labels(logits, labels)
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def squared_out_grad(u: jax.Array, y: jax.Array) -> jax.Array:
    r"""``g = ∇_u Φ_S = (u − y)/n``, flattened example-major to shape ``(n p,)``."""
    if jnp.shape(u) != jnp.shape(y):
        raise ValueError(f"outputs {jnp.shape(u)} and targets {jnp.shape(y)} differ in shape")
    return ((u - y) / _n_examples(u)).reshape(-1)


def squared_out_hessian(n: int) -> float:
    r"""``B = ∇²_u Φ_S = I/n`` for squared loss, as the scalar ``1/n`` (meaning ``(1/n)·I``).

    ``n`` is the number of examples (not of outputs). Pass it as ``out_hessian`` to
    :func:`dyntheory.dissipation.update`, which then takes the closed-form symmetric path.
    """
    if int(n) <= 0:
        raise ValueError(f"number of examples must be positive, got {n}")
    return 1.0 / int(n)


def softmax_out_grad(logits: jax.Array, labels: jax.Array) -> jax.Array:
    r"""``g_i = (softmax(logits_i) − onehot(labels_i))/n``, flattened example-major: ``(n p,)``."""
    _check_logits_labels(logits, labels)
    n, p = logits.shape
    pi = jax.nn.softmax(logits, axis=-1)
    return ((pi - jax.nn.one_hot(labels, p, dtype=pi.dtype)) / n).reshape(-1)


def softmax_out_hessian(logits: jax.Array) -> jax.Array:
    r"""``B = (1/n) blockdiag(diag(π_i) − π_i π_iᵀ)``, an ``(n p, n p)`` PSD matrix.

    Each ``p × p`` block is singular (the all-ones vector is in its kernel: shifting all logits of
    an example leaves the loss unchanged).
    """
    if jnp.ndim(logits) != 2:
        raise ValueError(f"logits must have shape (n, p), got {jnp.shape(logits)}")
    n, p = logits.shape
    pi = jax.nn.softmax(logits, axis=-1)
    blocks = jax.vmap(jnp.diag)(pi) - pi[:, :, None] * pi[:, None, :]  # (n, p, p)
    eye_n = jnp.eye(n, dtype=pi.dtype)
    # Block-diagonal assembly: out[i, a, j, b] = δ_ij blocks[i, a, b].
    out = eye_n[:, None, :, None] * blocks[:, :, None, :]
    return out.reshape(n * p, n * p) / n


def squared_out_hessian_vp(u: jax.Array, v: jax.Array) -> jax.Array:
    r"""``B v = v/n`` for squared loss, ``v`` flat ``(n p,)``; never forms ``B``."""
    return v / _n_examples(u)


def softmax_out_hessian_vp(logits: jax.Array, v: jax.Array) -> jax.Array:
    r"""``B v`` with ``B = (1/n) blockdiag(diag π_i − π_i π_iᵀ)``, ``v`` flat ``(n p,)``.

    Per example ``(π_i ⊙ v_i − π_i (π_iᵀ v_i))/n``: ``O(n p)`` work, ``B`` is never formed.
    """
    if jnp.ndim(logits) != 2:
        raise ValueError(f"logits must have shape (n, p), got {jnp.shape(logits)}")
    n, p = logits.shape
    pi = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    vi = v.reshape(n, p)
    return ((pi * vi - pi * jnp.sum(pi * vi, axis=-1, keepdims=True)) / n).reshape(-1)


def logit_shift_free(v: jax.Array, p: int) -> jax.Array:
    r"""``Π v``: per example, ``v_i − mean(v_i) 1`` (``v`` flat ``(n p,)`` or ``(n p, k)``).

    Softmax's output Hessian has ``B (c 1) = 0`` per example: shifting all logits of an example by
    one constant changes no loss. ``Π = I − S Sᵀ`` (``S`` the per-example unit vectors
    ``1/√p``) projects those zero-loss directions out; the output gradient already lies in its
    range (``Σ_a g_{ia} = 0``).
    """
    shape = v.shape
    w = v.reshape(-1, p, *shape[1:])
    return (w - jnp.mean(w, axis=1, keepdims=True)).reshape(shape)


def logit_shift_free_basis(n: int, p: int, dtype=jnp.float64) -> jax.Array:
    r"""An orthonormal basis of ``range Π`` (:func:`logit_shift_free`): ``(n p, n (p − 1))``.

    ``I_n ⊗ V`` with ``V`` (``p × (p − 1)``) the Helmert columns ``(1, …, 1, −k, 0, …)/√(k(k+1))``,
    ``k = 1 … p − 1``, orthonormal and orthogonal to ``1``. Every loss-carrying direction of
    softmax's outputs, so a ``W_S`` compressed to it is the dense ``Π W_S Π`` in those
    coordinates (THEORY.md §10, "Softmax's zero-loss directions").
    """
    if int(n) < 1 or int(p) < 2:
        raise ValueError(f"logit_shift_free_basis needs n >= 1 examples and p >= 2, got {n}, {p}.")
    k = np.arange(1, p)
    v = np.zeros((p, p - 1))
    for j in k:
        v[:j, j - 1] = 1.0
        v[j, j - 1] = -float(j)
    v /= np.sqrt(k * (k + 1))[None, :]
    return jnp.asarray(np.kron(np.eye(int(n)), v), dtype)


def out_hessian_root_vp(name: str, u: jax.Array) -> Callable[[jax.Array], jax.Array]:
    r"""``v -> B^{1/2} v`` for the loss ``name`` at outputs ``u`` (``v`` flat ``(n p,)``).

    Squared loss: ``v/√n``. Softmax: per example the PSD square root of the ``p × p`` block
    ``(diag π_i − π_i π_iᵀ)/n`` (one small ``eigh`` per example, ``O(n p³)``), so the stability
    operator ``B^{1/2} K B^{1/2}`` (THEORY.md §10) is symmetric and Lanczos applies.
    """
    if get_loss(name).name == "squared":
        n = _n_examples(u)
        return lambda v: v / jnp.sqrt(n)
    n, p = u.shape
    pi = jax.nn.softmax(u, axis=-1)
    blocks = jax.vmap(jnp.diag)(pi) - pi[:, :, None] * pi[:, None, :]
    lam, vecs = jnp.linalg.eigh(blocks)
    roots = jnp.einsum("nij,nj,nkj->nik", vecs, jnp.sqrt(jnp.maximum(lam, 0) / n), vecs)
    return lambda v: jnp.einsum("nij,nj->ni", roots.astype(v.dtype), v.reshape(n, p)).reshape(-1)


def _check_logits_labels(logits: jax.Array, labels: jax.Array) -> None:
    if jnp.ndim(logits) != 2:
        raise ValueError(f"logits must have shape (n, p), got {jnp.shape(logits)}")
    if jnp.shape(labels) != logits.shape[:1]:
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {jnp.shape(labels)}")
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise ValueError(
            f"labels must be integer class indices, got dtype {jnp.result_type(labels)}"
        )


class OutputLoss(NamedTuple):
    """A loss in output space: its value, output gradient ``g``, Hessian ``B`` and aux metrics."""

    name: str
    value: Callable[[jax.Array, jax.Array], jax.Array]  # (u, y) -> Φ, a scalar
    out_grad: Callable[[jax.Array, jax.Array], jax.Array]  # (u, y) -> g, (n p,)
    out_hessian: Callable[[jax.Array], Any]  # u -> B: scalar 1/n (means I/n) or (n p, n p)
    out_hessian_vp: Callable[[jax.Array, jax.Array], jax.Array]  # (u, v (n p,)) -> B v
    aux: Callable[[jax.Array, jax.Array], dict[str, jax.Array]]  # (u, y) -> {"acc": ...} or {}
    targets: str  # "float (n, p)" or "int (n,)": what y is


LOSSES: dict[str, OutputLoss] = {
    "squared": OutputLoss(
        "squared",
        squared_loss,
        squared_out_grad,
        lambda u: squared_out_hessian(_n_examples(u)),
        squared_out_hessian_vp,
        lambda u, y: {},
        "float (n, p)",
    ),
    "softmax_ce": OutputLoss(
        "softmax_ce",
        softmax_cross_entropy,
        softmax_out_grad,
        softmax_out_hessian,
        softmax_out_hessian_vp,
        lambda u, y: {"acc": accuracy(u, y)},
        "int (n,)",
    ),
}


def get_loss(name: str) -> OutputLoss:
    """The :class:`OutputLoss` called ``name``; a :class:`ValueError` names the choices."""
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}.")
    return LOSSES[name]


LossFn = Callable[[Callable, Any, dict, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def loss_fn(loss: str | LossFn) -> LossFn:
    """The engine's ``loss_fn(apply_fn, params, batch, key) -> (loss, aux)`` for a loss name.

    ``"squared"``: ``‖f(x) − y‖²/(2n)`` (THEORY.md §1), no aux; ``"softmax_ce"``: mean
    cross-entropy on integer labels, aux ``acc``. A callable passes through unchanged (a custom
    loss: ``batch`` is the data's dict, ``key`` a per-step key, aux a dict of scalars).
    """
    if callable(loss):
        return loss
    return _named_loss_fn(get_loss(loss).name)


@functools.cache
def _named_loss_fn(name: str) -> LossFn:
    spec = LOSSES[name]  # one function object per name: jit caches keyed on it stay warm

    def fn(apply_fn, params, batch, key):
        del key
        u = apply_fn(params, batch["x"])
        return spec.value(u, batch["y"]), spec.aux(u, batch["y"])

    fn.__name__ = f"{spec.name}_loss_fn"
    return fn
