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

import jax
import jax.numpy as jnp
import numpy as np
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


WINDOWS = (1, 10, 100, 1000)


def _seed_columns(v) -> np.ndarray:
    """A history column as ``(T, S)``: a seed axis even for one seed."""
    v = np.asarray(v)
    return v[:, None] if v.ndim == 1 else v


def _check_block(p: np.ndarray, a: np.ndarray, windows) -> dict:
    out: dict = {"sum_predicted": float(p.sum()), "sum_actual": float(a.sum())}
    for w in windows:
        if len(p) // w >= 2:
            c = poprisk.window_correlation(p, a, w)
            out[f"w{w}"] = {k: getattr(c, k) for k in ("r", "ci_low", "ci_high", "n_windows")}
    return out


def population_risk_check(
    history: dict,
    heldout: str,
    name: str = "poprisk",
    windows=WINDOWS,
    split_at: list[int] | None = None,
) -> list[dict] | None:
    """The :class:`PopulationRisk` probe's predicted change against the held-out loss's change.

    For every step ``t`` whose line has the probe's ``predicted_change`` and the held-out loss
    ``heldout`` (a metrics key, e.g. ``"test/loss"``) at ``t`` and ``t + 1``, the pair
    (predicted_t, ``L(t + 1) − L(t)``) enters :func:`dyntheory.poprisk.window_correlation`; the
    steps must be consecutive, so run the probe and the evaluation every step. Returns, per seed,
    ``{"steps": T, "first_step", "sum_predicted", "sum_actual", "w<k>": {"r", "ci_low",
    "ci_high", "n_windows"}}`` for each window ``k`` that leaves at least 2 windows; with
    ``split_at`` (a step per seed) the same blocks again as ``"before"`` (``t <`` the step) and
    ``"after"``. ``None`` when the history has no such pairs.
    """
    key = f"probe/{name}/predicted_change"
    if key not in history or heldout not in history:
        return None
    steps = np.asarray(history["step"])
    pred, held = _seed_columns(history[key]), _seed_columns(history[heldout])
    row_of = {int(t): i for i, t in enumerate(steps)}
    out = []
    for s in range(pred.shape[1]):
        loss_at = {int(t): v for t, v in zip(steps, held[:, s], strict=True) if np.isfinite(v)}
        ts = [int(t) for t, v in zip(steps, pred[:, s], strict=True) if np.isfinite(v)]
        ts = [t for t in ts if t in loss_at and t + 1 in loss_at]
        if len(ts) < 2:
            return None
        if np.any(np.diff(ts) != 1):
            raise ValueError(
                f"{key} and {heldout} are not on consecutive steps: run the probe and the "
                "evaluation every step (probe schedule every:1, eval_every=1)."
            )
        p = np.array([pred[row_of[t], s] for t in ts])
        a = np.array([loss_at[t + 1] - loss_at[t] for t in ts])
        row: dict = {"steps": len(ts), "first_step": ts[0], **_check_block(p, a, windows)}
        if split_at is not None:
            before = np.asarray(ts) < split_at[s]
            row["split_step"] = int(split_at[s])
            row["before"] = _check_block(p[before], a[before], windows)
            row["after"] = _check_block(p[~before], a[~before], windows)
        out.append(row)
    return out


def loo_stopping_step(history: dict, window: int = 100, name: str = "poprisk") -> list:
    """A stopping rule from the training set alone: stop once the gradient signal is gone.

    Per seed, the first step ``t ≥ window − 1`` at which the mean of the probe's ``loo_sum``
    (``Σ_k (μ_k² − Σ_{B,k}/(b − 1))``, unbiased for ``‖∇R‖²``, THEORY.md §6) over the last
    ``window`` probed steps is ``≤ 0``: the minibatch gradients no longer agree on any direction
    of population descent. ``None`` for a seed where that never happens. Needs the probe every
    step; no held-out data is read.
    """
    key = f"probe/{name}/loo_sum"
    if key not in history:
        raise ValueError(f"the history has no {key!r}: run the PopulationRisk probe every step.")
    if not (isinstance(window, int) and window >= 1):
        raise ValueError(f"window must be a positive integer, got {window!r}")
    steps = np.asarray(history["step"])
    loo = _seed_columns(history[key])
    out = []
    for col in loo.T:
        ok = np.isfinite(col)
        t, v = steps[ok], col[ok]
        if len(v) < window:
            out.append(None)
            continue
        means = np.convolve(v, np.ones(window) / window, mode="valid")
        hit = np.flatnonzero(means <= 0)
        out.append(int(t[hit[0] + window - 1]) if hit.size else None)
    return out


def ws_stopping_step(history: dict, name: str = "dissipation") -> list:
    """A stopping rule from ``W_S``'s split of the training set alone (THEORY.md §6).

    Per seed, the first probe step ``s > 0`` with a non-empty channel at which the remaining
    training residual lies mostly in the reservoir: ``g_reservoir(s) ≥ g_channel(s)``, the
    energies of ``g(s)`` outside and inside the directions that training has already
    dissipated (:func:`dyntheory.split.split`). What the run can fit quickly is then fitted;
    what is left is being fitted through the directions that carry the label noise. ``None``
    for a seed where that never happens. No held-out data is read; its one threshold (1:1) and
    the split's are fixed in advance.
    """
    keys = [f"probe/{name}/{k}" for k in ("g_channel", "g_reservoir", "channel_dim")]
    missing = [k for k in keys if k not in history]
    if missing:
        raise ValueError(f"the history has no {missing[0]!r}: run the Dissipation probe.")
    steps = np.asarray(history["step"])
    ch, res, dim = (_seed_columns(history[k]) for k in keys)
    out = []
    for s in range(ch.shape[1]):
        fire = np.isfinite(ch[:, s]) & (steps > 0) & (dim[:, s] > 0) & (res[:, s] >= ch[:, s])
        out.append(int(steps[np.argmax(fire)]) if fire.any() else None)
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class Norms(Probe):
    """Per-layer (per-leaf) gradient and parameter norms, on the step's training batch."""

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
