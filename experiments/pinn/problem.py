r"""The advection problem of the PINN experiment: data, residual, loss and the exact solution.

PDE (the "failure-mode" advection benchmark of Krishnapriyan et al. 2021, arXiv:2109.01050):

    u_t + β u_x = 0,   x ∈ [0, 2π), t ∈ [0, 1],   u(x, 0) = sin x,   u(0, t) = u(2π, t),

with exact solution ``u(x, t) = sin(x − β t)``. The initial condition is *observed with noise*,
``y_i = sin(x_i) + σ ε_i`` (``ε_i ~ N(0, 1)``), the setting of the paper's PINN result
(Litman & Guo 2026, arXiv:2605.01172, §8 of THEORY.md).

Loss (each term a mean of squares, weights ``w_*``):

    L = w_pde · mean_f (u_t + β u_x)²  +  w_ic · mean_i (u(x_i, 0) − y_i)²
        + w_bc · mean_j (u(0, t_j) − u(2π, t_j))².

The residual is one forward-mode derivative: ``u_t + β u_x = ∇u · (β, 1)``, a single ``jax.jvp``
of the network along the constant tangent ``(β, 1)`` (inputs are rows ``z = (x, t)``; the network
acts row-wise, so a batched jvp gives every row's directional derivative).

Shapes: points are ``(n, 2)`` arrays of ``(x, t)`` rows; ``u_fn`` maps ``(n, 2) → (n,)`` or
``(n, 1)`` (outputs are flattened to ``(n,)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

TWO_PI = 2.0 * jnp.pi

UFn = Callable[[jax.Array], jax.Array]


class ICData(NamedTuple):
    """Noisy initial-condition observations: ``y = sin(x) + noise``."""

    x: jax.Array  # (n_ic,) positions in [0, 2π)
    y: jax.Array  # (n_ic,) noisy observations
    noise: jax.Array  # (n_ic,) the noise actually added (σ ε), kept for diagnostics


def exact_solution(z: jax.Array, beta: float) -> jax.Array:
    """``u(x, t) = sin(x − β t)`` for rows ``z = (x, t)``: ``(n, 2) → (n,)``."""
    return jnp.sin(z[:, 0] - beta * z[:, 1])


def make_ic_data(key: jax.Array, n_ic: int, sigma: float, dtype=jnp.float32) -> ICData:
    """``n_ic`` equispaced IC points on [0, 2π) with i.i.d. Gaussian noise of std ``sigma``.

    Deterministic in ``key`` (same key → same noise). Equispaced points keep the IC data
    itself free of sampling gaps, so the only corruption is the noise.
    """
    x = jnp.arange(n_ic, dtype=dtype) * (TWO_PI / n_ic)
    noise = sigma * jax.random.normal(key, (n_ic,), dtype)
    return ICData(x=x, y=jnp.sin(x) + noise, noise=noise)


def sample_collocation(key: jax.Array, n: int, t_max: float = 1.0, dtype=jnp.float32) -> jax.Array:
    """``n`` points uniform on ``[0, 2π) × [0, t_max]``: ``(n, 2)`` rows ``(x, t)``."""
    kx, kt = jax.random.split(key)
    x = jax.random.uniform(kx, (n,), dtype, 0.0, TWO_PI)
    t = jax.random.uniform(kt, (n,), dtype, 0.0, t_max)
    return jnp.stack([x, t], axis=1)


def sample_boundary_times(key: jax.Array, n: int, t_max: float = 1.0, dtype=jnp.float32):
    """``n`` times uniform on ``[0, t_max]``: ``(n,)``."""
    return jax.random.uniform(key, (n,), dtype, 0.0, t_max)


def eval_grid(nx: int, nt: int, t_max: float = 1.0, dtype=jnp.float32) -> jax.Array:
    """The error grid: ``nx`` equispaced x in [0, 2π) × ``nt`` equispaced t in [0, t_max],
    flattened t-major to ``(nt * nx, 2)``."""
    x = jnp.arange(nx, dtype=dtype) * (TWO_PI / nx)
    t = jnp.linspace(0.0, t_max, nt, dtype=dtype)
    tt, xx = jnp.meshgrid(t, x, indexing="ij")
    return jnp.stack([xx.ravel(), tt.ravel()], axis=1)


def _flat(u: jax.Array) -> jax.Array:
    return u.reshape(u.shape[0])


def pde_residual(u_fn: UFn, z: jax.Array, beta: float) -> jax.Array:
    """``r = u_t + β u_x`` at rows ``z``: ``(n, 2) → (n,)``, by one jvp along ``(β, 1)``."""
    tangent = jnp.broadcast_to(jnp.asarray([beta, 1.0], z.dtype), z.shape)
    _, du = jax.jvp(lambda zz: _flat(u_fn(zz)), (z,), (tangent,))
    return du


def periodic_bc_gap(u_fn: UFn, t: jax.Array) -> jax.Array:
    """``u(0, t) − u(2π, t)`` at times ``t``: ``(n,) → (n,)``."""
    zeros = jnp.zeros_like(t)
    left = _flat(u_fn(jnp.stack([zeros, t], axis=1)))
    right = _flat(u_fn(jnp.stack([zeros + TWO_PI, t], axis=1)))
    return left - right


def ic_misfit(u_fn: UFn, ic: ICData) -> jax.Array:
    """``u(x_i, 0) − y_i``: ``(n_ic,)``."""
    z = jnp.stack([ic.x, jnp.zeros_like(ic.x)], axis=1)
    return _flat(u_fn(z)) - ic.y


def pinn_loss(
    u_fn: UFn,
    colloc: jax.Array,
    bc_t: jax.Array,
    ic: ICData,
    beta: float,
    w_pde: float = 1.0,
    w_ic: float = 1.0,
    w_bc: float = 1.0,
) -> tuple[jax.Array, dict]:
    """The PINN loss (module docstring) and its three terms as ``aux`` (unweighted means)."""
    pde = jnp.mean(pde_residual(u_fn, colloc, beta) ** 2)
    icl = jnp.mean(ic_misfit(u_fn, ic) ** 2)
    bcl = jnp.mean(periodic_bc_gap(u_fn, bc_t) ** 2)
    loss = w_pde * pde + w_ic * icl + w_bc * bcl
    return loss, {"loss/pde": pde, "loss/ic": icl, "loss/bc": bcl}


def relative_l2(u_fn: UFn, grid: jax.Array, beta: float) -> jax.Array:
    """``‖u − u*‖₂ / ‖u*‖₂`` over the grid rows (u* = sin(x − βt))."""
    u = _flat(u_fn(grid))
    ref = exact_solution(grid, beta)
    return jnp.linalg.norm(u - ref) / jnp.linalg.norm(ref)


def periodic_embedding(z: jax.Array) -> jax.Array:
    """``(x, t) ↦ (cos x, sin x, t)``, ``(n, 2) → (n, 3)``: a network on it is 2π-periodic in x."""
    return jnp.stack([jnp.cos(z[:, 0]), jnp.sin(z[:, 0]), z[:, 1]], axis=1)
