r"""Probes: theory quantities measured during training, each on its own schedule.

The engine (:mod:`dyntheory.train`) calls a probe at the steps of its :class:`Schedule`, on the
fixed probe subsets ``ctx.train`` / ``ctx.test`` (dicts with ``"x"``, ``"y"`` and, when the clean
targets are known, ``"y_clean"``), jitted once and vmapped over seeds. Scalars are logged as
``probe/<name>/<key>``; arrays go to ``probes.npz`` as ``<name>/<key>`` with shape ``(T, ...)``
(``(T, S, ...)`` with seeds) next to ``<name>/step``. A probe's state (an accumulator, the initial
kernel) is checkpointed with the run. Kernels are float32 from :mod:`dyntheory.ntk`; spectra and
accumulators are float64 when ``jax_enable_x64`` is on (the CLI turns it on).

========================  ============  =====================================================
probe                     name          scalars (arrays)
========================  ============  =====================================================
:class:`NTKSpectrum`      ``ntk``       λ_max, λ_min, trace, effective ranks, condition number,
                                        kernel-target alignment, 2n/λ_max, ``drift`` =
                                        ‖K_t − K_0‖_F/‖K_0‖_F (``eigenvalues``: top-k)
:class:`Dissipation`      ``dissip``    W_S spectrum summaries, channel dimension, the loss
                                        identity Φ(0) − Φ(t) vs g(0)ᵀ W g(0), channel/reservoir
                                        energies of g(0), g(t) and the label noise, coupling
                                        A = G_Q D† check, test invisibility (``w_eigenvalues``)
:class:`GateStats`        ``gate``      PRM ``gate_mean``, ``gate_open_fraction``
:class:`PopulationRisk`   ``poprisk``   LOO ‖∇R‖² estimate, predicted risk change (per step and
                                        summed over the run), hard-gate open fraction
:class:`Norms`            ``norms``     ``grad/<layer path>``, ``param/<layer path>``, global norms
========================  ============  =====================================================

Writing a probe: subclass :class:`Probe` (a frozen dataclass with ``schedule`` and ``name``) and
implement ``init(ctx, params, opt_state) -> state`` and ``__call__(ctx, state, params, opt_state,
step) -> (state, scalars, arrays)``, pure and jit-able; ``step`` is a traced int32.

Example::

    from dyntheory.probes import Dissipation, NTKSpectrum, Norms, Schedule, adam_preconditioner
    probes = [NTKSpectrum(Schedule.log(4), top_k=16),
              Dissipation(Schedule.every(10), preconditioner=adam_preconditioner(1e-3)),
              Norms(Schedule.every(100))]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from dyntheory import dissipation, losses, poprisk, spectrum, split
from dyntheory.probing import (
    Probe,
    ProbeContext,
    Schedule,
    _batch_grads,
    _kernel,
    adam_preconditioner,
    effective_ntk,
    find_state,
    path_name,
    prm_preconditioner,
)


def _f64():
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _tree_sum(tree) -> jax.Array:
    return sum((jnp.sum(x) for x in jax.tree.leaves(tree)), jnp.zeros((), _f64()))


@dataclasses.dataclass(frozen=True, eq=False)
class NTKSpectrum(Probe):
    """Empirical NTK of the train probe set: spectrum summaries, top-k eigenvalues, kernel drift."""

    schedule: Schedule = Schedule.log(4)
    name: str = "ntk"
    top_k: int = 16
    drift: bool = True  # keep K_0 (np × np) and report ‖K_t − K_0‖_F / ‖K_0‖_F
    implementation: str = "auto"

    def _k(self, ctx, params):
        return _kernel(ctx.apply_fn, params, ctx.train["x"], implementation=self.implementation)

    def init(self, ctx, params, opt_state):
        return {"k0": self._k(ctx, params)} if self.drift else {}

    def __call__(self, ctx, state, params, opt_state, step):
        k = self._k(ctx, params)
        lam = jnp.linalg.eigvalsh(k.astype(_f64()))[::-1]
        scalars = spectrum.summaries(lam, n=ctx.train["x"].shape[0])
        scalars["kernel_target_alignment"] = spectrum.kernel_target_alignment(k, ctx.train["y"])
        if self.drift:
            k0 = state["k0"]
            scalars["drift"] = jnp.linalg.norm(k - k0) / jnp.linalg.norm(k0)
        return state, scalars, {"eigenvalues": lam[: self.top_k]}


class DissipationProbeState(NamedTuple):
    acc: dissipation.DissipationState  # W_S, P, D, G_Q accumulated from step 0
    k: jax.Array  # (np, np) kernel at the last probe step, held constant until the next
    kq: jax.Array  # (mq, np) cross kernel at the last probe step ((0, np) without query)
    hess: jax.Array  # () 1/n (squared loss) or (np, np) softmax output Hessian
    lr: jax.Array  # () step size of the interval (1 with a preconditioner: it is in the kernel)
    t: jax.Array  # () int32, the last probe step
    g0: jax.Array  # (np,) output gradient g(0)
    noise0: jax.Array  # (np,) label-noise part of g(0), (y_clean − y)/n (zeros if unknown)
    phi0: jax.Array  # () probe-set loss at step 0
    u0: jax.Array  # (np,) train outputs at step 0
    uq0: jax.Array  # (mq,) query outputs at step 0


@dataclasses.dataclass(frozen=True, eq=False)
class Dissipation(Probe):
    r"""The dissipation accumulator (THEORY §3) over the run, on the probe sets, from step 0.

    At each probe step ``t`` the accumulator advances over ``[t_prev, t)`` with the kernel of
    ``t_prev`` held constant (:func:`dyntheory.dissipation.update` with ``steps = t − t_prev``),
    then the kernel is refreshed. It models full-batch GD on the probe-set loss: exact when the
    probe set is the training set and training is full batch; otherwise an approximation.
    With ``preconditioner`` (:func:`adam_preconditioner`, :func:`prm_preconditioner`) the kernel is
    the effective one ``J diag(p) Jᵀ`` with ``lr = 1``; momentum is ignored (THEORY §3).

    Args:
      lr: GD step size η, a float or a schedule ``step -> η`` (ignored with a preconditioner).
      preconditioner: ``opt_state -> p`` (a pytree like the params), or None for plain GD.
      loss: ``"squared"`` (B = I/n) or ``"softmax_ce"`` (B from the logits at each probe step).
      query: also accumulate the test block ``G_Q`` (needs a test probe set).
      threshold, mode: the channel/reservoir split (:func:`dyntheory.split.split`).
    """

    schedule: Schedule = Schedule.every(10)
    name: str = "dissipation"
    lr: float | Callable = 1e-3
    preconditioner: Callable | None = None
    loss: str = "squared"
    query: bool = True
    threshold: float = 1e-3
    mode: str = "relative"
    implementation: str = "auto"

    def _outputs(self, ctx, params, which: str = "train"):
        u = ctx.apply_fn(params, ctx.train["x"] if which == "train" else ctx.test["x"])
        return u.reshape(u.shape[0], -1) if self.loss == "squared" else u

    def _grad_hess_loss(self, ctx, u):
        y = ctx.train["y"]
        if self.loss == "squared":
            y = y.reshape(u.shape)
            return (
                losses.squared_out_grad(u, y),
                jnp.asarray(losses.squared_out_hessian(u.shape[0])),
                losses.squared_loss(u, y),
            )
        if self.loss == "softmax_ce":
            return (
                losses.softmax_out_grad(u, y),
                losses.softmax_out_hessian(u),
                losses.softmax_cross_entropy(u, y),
            )
        raise ValueError(f"Dissipation loss must be 'squared' or 'softmax_ce', got {self.loss!r}.")

    def _refresh(self, ctx, params, opt_state, step):
        p = None if self.preconditioner is None else self.preconditioner(opt_state)
        x = ctx.train["x"]
        kw = {"precond": p, "implementation": self.implementation}
        k = _kernel(ctx.apply_fn, params, x, **kw)
        kq = _kernel(ctx.apply_fn, params, ctx.test["x"], x, **kw) if self.query else None
        lr = 1.0 if p is not None else (self.lr(step) if callable(self.lr) else self.lr)
        return k, kq, jnp.asarray(lr, _f64())

    def init(self, ctx, params, opt_state):
        if self.query and ctx.test is None:
            raise ValueError("Dissipation(query=True) needs a test probe set (pass eval_sets).")
        u = self._outputs(ctx, params)
        g, hess, phi = self._grad_hess_loss(ctx, u)
        k, kq, lr = self._refresh(ctx, params, opt_state, jnp.zeros((), jnp.int32))
        uq = self._outputs(ctx, params, "test").reshape(-1) if self.query else jnp.zeros((0,))
        acc = dissipation.init(k.shape[0], uq.shape[0])
        noise = jnp.zeros_like(g)
        if "y_clean" in ctx.train and self.loss == "squared":
            y = ctx.train["y"].reshape(u.shape)
            noise = split.residual_parts(u, ctx.train["y_clean"].reshape(u.shape), y)[1]
        kq = jnp.zeros((0, k.shape[0]), k.dtype) if kq is None else kq
        return DissipationProbeState(
            acc,
            k,
            kq,
            jnp.asarray(hess, _f64()),
            lr,
            jnp.zeros((), jnp.int32),
            g,
            noise,
            phi,
            u.reshape(-1),
            uq,
        )

    def __call__(self, ctx, state: DissipationProbeState, params, opt_state, step):
        acc = dissipation.update(
            state.acc,
            state.k,
            state.lr,
            out_hessian=state.hess,
            steps=step - state.t,
            k_query_train=state.kq if self.query else None,
        )
        k, kq, lr = self._refresh(ctx, params, opt_state, step)
        u = self._outputs(ctx, params)
        g, hess, phi = self._grad_hess_loss(ctx, u)
        new = state._replace(
            acc=acc,
            k=k,
            kq=state.kq if kq is None else kq,
            hess=jnp.asarray(hess, _f64()),
            lr=lr,
            t=step.astype(jnp.int32),
        )

        n = ctx.train["x"].shape[0]
        sp = split.split(acc.W, self.threshold, self.mode, n_examples=n)
        lam = sp.eigvals
        s = {
            "w_lambda_max": lam[0],
            "w_trace": jnp.sum(lam),
            "w_effective_rank": spectrum.participation_ratio(lam),
            "channel_dim": jnp.sum(sp.channel),
            "time": acc.time,
            "loss_drop": state.phi0 - phi,
            "predicted_loss_drop": state.g0 @ acc.W @ state.g0,
        }
        for label, v in (("g0", state.g0), ("g", g), ("noise", state.noise0)):
            if label == "noise" and not ("y_clean" in ctx.train and self.loss == "squared"):
                continue
            s[f"{label}_channel"], s[f"{label}_reservoir"] = split.energies(sp, v.astype(lam.dtype))
        if self.query:
            uq = self._outputs(ctx, params, "test").reshape(-1)
            pred = dissipation.coupling(acc) @ (u.reshape(-1) - state.u0).astype(acc.G.dtype)
            actual = (uq - state.uq0).astype(pred.dtype)
            s["coupling_corr"] = jnp.corrcoef(pred, actual)[0, 1]
            s["coupling_rel_err"] = jnp.linalg.norm(pred - actual) / jnp.linalg.norm(actual)
            s["invisibility"] = split.invisibility_residual(sp, acc.G)
        return new, s, {"w_eigenvalues": lam}


@dataclasses.dataclass(frozen=True, eq=False)
class GateStats(Probe):
    """PRM's gate statistics of the last step, read with ``optax.tree.get`` from the state.

    Needs an optimizer built with ``prm(..., gate_stats=True)`` (the statistics are off by default
    to keep PRM's update elementwise); otherwise it raises when the run is compiled.
    """

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

    schedule: Schedule = Schedule.every(100)
    name: str = "poprisk"
    lr: float | Callable = 1e-3
    preconditioner: Callable | None = None

    def init(self, ctx, params, opt_state):
        z = jnp.zeros((), _f64())
        return {"cumulative": z, "last": z, "t": jnp.zeros((), jnp.int32)}

    def __call__(self, ctx, state, params, opt_state, step):
        loss = lambda p, b: ctx.loss_fn(ctx.apply_fn, p, b, ctx.key)[0]
        grads = poprisk.per_example_grads(loss, params, ctx.batch())
        st = poprisk.stats(grads)
        if self.preconditioner is None:
            eta, p = (self.lr(step) if callable(self.lr) else self.lr), None
        else:
            eta, p = 1.0, self.preconditioner(opt_state)
        change = poprisk.predicted_risk_change(grads, eta, precond=p).astype(_f64())
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

    schedule: Schedule = Schedule.every(100)
    name: str = "norms"

    def __call__(self, ctx, state, params, opt_state, step):
        grads = _batch_grads(ctx, params)
        out = {"grad/global": optax.tree.norm(grads), "param/global": optax.tree.norm(params)}
        for kind, tree in (("grad", grads), ("param", params)):
            for path, x in jax.tree.flatten_with_path(tree)[0]:
                out[f"{kind}/{path_name(path)}"] = jnp.linalg.norm(x.reshape(-1))
        return state, out, {}


def default_probes(probe_every: int = 500, norms_every: int = 100) -> list[Probe]:
    """The engine's default probe set: NTK spectrum + drift and per-layer norms."""
    return [NTKSpectrum(Schedule.every(probe_every)), Norms(Schedule.every(norms_every))]


__all__ = [
    "Dissipation",
    "DissipationProbeState",
    "GateStats",
    "NTKSpectrum",
    "Norms",
    "PopulationRisk",
    "Probe",
    "ProbeContext",
    "Schedule",
    "adam_preconditioner",
    "default_probes",
    "effective_ntk",
    "find_state",
    "prm_preconditioner",
]
