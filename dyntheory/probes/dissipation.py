r"""The dissipation probe: W_S, its channel/reservoir split and the coupling, along the run.

One probe, :class:`Dissipation`, for every experiment that measures the cumulative dissipation
Gramian (THEORY.md §3): with or without the test block ``G_Q`` (``query``), squared loss or softmax
cross-entropy, plain GD or an adaptive optimizer's effective kernel (``preconditioner``), and
optionally the four-cell decomposition of the label noise (``cells``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dyntheory import dissipation, losses, ntk, spectrum, split
from dyntheory.probes.base import Probe, Schedule, f64

PARTS, SUBS = ("clean", "noise"), ("channel", "reservoir")


class DissipationProbeState(NamedTuple):
    """What :class:`Dissipation` carries between probe steps (checkpointed with the run).

    Fields that only exist with a test probe set are ``None`` when ``query=False`` (an empty
    array would not checkpoint): ``acc.G``, ``kq`` and ``uq0``.
    """

    acc: dissipation.DissipationState  # W_S, P, D, G_Q accumulated from step 0
    k: jax.Array  # (np, np) kernel at the last probe step, held constant until the next
    kq: jax.Array | None  # (mq, np) cross kernel at the last probe step; None without query
    hess: jax.Array  # () 1/n (squared loss) or (np, np) softmax output Hessian
    lr: jax.Array  # () step size of the interval (1 with a preconditioner: it is in the kernel)
    t: jax.Array  # () int32, the last probe step
    g0: jax.Array  # (np,) output gradient g(0)
    noise0: jax.Array  # (np,) label-noise part of g(0), (y_clean − y)/n (zeros if unknown)
    phi0: jax.Array  # () probe-set loss at step 0
    u0: jax.Array  # (np,) train outputs at step 0
    uq0: jax.Array | None  # (mq,) query outputs at step 0; None without query


@dataclasses.dataclass(frozen=True, eq=False)
class Dissipation(Probe):
    r"""The dissipation accumulator (THEORY.md §3) over the run, on the probe sets, from step 0.

    At each probe step ``t`` the accumulator advances over ``[t_prev, t)`` with the kernel of
    ``t_prev`` held constant (:func:`dyntheory.dissipation.update` with ``steps = t − t_prev``),
    then the kernel is refreshed. It models full-batch GD on the probe-set loss: exact when the
    probe set is the training set and training is full batch; otherwise an approximation.
    With ``preconditioner`` (:func:`dyntheory.optim.state.adam_preconditioner`,
    :func:`~dyntheory.optim.state.prm_preconditioner`) the kernel is the effective one
    ``K_eff = J diag(p) Jᵀ`` with ``lr = 1``; momentum is ignored (THEORY.md §3). Coordinates where
    ``p`` is not finite count as ``p = 0``.

    Scalars (``probe/<name>/...``): ``w_lambda_max``, ``w_trace``, ``w_effective_rank``
    (participation ratio), ``channel_dim``, ``time``, the loss identity ``loss_drop``
    ``Φ(0) − Φ(t)`` against ``predicted_loss_drop`` ``g(0)ᵀ W g(0)`` (exact for squared loss, first
    order for cross-entropy), the channel/reservoir energies of ``g(0)`` (``g0_*``), ``g(t)``
    (``g_*``) and, when the clean targets are known, of the label noise (``noise_*``). With
    ``query``: ``coupling_corr``, ``coupling_rel_err`` (``A = G_Q D†`` predicting the test
    displacement, THEORY.md §4) and ``invisibility`` (Prop. 3.2's residual). With ``cells``
    (squared loss and ``query``): the split's absolute ``cutoff`` and the four-cell energies
    ``{train,dissipated,test}_{clean,noise}_{channel,reservoir}`` of
    :func:`dyntheory.split.four_cell`. Arrays: ``w_eigenvalues`` (np,) and, with ``query``,
    ``predicted_displacement`` / ``actual_displacement`` (mq,).

    Args:
      lr: GD step size η, a float or a schedule ``step -> η`` (ignored with a preconditioner).
      preconditioner: ``opt_state -> p`` (a pytree like the params), or None for plain GD.
      loss: ``"squared"`` (B = I/n) or ``"softmax_ce"`` (B from the logits at each probe step).
      query: also accumulate the test block ``G_Q`` (needs a test probe set).
      cells: also report the four-cell decomposition (needs ``query`` and squared loss).
      threshold, mode: the channel/reservoir split (:func:`dyntheory.split.split`).
      implementation: the NTK implementation (:func:`dyntheory.ntk.empirical_ntk`).
    """

    schedule: Schedule = Schedule.every(10)
    name: str = "dissipation"
    lr: float | Callable = 1e-3
    preconditioner: Callable | None = None
    loss: str = "squared"
    query: bool = True
    cells: bool = False
    threshold: float = 1e-3
    mode: str = "relative"
    implementation: str = "auto"

    def __post_init__(self):
        losses.get_loss(self.loss)
        t = float(self.threshold)
        if not (math.isfinite(t) and t >= 0):
            raise ValueError(f"Dissipation(threshold=...) must be finite and >= 0, got {t}.")
        if not callable(self.lr) and not (math.isfinite(float(self.lr)) and float(self.lr) > 0):
            raise ValueError(f"Dissipation(lr=...) must be finite and > 0, got {self.lr}.")
        if self.cells and not (self.query and self.loss == "squared"):
            raise ValueError("Dissipation(cells=True) needs query=True and loss='squared'.")

    def _outputs(self, ctx, params, which: str = "train"):
        u = ctx.apply_fn(params, ctx.train["x"] if which == "train" else ctx.test["x"])
        return u.reshape(u.shape[0], -1) if self.loss == "squared" else u

    def _grad_hess_loss(self, ctx, u):
        spec = losses.get_loss(self.loss)
        y = ctx.train["y"].reshape(u.shape) if self.loss == "squared" else ctx.train["y"]
        phi = spec.value(u, y).astype(f64())
        return spec.out_grad(u, y), jnp.asarray(spec.out_hessian(u), f64()), phi

    def _refresh(self, ctx, params, opt_state, step):
        p = None
        if self.preconditioner is not None:
            p = jax.tree.map(
                lambda q: jnp.where(jnp.isfinite(q), q, 0), self.preconditioner(opt_state)
            )
        x = ctx.train["x"]
        kw = {"precond": p, "implementation": self.implementation}
        k = ntk.kernel(ctx.apply_fn, params, x, **kw)
        kq = ntk.kernel(ctx.apply_fn, params, ctx.test["x"], x, **kw) if self.query else None
        lr = 1.0 if p is not None else (self.lr(step) if callable(self.lr) else self.lr)
        return k, kq, jnp.asarray(lr, f64())

    def init(self, ctx, params, opt_state):
        if self.query and ctx.test is None:
            raise ValueError("Dissipation(query=True) needs a test probe set (pass eval_sets).")
        u = self._outputs(ctx, params)
        g, hess, phi = self._grad_hess_loss(ctx, u)
        k, kq, lr = self._refresh(ctx, params, opt_state, jnp.zeros((), jnp.int32))
        uq = self._outputs(ctx, params, "test").reshape(-1) if self.query else None
        acc = dissipation.init(k.shape[0], 0 if uq is None else uq.shape[0])
        noise = jnp.zeros_like(g)
        if "y_clean" in ctx.train and self.loss == "squared":
            y = ctx.train["y"].reshape(u.shape)
            noise = split.residual_parts(u, ctx.train["y_clean"].reshape(u.shape), y)[1]
        return DissipationProbeState(
            acc if self.query else acc._replace(G=None),
            k,
            kq,
            hess,
            lr,
            jnp.zeros((), jnp.int32),
            g,
            noise,
            phi,
            u.reshape(-1),
            uq,
        )

    def __call__(self, ctx, state: DissipationProbeState, params, opt_state, step):
        acc = state.acc
        if not self.query:
            acc = acc._replace(G=jnp.zeros((0, state.k.shape[0]), acc.W.dtype))
        acc = dissipation.update(
            acc, state.k, state.lr, out_hessian=state.hess, steps=step - state.t,
            k_query_train=state.kq,
        )  # fmt: skip
        k, kq, lr = self._refresh(ctx, params, opt_state, step)
        u = self._outputs(ctx, params)
        g, hess, phi = self._grad_hess_loss(ctx, u)
        new = state._replace(
            acc=acc if self.query else acc._replace(G=None),
            k=k,
            kq=kq,
            hess=hess,
            lr=lr,
            t=step.astype(jnp.int32),
        )

        n = ctx.train["x"].shape[0]
        sp = split.split(acc.W, self.threshold, self.mode, n_examples=n)
        lam = sp.eigvals
        g0 = state.g0.astype(lam.dtype)
        s = {
            "w_lambda_max": lam[0],
            "w_trace": jnp.sum(lam),
            "w_effective_rank": spectrum.participation_ratio(lam),
            "channel_dim": jnp.sum(sp.channel),
            "time": acc.time,
            "loss_drop": state.phi0 - phi,
            "predicted_loss_drop": g0 @ acc.W @ g0,
        }
        noise_known = "y_clean" in ctx.train and self.loss == "squared"
        for label, v in (("g0", state.g0), ("g", g), ("noise", state.noise0)):
            if label == "noise" and not noise_known:
                continue
            s[f"{label}_channel"], s[f"{label}_reservoir"] = split.energies(sp, v.astype(lam.dtype))
        arrays = {"w_eigenvalues": lam}
        if self.query:
            uq = self._outputs(ctx, params, "test").reshape(-1)
            pred = dissipation.coupling(acc) @ (u.reshape(-1) - state.u0).astype(acc.G.dtype)
            actual = (uq - state.uq0).astype(pred.dtype)
            s["coupling_corr"] = jnp.corrcoef(pred, actual)[0, 1]
            s["coupling_rel_err"] = jnp.linalg.norm(pred - actual) / jnp.linalg.norm(actual)
            s["invisibility"] = split.invisibility_residual(sp, acc.G)
            arrays["predicted_displacement"], arrays["actual_displacement"] = pred, actual
        if self.cells:
            s.update(_cells(sp, acc, state.g0, state.noise0))
        return new, s, arrays


def _cells(sp: split.Split, acc: dissipation.DissipationState, g0, noise0) -> dict:
    """The split's cutoff and the four-cell energies (clean/noise × channel/reservoir)."""
    dtype = sp.eigvecs.dtype
    g_noise = noise0.astype(dtype)
    cells = split.four_cell(sp, acc.W, g0.astype(dtype) - g_noise, g_noise, acc.G.astype(dtype))
    out = {"cutoff": sp.threshold}
    for i, part in enumerate(PARTS):
        for j, sub in enumerate(SUBS):
            out[f"train_{part}_{sub}"] = cells.train_energy[i, j]
            out[f"dissipated_{part}_{sub}"] = cells.dissipated[i, j]
            out[f"test_{part}_{sub}"] = cells.test_energy[i, j]
    return out
