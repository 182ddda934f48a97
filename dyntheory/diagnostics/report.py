r"""Trainability report at initialization: the one-batch overfit test, warnings, ``diagnose``.

:func:`diagnose` runs every measure of :mod:`dyntheory.diagnostics` on one batch, the one-batch
overfit test (:func:`train_losses` / :func:`classify_run`), and turns the numbers into warnings
with the documented :class:`Thresholds`. The report is a JSON-ready dict
(``dyntheory.engine.rundir.write_json``); :mod:`dyntheory.diagnostics.format` prints it as tables.

Example::

    model = MLP(16, (64,) * 8, 1, activation="tanh", rngs=nnx.Rngs(0))
    apply_fn, params = functional(model)
    report = diagnose(apply_fn, params, x, y, activation="tanh")
    print(format_report(report)); rundir.write_json("diagnostics.json", report)
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from dyntheory.diagnostics import measures as dg
from dyntheory.models import count_params

OPTIMIZERS = ("gd", "adam")


class Thresholds(NamedTuple):
    r"""When :func:`find_warnings` warns. [ours]

    - ``vanishing_gradients`` / ``exploding_gradients``: the depth ratio of relative gradients
      ``ρ_first/ρ_last`` (:func:`dyntheory.diagnostics.gradient_norms`) below ``grad_ratio_low``
      (1e-2) / above ``grad_ratio_high`` (1e2): at one learning rate the first layer moves 100×
      less / more, relative to its size, than the last hidden layer.
    - ``vanishing_jacobian`` / ``exploding_jacobian``: the end-to-end input–output Jacobian's
      spectral norm (batch mean) below ``jacobian_low`` (1e-2) / above ``jacobian_high`` (1e2):
      for standardized inputs, an input perturbation of size 1 moves the output by less than
      0.01 / more than 100 (the signal dies / blows up through depth).
    - ``ill_conditioned``: NTK condition number (on its numerical range) above
      ``condition_max`` (1e6), or the NTK numerically rank-deficient (``numerical_rank < N``).
      At the step ``η_max/2`` the slowest NTK mode contracts by ``1 − 1/κ`` per step (needs ~κ
      steps); a mode below round-off is not trained at all.
    - ``rank_collapse``: participation effective rank of the NTK below ``effective_rank_min``
      (1.5): one direction carries the kernel, i.e. the network maps all inputs alike.
    - ``linearized_no_fit``: the frozen-NTK model, trained like the overfit test (full-batch GD at
      ``η_max/2`` for its budget), keeps more than the test's ``tol`` of the initial loss
      (squared loss only; a prediction made without training).
    - ``overfit_failed``: the one-batch overfit test did not reach ``tol`` (or diverged).
    """

    grad_ratio_low: float = 1e-2
    grad_ratio_high: float = 1e2
    jacobian_low: float = 1e-2
    jacobian_high: float = 1e2
    condition_max: float = 1e6
    effective_rank_min: float = 1.5


# ----------------------------------------------------------------------------- overfit test


def train_losses(
    apply_fn, params, x, y, *, lrs, steps: int, loss: str = "squared", optimizer: str = "gd"
) -> np.ndarray:
    """Full-batch training on the one batch; ``(len(lrs), steps + 1)`` losses ``Φ(w_t)``.

    One run per learning rate, all vmapped in one jitted ``lax.scan``; ``"gd"`` is
    ``optax.sgd`` (plain GD), ``"adam"`` ``optax.adam``. Non-finite losses stay in the record.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {list(OPTIMIZERS)}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    dg.check_batch(apply_fn, params, x, y, loss)
    lrs = np.atleast_1d(np.asarray(lrs, np.float64))
    if lrs.ndim != 1 or not np.all(np.isfinite(lrs)) or np.any(lrs <= 0):
        raise ValueError(f"learning rates must be positive and finite, got {lrs}")
    f = dg.loss_fn(loss)
    objective = lambda w: f(apply_fn(w, x), y)
    dtype = jax.tree.leaves(params)[0].dtype

    def one(lr):
        opt = optax.sgd(lr) if optimizer == "gd" else optax.adam(lr)

        def step(carry, _):
            w, s = carry
            value, g = jax.value_and_grad(objective)(w)
            updates, s = opt.update(g, s, w)
            return (optax.apply_updates(w, updates), s), value

        (w, _), values = lax.scan(step, (params, opt.init(params)), None, length=int(steps))
        return jnp.concatenate([values, objective(w)[None]])

    return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(lrs, dtype)), np.float64)


def classify_run(losses, tol: float, diverge_factor: float = 2.0) -> dict[str, Any]:
    r"""Outcome of one loss curve ``Φ_0..Φ_T``.

    ``diverged``: a non-finite loss or ``Φ_T ≥ diverge_factor·Φ_0`` (a run that merely stalls
    near ``Φ_0`` is not diverged); else ``fit`` when some ``Φ_t ≤ tol·Φ_0`` (``steps_to_fit`` =
    the first such t), else ``not_fit``. ``final_ratio = Φ_T/Φ_0``, ``peak_ratio = max_t
    Φ_t/Φ_0`` (> 1: the loss rose first, e.g. a catapult).
    """
    v = np.asarray(losses, np.float64)
    if v.ndim != 1 or v.size < 2:
        raise ValueError(f"losses must be a curve (T + 1,) with T >= 1, got shape {v.shape}")
    if not tol > 0 or not diverge_factor > 1:
        raise ValueError(f"need tol > 0 and diverge_factor > 1, got {tol}, {diverge_factor}")
    l0 = v[0]
    finite = bool(np.all(np.isfinite(v)))
    hit = np.nonzero(v <= tol * l0)[0] if finite else np.array([], int)
    diverged = not finite or v[-1] >= diverge_factor * l0
    status = "diverged" if diverged else ("fit" if hit.size else "not_fit")
    return {
        "status": status,
        "steps_to_fit": int(hit[0]) if status == "fit" else None,
        "final_ratio": float(v[-1] / l0) if finite else None,
        "peak_ratio": float(np.max(v) / l0) if finite else None,
    }


def overfit_batch(
    apply_fn,
    params,
    x,
    y,
    *,
    lr: float,
    steps: int = 500,
    loss: str = "squared",
    optimizer: str = "gd",
    tol: float = 1e-3,
) -> dict[str, Any]:
    """The one-minibatch overfit test: train on ``(x, y)`` for ``steps`` and classify the run.

    Returns ``{"optimizer", "lr", "steps", "tol", "status", "steps_to_fit", "final_ratio",
    "peak_ratio", "losses"}`` (:func:`classify_run`).
    """
    curve = train_losses(
        apply_fn, params, x, y, lrs=[lr], steps=steps, loss=loss, optimizer=optimizer
    )[0]
    return {
        "optimizer": optimizer,
        "lr": float(lr),
        "steps": int(steps),
        "tol": float(tol),
        **classify_run(curve, tol),
        "losses": [None if not math.isfinite(v) else v for v in curve.tolist()],
    }


# ----------------------------------------------------------------------------- warnings


def _warn(out, name, value, threshold, message):
    out.append({"name": name, "value": value, "threshold": threshold, "message": message})


def find_warnings(report: dict[str, Any], thresholds: Thresholds | None = None) -> list[dict]:
    """Warnings ``[{"name", "value", "threshold", "message"}]`` for a :func:`diagnose` report."""
    t, out = thresholds or Thresholds(), []
    ratio = report["gradients"]["grad_ratio"]
    if ratio is not None and ratio < t.grad_ratio_low:
        _warn(
            out,
            "vanishing_gradients",
            ratio,
            t.grad_ratio_low,
            f"first-layer relative gradient is {ratio:.2g}x the last hidden layer's",
        )
    if ratio is not None and ratio > t.grad_ratio_high:
        _warn(
            out,
            "exploding_gradients",
            ratio,
            t.grad_ratio_high,
            f"first-layer relative gradient is {ratio:.2g}x the last hidden layer's",
        )
    e2e = report["jacobian"]["end_to_end"]
    if e2e is not None and e2e["spectral"] < t.jacobian_low:
        _warn(
            out,
            "vanishing_jacobian",
            e2e["spectral"],
            t.jacobian_low,
            f"input-output Jacobian spectral norm {e2e['spectral']:.2g}: the signal vanishes",
        )
    if e2e is not None and e2e["spectral"] > t.jacobian_high:
        _warn(
            out,
            "exploding_jacobian",
            e2e["spectral"],
            t.jacobian_high,
            f"input-output Jacobian spectral norm {e2e['spectral']:.2g}: the signal explodes",
        )
    k = report["ntk"]
    size = len(k["eigenvalues"])
    if not k["condition_number"] <= t.condition_max or k["numerical_rank"] < size:
        _warn(
            out,
            "ill_conditioned",
            k["condition_number"],
            t.condition_max,
            f"NTK condition number {k['condition_number']:.2g}, numerical rank "
            f"{k['numerical_rank']} of {size}",
        )
    if k["effective_rank_participation"] < t.effective_rank_min:
        _warn(
            out,
            "rank_collapse",
            k["effective_rank_participation"],
            t.effective_rank_min,
            f"NTK effective rank {k['effective_rank_participation']:.3g}: inputs look alike",
        )
    lin, fit = report.get("linearized"), report.get("overfit")
    if lin is not None and lin["loss_ratio"] > lin["tol"]:
        _warn(
            out,
            "linearized_no_fit",
            lin["loss_ratio"],
            lin["tol"],
            f"frozen-NTK GD at lr {lin['lr']:.3g} keeps {lin['loss_ratio']:.2g} of the loss "
            f"after {lin['steps']} steps",
        )
    if fit is not None and fit["status"] != "fit":
        _warn(
            out,
            "overfit_failed",
            fit["final_ratio"],
            fit["tol"],
            f"one-batch overfit test {fit['status']} ({fit['optimizer']}, lr {fit['lr']:.3g}, "
            f"{fit['steps']} steps)",
        )
    return out


# ----------------------------------------------------------------------------- diagnose


def diagnose(
    apply_fn,
    params,
    x,
    y,
    *,
    loss: str = "squared",
    activation: str | None = None,
    beta: float = 1.0,
    key: jax.Array | None = None,
    power_iters: int = 50,
    ntk_implementation: str = "jacobian",
    overfit_steps: int | None = 500,
    overfit_optimizer: str = "gd",
    overfit_lr: float | None = None,
    overfit_lr_fraction: float = 0.5,
    overfit_tol: float = 1e-3,
    run_overfit: bool = True,
    per_layer: bool = True,
    thresholds: Thresholds | None = None,
) -> dict[str, Any]:
    r"""Every diagnostic of ``apply_fn`` at ``params`` on the batch ``(x, y)``: a JSON-ready dict.

    Args:
      apply_fn, params, x, y, loss: the model, one batch, its loss (:mod:`dyntheory.diagnostics`).
      activation, beta: the model's activation, for the per-layer activation nonlinearity.
      key, power_iters: the Jacobian power iteration. ntk_implementation: see
        :func:`dyntheory.ntk.empirical_ntk`.
      overfit_steps: budget of the one-batch overfit test and of its linearized prediction
        (``None``: neither).
      overfit_optimizer, overfit_lr, overfit_lr_fraction, overfit_tol: the test trains with
        ``overfit_lr`` (default ``overfit_lr_fraction·η_max`` for ``"gd"``, 1e-3 for ``"adam"``)
        and counts it fit once ``Φ_t ≤ tol·Φ_0``.
      run_overfit: run the test itself (``False``: only its linearized prediction).
      per_layer: per-layer Jacobians (``False``: end to end only; the per-layer nonlinearity,
        cheap, is computed whenever ``apply_fn`` has taps).
      thresholds: see :class:`Thresholds` (default ``Thresholds()``).

    Returns:
      ``{"num_params", "n", "p", "loss", "initial_loss", "output_rms", "target_rms",
      "gradients", "jacobian", "nonlinearity", "ntk", "linearized", "overfit", "warnings",
      "thresholds", "timings_s"}``.
    """
    u = dg.check_batch(apply_fn, params, x, y, loss)
    if overfit_optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {overfit_optimizer!r}; choose from {OPTIMIZERS}")
    if overfit_steps is not None and (int(overfit_steps) != overfit_steps or overfit_steps < 1):
        raise ValueError(f"overfit_steps must be a positive integer or None, got {overfit_steps}")
    if not overfit_tol > 0 or not overfit_lr_fraction > 0:
        raise ValueError("overfit_tol and overfit_lr_fraction must be positive")
    timings, clock = {}, time.perf_counter()

    def lap(name):
        nonlocal clock
        now = time.perf_counter()
        timings[name], clock = now - clock, now

    n, p = u.shape
    report: dict[str, Any] = {
        "num_params": count_params(params),
        "n": int(n),
        "p": int(p),
        "loss": loss,
        "activation": activation,
    }
    report["gradients"] = dg.gradient_norms(apply_fn, params, x, y, loss=loss)
    report["initial_loss"] = report["gradients"]["loss"]
    report["output_rms"] = float(jnp.sqrt(jnp.mean(jnp.square(u.astype(jnp.float32)))))
    report["target_rms"] = float(jnp.sqrt(jnp.mean(jnp.square(y)))) if loss == "squared" else None
    lap("gradients")
    report["jacobian"] = dg.jacobian_norms(
        apply_fn, params, x, key=key, num_iters=power_iters, per_layer=per_layer
    )
    lap("jacobian")
    if callable(getattr(apply_fn, "tapped", None)):
        report["nonlinearity"] = dg.layer_nonlinearity(
            apply_fn, params, x, activation=activation, beta=beta
        )
    else:
        report["nonlinearity"] = None
    lap("nonlinearity")
    ntk = dg.ntk_diagnostics(apply_fn, params, x, y, loss=loss, implementation=ntk_implementation)
    report["ntk"] = ntk
    lap("ntk")
    eta_max = ntk["suggested_max_lr"]
    if overfit_lr is None:
        overfit_lr = overfit_lr_fraction * eta_max if overfit_optimizer == "gd" else 1e-3
    report["linearized"] = None
    if loss == "squared" and overfit_steps is not None and overfit_optimizer == "gd":
        ratio = dg.linearized_loss_ratio(
            ntk["eigenvalues"], ntk["residual_energy"], overfit_lr, overfit_steps, n
        )
        report["linearized"] = {
            "lr": float(overfit_lr),
            "steps": int(overfit_steps),
            "tol": float(overfit_tol),
            "loss_ratio": float(ratio),
        }
    report["overfit"] = None
    if overfit_steps is not None and run_overfit:
        report["overfit"] = overfit_batch(
            apply_fn,
            params,
            x,
            y,
            lr=overfit_lr,
            steps=overfit_steps,
            loss=loss,
            optimizer=overfit_optimizer,
            tol=overfit_tol,
        )
    lap("overfit")
    thresholds = thresholds or Thresholds()
    report["thresholds"] = thresholds._asdict()
    report["warnings"] = find_warnings(report, thresholds)
    report["timings_s"] = timings
    return report
