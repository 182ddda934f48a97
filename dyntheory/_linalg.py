r"""SVD-based linear algebra that is safe to run on every device of a multi-device CPU client.

``jnp.linalg.svd``, ``jnp.linalg.pinv`` and ``jnp.linalg.norm(..., ord=2)`` lower on CPU to
LAPACK ``gesdd`` through jaxlib's FFI kernel, which (jaxlib 0.9) schedules part of its work on the
client's intra-op thread pool and blocks its own pool thread until that work is done. When all
devices of the client run it at the same moment (a probe replicated over an 8-device mesh, vmapped
over seeds), every pool thread ends up blocked and the process hangs for good (measured: about one
run in eight of the double-descent smoke run, stack traces in ``lapack_dgesdd_ffi``). The
``gesvd`` kernel (``SvdAlgorithm.QR``) does its work on the calling thread, so everything here goes
through it. It is slower than ``gesdd`` for large matrices; code that never runs under the
sharded engine (e.g. :mod:`dyntheory.randfeat`) keeps ``jnp.linalg.svd``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def svd(a: jax.Array, compute_uv: bool = True):
    """Thin SVD ``a = U diag(s) Vᵀ`` of ``(..., m, n)`` via ``gesvd``: ``(U, s, Vᵀ)`` or ``s``."""
    return jax.lax.linalg.svd(
        a, full_matrices=False, compute_uv=compute_uv, algorithm=jax.lax.linalg.SvdAlgorithm.QR
    )


def pinv(a: jax.Array, rcond: float) -> jax.Array:
    r"""Pseudo-inverse ``a† = V diag(1/σ) Uᵀ`` over ``σ > rcond · σ_max``.

    Shapes ``(..., m, n) → (..., n, m)``. Equals ``jnp.linalg.pinv(a, rtol=rcond)`` (tested),
    through ``gesvd``.
    """
    u, s, vt = svd(a)
    keep = s > rcond * jnp.max(s, axis=-1, keepdims=True)
    s_inv = jnp.where(keep, 1 / jnp.where(keep, s, 1), 0)
    return jnp.einsum("...ji,...j,...kj->...ik", vt, s_inv, u)


def spectral_norm(a: jax.Array) -> jax.Array:
    """``‖a‖₂ = σ_max(a)`` of ``(..., m, n)``, shape ``(...)``; ``jnp.linalg.norm(a, ord=2)``."""
    return jnp.max(svd(a, compute_uv=False), axis=-1)
