"""Wiring of the init-diagnostics sweep: data, models, diagnose, GD runs, results.json.

Run directory::

    config.json, results.json, reports.json (every full diagnose report)

``results.json`` (schema checked by ``tests/test_exp_init_diagnostics.py``)::

    {"experiment": "init_diagnostics", "wall_s", "multipliers", "train_multiplier", "steps", "tol",
     "predictive_warnings": [names], "activation_nonlinearity": {name: N(φ, σ=1)},
     "rows": [{"depth", "activation", "variant", "norm", "residual", "num_params",
               "predicted_max_lr", "lambda_max", "condition_number", "effective_rank", "kta",
               "grad_ratio", "jacobian_spectral", "mean_block_nonlinearity",
               "linearized_loss_ratio", "warnings": [names],
               "runs": [{"multiplier", "lr", "status", "steps_to_fit", "final_ratio",
                         "peak_ratio"}],
               "measured_max_stable_lr": [lo | null, hi | null], "bracket_multipliers": [..],
               "bound": "below" | "at" | "above", "non_monotone", "trained",
               "predicted_trainable", "warnings_match", "wall_s"}],
     "summary": {...}, "table": markdown}
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dyntheory.diagnostics.format import summary_row
from dyntheory.diagnostics.measures import activation_nonlinearity
from dyntheory.diagnostics.report import classify_run, diagnose, train_losses
from dyntheory.engine import rundir
from dyntheory.models import ACTIVATIONS, MLP, functional
from experiments.init_diagnostics.config import Config

#: Warnings made from init-time quantities only (``overfit_failed`` needs training).
PREDICTIVE = (
    "vanishing_gradients",
    "exploding_gradients",
    "vanishing_jacobian",
    "exploding_jacobian",
    "ill_conditioned",
    "rank_collapse",
    "linearized_no_fit",
)


def make_data(cfg: Config) -> tuple[jax.Array, jax.Array]:
    """Gaussian inputs ``(n, d_in)`` and a random tanh teacher's standardized outputs ``(n, 1)``."""
    kx, kt = jax.random.split(jax.random.key(cfg.data_seed))
    x = jax.random.normal(kx, (cfg.n, cfg.d_in), jnp.float32)
    teacher = MLP(cfg.d_in, (32,), 1, activation="tanh", rngs=nnx.Rngs(kt))
    y = teacher(x)
    return x, ((y - jnp.mean(y)) / jnp.std(y)).astype(jnp.float32)


def make_model(cfg: Config, depth: int, activation: str, variant: str):
    norm = "layernorm" if "layernorm" in variant else None
    model = MLP(
        cfg.d_in,
        (cfg.width,) * depth,
        1,
        activation=activation,
        norm=norm,
        residual="residual" in variant,
        rngs=nnx.Rngs(cfg.seed),
    )
    return functional(model)


def bracket(multipliers, statuses) -> tuple[float | None, float | None, bool]:
    """``(largest multiplier below the first divergence, first diverging one, non_monotone)``.

    ``None`` for a missing side (everything stable / the smallest already diverged);
    ``non_monotone`` when a larger multiplier is stable again after a divergence.
    """
    order = np.argsort(multipliers)
    m = [float(multipliers[i]) for i in order]
    div = [statuses[i] == "diverged" for i in order]
    if not any(div):
        return m[-1], None, False
    j = div.index(True)
    return (m[j - 1] if j else None), m[j], not all(div[j:])


def bound_position(lo: float | None, hi: float | None) -> str:
    """Where the measured threshold sits relative to η_max (multiplier 1): below, at or above."""
    if hi is not None and hi <= 1.0:
        return "below"  # diverged at or under the prediction: the bound is not safe
    if lo is not None and lo >= 1.0:
        return "above"  # stable at or beyond it: the bound is conservative
    return "at"


def _fmt_runs(runs) -> str:
    mark = {"fit": "F", "not_fit": "n", "diverged": "X"}
    return " ".join(mark[r["status"]] for r in runs)


def markdown_table(rows, multipliers) -> str:
    """The results table (docs/results/init_diagnostics.md): one line per configuration."""
    head = (
        "depth",
        "act",
        "variant",
        "nonlin",
        "pred. max lr",
        "measured stable (x pred.)",
        "runs " + "/".join(f"{m:g}" for m in multipliers),
        "warnings",
        "trained",
        "match",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lo, hi = r["bracket_multipliers"]
        br = f"[{'-' if lo is None else f'{lo:g}'}, {'-' if hi is None else f'{hi:g}'})"
        nl = r["mean_block_nonlinearity"]
        lines.append(
            "| "
            + " | ".join(
                (
                    str(r["depth"]),
                    r["activation"],
                    r["variant"],
                    "-" if nl is None else f"{nl:.2f}",
                    f"{r['predicted_max_lr']:.3g}",
                    br,
                    _fmt_runs(r["runs"]),
                    ", ".join(r["warnings"]) or "-",
                    "yes" if r["trained"] else "no",
                    "yes" if r["warnings_match"] else "NO",
                )
            )
            + " |"
        )
    return "\n".join(lines)


def summarize(rows) -> dict:
    """Counts: where the bound sits, early loss growth, warnings vs training."""
    pos = [r["bound"] for r in rows]
    below = [run for r in rows for run in r["runs"] if run["multiplier"] < 1]
    above = [run for r in rows for run in r["runs"] if run["multiplier"] > 1]
    # the loss exceeded its initial value at some step (or went non-finite)
    rose = lambda run: run["peak_ratio"] is None or run["peak_ratio"] > 1.0
    fail = [not r["trained"] for r in rows]
    warned = [not r["predicted_trainable"] for r in rows]
    per_warning = {}
    for name in PREDICTIVE:
        hit = [name in r["warnings"] for r in rows]
        if any(hit):
            per_warning[name] = {
                "warned": sum(hit),
                "warned_and_failed": sum(h and f for h, f in zip(hit, fail, strict=True)),
            }
    vanish = ["vanishing_gradients" in r["warnings"] for r in rows]
    return {
        "configs": len(rows),
        "bound_below": pos.count("below"),
        "bound_at": pos.count("at"),
        "bound_above": pos.count("above"),
        "non_monotone": sum(r["non_monotone"] for r in rows),
        "diverged_below_prediction": sum(run["status"] == "diverged" for run in below),
        "runs_below_prediction": len(below),
        "loss_rose_below_prediction": sum(rose(run) for run in below),
        "diverged_above_prediction": sum(run["status"] == "diverged" for run in above),
        "loss_rose_above_prediction": sum(rose(run) for run in above),
        "runs_above_prediction": len(above),
        "trained": sum(not f for f in fail),
        "warned_and_failed": sum(w and f for w, f in zip(warned, fail, strict=True)),
        "warned_and_trained": sum(w and not f for w, f in zip(warned, fail, strict=True)),
        "unwarned_and_failed": sum(f and not w for w, f in zip(warned, fail, strict=True)),
        "unwarned_and_trained": sum(not w and not f for w, f in zip(warned, fail, strict=True)),
        "warnings_accuracy": float(np.mean([w == f for w, f in zip(warned, fail, strict=True)])),
        "vanishing_gradients_and_failed": sum(v and f for v, f in zip(vanish, fail, strict=True)),
        "vanishing_gradients": sum(vanish),
        "per_warning": per_warning,
    }


def run_one(cfg: Config, x, y, depth: int, activation: str, variant: str):
    """Diagnose one configuration and train it at every multiplier; ``(row, report)``."""
    t0 = time.perf_counter()
    apply_fn, params = make_model(cfg, depth, activation, variant)
    mults = cfg.all_multipliers()
    report = diagnose(
        apply_fn,
        params,
        x,
        y,
        activation=activation,
        power_iters=cfg.power_iters,
        overfit_steps=cfg.steps,
        overfit_tol=cfg.tol,
        overfit_lr_fraction=cfg.train_multiplier,
        run_overfit=False,
        per_layer=False,
    )
    eta = report["ntk"]["suggested_max_lr"]
    curves = train_losses(apply_fn, params, x, y, lrs=np.asarray(mults) * eta, steps=cfg.steps)
    runs = [
        {"multiplier": m, "lr": m * eta, **classify_run(c, cfg.tol)}
        for m, c in zip(mults, curves, strict=True)
    ]
    lo, hi, non_mono = bracket(mults, [r["status"] for r in runs])
    trained = runs[mults.index(cfg.train_multiplier)]["status"] == "fit"
    warnings = [w["name"] for w in report["warnings"] if w["name"] in PREDICTIVE]
    s = summary_row(report)
    row = {
        "depth": depth,
        "activation": activation,
        "variant": variant,
        "norm": "layernorm" if "layernorm" in variant else None,
        "residual": "residual" in variant,
        "num_params": report["num_params"],
        "predicted_max_lr": eta,
        "lambda_max": s["lambda_max"],
        "condition_number": s["condition_number"],
        "effective_rank": s["effective_rank"],
        "kta": s["kta"],
        "grad_ratio": s["grad_ratio"],
        "jacobian_spectral": s["jacobian_spectral"],
        "mean_block_nonlinearity": s["mean_block_nonlinearity"],
        "linearized_loss_ratio": report["linearized"]["loss_ratio"],
        "warnings": warnings,
        "runs": runs,
        "measured_max_stable_lr": [
            None if lo is None else lo * eta,
            None if hi is None else hi * eta,
        ],
        "bracket_multipliers": [lo, hi],
        "bound": bound_position(lo, hi),
        "non_monotone": non_mono,
        "trained": trained,
        "predicted_trainable": not warnings,
        "warnings_match": (not warnings) == trained,
        "wall_s": time.perf_counter() - t0,
    }
    return row, report


def run(cfg: Config, run_dir) -> dict:
    """The sweep; returns results.json's dict (figure: ``paper_figures/init_diagnostics.py``)."""
    t0 = time.perf_counter()
    run_dir = run_dir if isinstance(run_dir, rundir.RunDir) else rundir.RunDir(run_dir)
    x, y = make_data(cfg)
    rows, reports = [], {}
    grid = [(d, a, v) for v in cfg.variants for a in cfg.activations for d in cfg.depths]
    for i, (depth, act, variant) in enumerate(grid):
        row, report = run_one(cfg, x, y, depth, act, variant)
        rows.append(row)
        reports[f"depth{depth}-{act}-{variant}"] = report
        print(
            f"[{i + 1}/{len(grid)}] depth {depth} {act} {variant}: max lr "
            f"{row['predicted_max_lr']:.3g}, runs {_fmt_runs(row['runs'])}, warnings "
            f"{','.join(row['warnings']) or '-'} ({row['wall_s']:.1f}s)",
            file=sys.stderr,
            flush=True,
        )
    rundir.write_json(run_dir.file("reports.json"), reports)
    mults = cfg.all_multipliers()
    results = {
        "experiment": "init_diagnostics",
        "multipliers": list(mults),
        "train_multiplier": cfg.train_multiplier,
        "steps": cfg.steps,
        "tol": cfg.tol,
        "predictive_warnings": list(PREDICTIVE),
        "activation_nonlinearity": {a: activation_nonlinearity(a) for a in ACTIVATIONS},
        "rows": rows,
        "summary": summarize(rows),
        "table": markdown_table(rows, mults),
    }
    results["wall_s"] = time.perf_counter() - t0
    return results
