r"""W_S of the train probe set under the optimizer's preconditioned kernel (THEORY.md §3).

:class:`TrainDissipation` is :class:`dyntheory.probes.Dissipation` restricted to the train block
(no test transfer operator ``G_Q``, no coupling), for softmax cross-entropy. At each probe step
``t`` it advances the accumulator over ``[t_prev, t)`` with the kernel of ``t_prev`` held fixed
(:func:`dyntheory.dissipation.update` with ``lr = 1``: the step size is inside
``K_eff = J diag(p) Jᵀ``, ``p`` the optimizer's diagonal step, momentum ignored), refreshes the
kernel and the output Hessian ``B``, and splits W_S into channel and reservoir
(:func:`dyntheory.split.split`).

Why not ``Dissipation(query=False)`` itself: its state holds a zero-size ``G`` (0, np) that the
engine's checkpointer cannot save, and with the test block the coupling's pseudo-inverse runs a
batched SVD that deadlocks jaxlib 0.9.2's CPU thread pool when the engine vmaps several seeds.

Scalars (``probe/dissipation/...``): ``w_lambda_max``, ``w_trace``, ``w_effective_rank``
(participation ratio), ``channel_dim``, ``loss_drop`` Φ(0) − Φ(t) and ``predicted_loss_drop``
g(0)ᵀ W g(0) (first order in Φ for cross-entropy), and the channel/reservoir energies of the
output gradient (the train residual) at step 0 (``g0_*``) and now (``g_*``). Arrays:
``w_eigenvalues`` (np,).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from dyntheory import dissipation, losses, spectrum, split
from dyntheory.probes import Probe, Schedule, effective_ntk


def _f64():
    return jax.dtypes.canonicalize_dtype(jnp.float64)


@dataclasses.dataclass(frozen=True, eq=False)
class TrainDissipation(Probe):
    """Train-block W_S with the effective kernel of ``preconditioner(opt_state)`` (see module)."""

    schedule: Schedule = Schedule.log(4)
    name: str = "dissipation"
    preconditioner: Callable | None = None
    threshold: float = 1e-3
    mode: str = "relative"
    implementation: str = "ntvp"

    def _refresh(self, ctx, params, opt_state):
        x, y = ctx.train["x"], ctx.train["y"]
        p = self.preconditioner(opt_state)
        k = effective_ntk(ctx.apply_fn, params, p, x, implementation=self.implementation)
        u = ctx.apply_fn(params, x)
        g = losses.softmax_out_grad(u, y).reshape(-1).astype(_f64())
        hess = losses.softmax_out_hessian(u).astype(_f64())
        return k.astype(_f64()), hess, g, losses.softmax_cross_entropy(u, y).astype(_f64())

    def init(self, ctx, params, opt_state):
        k, hess, g, phi = self._refresh(ctx, params, opt_state)
        acc = dissipation.init(k.shape[0], 0, dtype=_f64())
        return {
            "P": acc.P,
            "W": acc.W,
            "D": acc.D,
            "count": acc.count,
            "time": acc.time,
            "k": k,
            "hess": hess,
            "t": jnp.zeros((), jnp.int32),
            "g0": g,
            "phi0": phi,
        }

    def __call__(self, ctx, state, params, opt_state, step):
        n_out = state["k"].shape[0]
        acc = dissipation.DissipationState(
            state["P"],
            state["W"],
            state["D"],
            jnp.zeros((0, n_out), _f64()),
            state["count"],
            state["time"],
        )
        acc = dissipation.update(
            acc,
            state["k"],
            jnp.ones((), _f64()),
            out_hessian=state["hess"],
            steps=step - state["t"],
        )
        k, hess, g, phi = self._refresh(ctx, params, opt_state)
        sp = split.split(acc.W, self.threshold, self.mode)
        lam = sp.eigvals
        scalars = {
            "w_lambda_max": lam[0],
            "w_trace": jnp.sum(lam),
            "w_effective_rank": spectrum.participation_ratio(lam),
            "channel_dim": jnp.sum(sp.channel),
            "loss_drop": state["phi0"] - phi,
            "predicted_loss_drop": state["g0"] @ acc.W @ state["g0"],
        }
        for label, v in (("g0", state["g0"]), ("g", g)):
            scalars[f"{label}_channel"], scalars[f"{label}_reservoir"] = split.energies(sp, v)
        new = {
            "P": acc.P,
            "W": acc.W,
            "D": acc.D,
            "count": acc.count,
            "time": acc.time,
            "k": k,
            "hess": hess,
            "t": step.astype(jnp.int32),
            "g0": state["g0"],
            "phi0": state["phi0"],
        }
        return new, scalars, {"w_eigenvalues": lam}
