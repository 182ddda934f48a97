r"""Probes of gradient statistics: PRM's gate, the population-risk signal, norms, drift vs noise.

- :class:`GateStats`: PRM's gate statistics read from the optimizer state.
- :class:`PopulationRisk`: the leave-one-out population-risk signal (THEORY.md §6).
- :class:`Norms`: per-layer gradient and parameter norms.
- :class:`DriftDiffusion`: accumulated minibatch drift and noise on fixed directions
  (THEORY.md §5, paper Thm 4.1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax

from dyntheory import drift, poprisk
from dyntheory.probes.base import Probe, Schedule, batch_grads, f64, path_name


def _tree_sum(tree) -> jax.Array:
    return sum((jnp.sum(x) for x in jax.tree.leaves(tree)), jnp.zeros((), f64()))


@dataclasses.dataclass(frozen=True, eq=False)
class GateStats(Probe):
    """PRM's gate statistics of the last step, read with ``optax.tree.get`` from the state.

    Needs an optimizer built with ``prm(..., gate_stats=True)`` (the statistics are off by default
    to keep PRM's update elementwise); otherwise it raises when the run is compiled.
    """

    needs_probe_set: ClassVar[bool] = False
    schedule: Schedule = Schedule.every(100)
    name: str = "gate"

    def __call__(self, ctx, state, params, opt_state, step):
        out = {}
        for key in ("gate_mean", "gate_open_fraction"):
            value = optax.tree.get(opt_state, key)
            if value is None:
                raise ValueError(
                    f"GateStats: the optimizer state has no {key!r}. It needs PRM built with "
                    "gate_stats=True: prm(..., gate_stats=True)."
                )
            out[key] = value
        return state, out, {}


@dataclasses.dataclass(frozen=True, eq=False)
class PopulationRisk(Probe):
    r"""The validation-free population-risk signal (THEORY §6) on the current training batch.

    From per-example gradients: ``loo_sum = Σ_k (μ_k² − Σ_{B,k}/(b − 1))`` (unbiased ‖∇R‖²),
    ``predicted_change = −η Σ_k p_k loo_k`` for the step (``p`` from ``preconditioner``, η = 1 then;
    else η = ``lr``), ``cumulative_change``: the predicted changes summed over the run (each held
    over its probe interval), and the open fraction of the hard gate ``1[μ² > Σ_B/(b − 1)]``.
    """

    needs_probe_set: ClassVar[bool] = False
    schedule: Schedule = Schedule.every(100)
    name: str = "poprisk"
    lr: float | Callable = 1e-3
    preconditioner: Callable | None = None

    def init(self, ctx, params, opt_state):
        z = jnp.zeros((), f64())
        return {"cumulative": z, "last": z, "t": jnp.zeros((), jnp.int32)}

    def __call__(self, ctx, state, params, opt_state, step):
        loss = lambda p, b: ctx.loss_fn(ctx.apply_fn, p, b, ctx.key)[0]
        grads = poprisk.per_example_grads(loss, params, ctx.batch())
        st = poprisk.stats(grads)
        if self.preconditioner is None:
            eta, p = (self.lr(step) if callable(self.lr) else self.lr), None
        else:
            eta, p = 1.0, self.preconditioner(opt_state)
        change = poprisk.predicted_risk_change(grads, eta, precond=p).astype(f64())
        cumulative = state["cumulative"] + state["last"] * (step - state["t"])
        size = sum(x.size for x in jax.tree.leaves(st.gate))
        scalars = {
            "loo_sum": _tree_sum(st.loo),
            "grad_sq": _tree_sum(jax.tree.map(jnp.square, st.mean)),
            "predicted_change": change,
            "cumulative_change": cumulative,
            "hard_gate_fraction": _tree_sum(st.gate) / size,
        }
        return {"cumulative": cumulative, "last": change, "t": step.astype(jnp.int32)}, scalars, {}


@dataclasses.dataclass(frozen=True, eq=False)
class Norms(Probe):
    """Per-layer (per-leaf) gradient and parameter norms, on the step's training batch."""

    needs_probe_set: ClassVar[bool] = False
    schedule: Schedule = Schedule.every(100)
    name: str = "norms"

    def __call__(self, ctx, state, params, opt_state, step):
        grads = batch_grads(ctx, params)
        out = {"grad/global": optax.tree.norm(grads), "param/global": optax.tree.norm(params)}
        for kind, tree in (("grad", grads), ("param", params)):
            for path, x in jax.tree.flatten_with_path(tree)[0]:
                out[f"{kind}/{path_name(path)}"] = jnp.linalg.norm(x.reshape(-1))
        return state, out, {}


def _flat_jacobian(apply_fn, params, x) -> jax.Array:
    """``J_S`` as an ``(n p, P)`` matrix, columns in ``jax.tree.leaves`` order (drift's order)."""
    jac = jax.jacrev(lambda p: apply_fn(p, x).reshape(-1))(params)
    leaves = jax.tree.leaves(jac)
    rows = leaves[0].shape[0]
    return jnp.concatenate([leaf.reshape(rows, -1) for leaf in leaves], axis=1)


@dataclasses.dataclass(frozen=True, eq=False)
class DriftDiffusion(Probe):
    r"""Accumulated drift ``Σ η V μ_t`` and noise ``Σ η V ξ_t`` on the top / bottom NTK directions.

    Every step, the minibatch gradient ``ĝ_t = μ_t + ξ_t`` is split into its coherent part and
    its fluctuation, both accumulated on ``r`` fixed directions by :mod:`dyntheory.drift`. The
    population gradient ``μ_t`` is not known, so the drift accumulates the batch mean and the noise
    the half-batch difference, which has exactly the law of ``ξ_t``. The directions are the top and
    the bottom ``r`` eigenvectors ``v_i`` of the NTK at initialization on the probe set mapped to
    parameter space, ``J_Sᵀ v_i/√λ_i`` (orthonormal); under a frozen kernel they are the top
    (channel) and bottom (reservoir) eigenvectors of ``W_S`` too.

    Must run every step (``Schedule.every(1)``): each call accumulates the increment of the step's
    own minibatch. Scalars: ``count`` (steps accumulated, = step + 1), ``drift_{top,bottom}`` and
    ``noise_{top,bottom}`` (the norms ``‖Σ η V μ‖``, ``‖Σ η V ξ‖``). State: the two ``(r, P)``
    bases, their NTK eigenvalues and the two :class:`dyntheory.drift.DriftState` accumulators.

    Args:
      lr: the SGD step size η (constant).
      directions: ``r``, the number of directions in each set.
    """

    schedule: Schedule = Schedule.every(1)
    name: str = "drift"
    lr: float = 0.05
    directions: int = 4

    def init(self, ctx, params, opt_state):
        jmat = _flat_jacobian(ctx.apply_fn, params, ctx.train["x"]).astype(f64())
        lam, vecs = jnp.linalg.eigh(jmat @ jmat.T)  # ascending
        r = self.directions
        if r > lam.shape[0]:
            raise ValueError(f"DriftDiffusion: {r} directions but the NTK is {lam.shape[0]}-dim.")
        tiny = jnp.finfo(lam.dtype).tiny

        def basis(idx):
            lam_i = jnp.maximum(lam[idx], tiny)
            return (vecs[:, idx].T @ jmat) / jnp.sqrt(lam_i)[:, None], lam_i

        top, lam_top = basis(jnp.arange(lam.shape[0] - 1, lam.shape[0] - 1 - r, -1))
        bottom, lam_bottom = basis(jnp.arange(r))
        zero = drift.init(r, f64())
        return {
            "top": top,
            "bottom": bottom,
            "lam_top": lam_top,
            "lam_bottom": lam_bottom,
            "acc_top": zero,
            "acc_bottom": zero,
        }

    def __call__(self, ctx, state, params, opt_state, step):
        loss = lambda p, b: ctx.loss_fn(ctx.apply_fn, p, b, ctx.key)[0]
        per_example = poprisk.per_example_grads(loss, params, ctx.batch())
        new = dict(state)
        scalars = {}
        for which in ("top", "bottom"):
            acc = drift.update(state[f"acc_{which}"], per_example, state[which], lr=self.lr)
            new[f"acc_{which}"] = acc
            scalars[f"drift_{which}"], scalars[f"noise_{which}"] = drift.norms(acc)
        scalars["count"] = new["acc_top"].count
        return new, scalars, {}
