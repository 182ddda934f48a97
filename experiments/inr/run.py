"""Wiring of the INR experiment: data, Fourier-feature MLP, loss hook, the sweep, results.json.

Run directory::

    config.json, results.json, inr.png / inr.pdf
    <signal>/<optimizer>_lr<lr>/    one sub-run per (signal, optimizer, lr), all seeds:
                                    metrics.jsonl (grid/psnr, grid/noise_coef, ... every
                                    eval_every steps), probes.npz
    <signal>/<first arm>+<n>.sweep/ the one program that trained an optimizer's lrs

``results.json`` (schema checked by ``tests/test_exp_inr.py``)::

    {"experiment": "inr", "wall_s": ...,
     "signals": {"<signal>": {
        "n_train", "n_grid", "batch_size", "alpha", "noisy_psnr" (the targets' own PSNR),
        "arms": {"adamw": {"<lr>": {"lr", "best_psnr": [per seed], "best_step": [...],
                                    "final_psnr", "final_psnr_heldout", "final_noise_coef",
                                    "final_noise_fit", "median_best_psnr", "median_final_psnr",
                                    "median_final_noise_coef", "median_final_noise_fit",
                                    "wall_s", ["final_gate_mean": PRM only]}}, "prm": {...}},
        "best": {"adamw": {"lr", "median_best_psnr", "median_final_psnr",
                           "median_final_noise_coef", "median_final_noise_fit"}, "prm": {...}},
        "peak": {"adamw": {"lr", "median_best_psnr", "best_step"}, "prm": {...}},
        "curves": {"step": [...], "<optimizer>_lr<lr>/psnr": [...], ".../noise_coef": [...]}}}}

"best" per optimizer = the lr with the highest median *final* clean PSNR (the quantity the
paper's claim is about: no early stopping), ties broken by the best PSNR; "peak" = the lr with the
highest median best-over-training PSNR (what an oracle early stop would get).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dyntheory import probes
from dyntheory.engine import sweep
from dyntheory.models import MLP, abstract, functional
from dyntheory.optim import finite_dataset_alpha
from dyntheory.optim.config import OptimizerConfig
from dyntheory.probes import last_finite, seed_columns
from experiments.inr import signals
from experiments.inr.config import Config

SUMMARY = (
    "median_best_psnr",
    "median_final_psnr",
    "median_final_noise_coef",
    "median_final_noise_fit",
)


def make_data(cfg: Config, name: str) -> dict:
    """Grid, clean signal, noisy training samples and the Fourier features of one signal."""
    dim = signals.signal_dim(name)
    side = cfg.side1d if dim == 1 else cfg.side2d
    coords, clean = signals.signal_on_grid(name, side)
    data_range = float(clean.max() - clean.min())
    train_idx = signals.split_train(side, dim, cfg.stride)
    root = jax.random.key(cfg.data_seed)
    eps, y = signals.add_noise(
        jax.random.fold_in(root, 0), clean[train_idx], cfg.sigma * data_range
    )
    scale = cfg.scale1d if dim == 1 else cfg.scale2d
    B = signals.fourier_matrix(jax.random.fold_in(root, 1), cfg.n_features, dim, scale)
    feats = signals.fourier_features(coords, B).astype(np.float32)
    train = np.zeros(len(clean), np.float32)
    train[train_idx] = 1.0
    y_full, eps_full = np.zeros_like(train), np.zeros_like(train)
    y_full[train_idx], eps_full[train_idx] = y, eps
    n = len(train_idx)
    return {
        "train": {
            "x": feats[train_idx],
            "y": y.astype(np.float32),
            "y_clean": clean[train_idx].astype(np.float32),
        },
        "grid": {
            "x": feats,
            "clean": clean.astype(np.float32),
            "y": y_full,
            "eps": eps_full,
            "train": train,
        },
        "data_range": data_range,
        "n_train": n,
        "batch_size": max(1, round(cfg.batch_fraction * n)),
        "noisy_psnr": float(signals.psnr(y, clean[train_idx], data_range)),
    }


def make_loss(data_range: float):
    """Squared loss ``‖f − y‖²/(2n)`` on train batches; the INR metrics on the ``grid`` set."""

    def loss_fn(apply_fn, params, batch, key):
        del key
        f = apply_fn(params, batch["x"]).reshape(-1)
        if "clean" in batch:
            m = signals.masked_metrics(
                f, batch["clean"], batch["y"], batch["eps"], batch["train"], data_range
            )
            return 0.5 * m["mse_noisy"], m
        return 0.5 * jnp.mean((f - batch["y"]) ** 2), {}

    return loss_fn


def make_model(cfg: Config):
    build = lambda key: MLP(
        2 * cfg.n_features,
        (cfg.width,) * cfg.depth,
        1,
        activation=cfg.activation,
        rngs=nnx.Rngs(params=key),
    )
    apply_fn, _ = abstract(lambda: build(jax.random.key(0)))
    return apply_fn, lambda key: functional(build(key))[1]


def arm_probes(cfg: Config, optim: OptimizerConfig) -> list[probes.Probe]:
    """PRM's gate statistics; with ``stopping``, the stopping rules' probes (every arm)."""
    out = [probes.GateStats(probes.Schedule.every(100))] if optim.family == "prm" else []
    if cfg.stopping:
        out += probes.stopping_probes(optim.step_model(), every=cfg.ws_every)
    return out


def summarize_arm(history: dict, eval_every: int = 10) -> dict:
    """Per-seed best/final PSNR and final memorization of one run from its metrics table; with
    the stopping rules' probes, their table (and, evaluated every step, the LOO check)."""
    psnr = seed_columns(history["grid/psnr"])
    ok = ~np.isnan(psnr[:, 0])
    steps = history["step"][ok]
    psnr = psnr[ok]
    get = lambda k: seed_columns(history[f"grid/{k}"])[ok]
    coef, fitf, held = get("noise_coef"), get("noise_fit"), get("psnr_heldout")
    seeds = range(psnr.shape[1])
    out = {
        "best_psnr": [float(psnr[:, s].max()) for s in seeds],
        "best_step": [int(steps[int(np.argmax(psnr[:, s]))]) for s in seeds],
        "final_psnr": [float(x) for x in psnr[-1]],
        "final_psnr_heldout": [float(x) for x in held[-1]],
        "final_noise_coef": [float(x) for x in coef[-1]],
        "final_noise_fit": [float(x) for x in fitf[-1]],
    }
    for k in ("best_psnr", "final_psnr", "final_noise_coef", "final_noise_fit"):
        out[f"median_{k}"] = float(np.median(out[k]))
    stop = probes.stopping_rules(history, "grid/mse_heldout")
    if stop is not None:
        out["stopping"] = stop
        if eval_every == 1:
            out["poprisk_check"] = probes.population_risk_check(
                history, "grid/mse_heldout", split_at=stop["validation_optimal_step"]
            )
    out["_curves"] = (steps, np.median(psnr, axis=1), np.median(coef, axis=1))
    return out


def run(cfg: Config, run_dir, *, progress: bool | None = None) -> dict:
    """Fit every signal with every (optimizer, lr) on the same noise and seeds into ``run_dir``.

    The lrs of one optimizer train in one compiled program (:func:`dyntheory.engine.sweep.
    run_arms`; with ``stopping`` the probes' decay ``lr · λ_wd`` differs per lr, so each lr is
    its own program), each in its sub-run ``run_dir/<signal>/<optimizer>_lr<lr>/``; an
    interrupted sweep resumes from its checkpoints. Returns the results (also written to
    results.json, the figure is drawn from it by ``paper_figures``).
    """
    wall = 0.0
    apply_fn, init_params = make_model(cfg)
    results: dict = {"experiment": "inr", "signals": {}}
    for name in cfg.signals:
        d = make_data(cfg, name)
        alpha = (
            finite_dataset_alpha(d["batch_size"], d["n_train"])
            if cfg.optim.prm_alpha is None
            else cfg.optim.prm_alpha
        )
        tcfg = dataclasses.replace(cfg.train, batch_size=d["batch_size"], sampling="epoch")
        if cfg.stopping:  # the W_S probe's set is the whole training set
            tcfg = dataclasses.replace(tcfg, probe_size=d["n_train"])
        todo = sweep.arms(cfg.optim, cfg.optimizers, name=sweep.lr_arm_name, prm_alpha=alpha)
        done = sweep.run_arms(
            tcfg,
            todo,
            out=Path(run_dir) / name,
            config=cfg,
            probes=lambda optim: arm_probes(cfg, optim),
            progress=progress,
            apply_fn=apply_fn,
            init_params=init_params,
            data=d["train"],
            loss=make_loss(d["data_range"]),
            eval_sets={"grid": d["grid"]},
        )
        wall += sweep.total_seconds(done)
        arms: dict = {}
        curves: dict = {}
        for a in todo:
            res, opt = done[a.name].result, a.optim.family
            arm = summarize_arm(res.history, cfg.train.eval_every)
            steps, psnr_curve, coef_curve = arm.pop("_curves")
            curves.setdefault("step", steps.tolist())
            curves[f"{a.name}/psnr"] = psnr_curve.tolist()
            curves[f"{a.name}/noise_coef"] = coef_curve.tolist()
            if opt == "prm":
                arm["final_gate_mean"] = last_finite(res.history, "probe/gate/gate_mean")
            rest = a.name.removeprefix(f"{opt}_lr").removeprefix(f"{a.optim.lr:.0e}")
            arms.setdefault(opt, {})[f"{a.optim.lr:g}{rest}"] = {
                "lr": a.optim.lr,
                **arm,
                "wall_s": done[a.name].wall_s,
                "arms_in_program": done[a.name].arms_in_program,
            }
        best, peak = {}, {}
        for opt, by_lr in arms.items():
            top = max(by_lr.values(), key=lambda a: (a["median_final_psnr"], a["median_best_psnr"]))
            best[opt] = {"lr": top["lr"], **{k: top[k] for k in SUMMARY}}
            top = max(by_lr.values(), key=lambda a: a["median_best_psnr"])
            peak[opt] = {
                "lr": top["lr"],
                "median_best_psnr": top["median_best_psnr"],
                "best_step": top["best_step"],
            }
        results["signals"][name] = {
            "n_train": d["n_train"],
            "n_grid": int(len(d["grid"]["clean"])),
            "batch_size": d["batch_size"],
            "alpha": alpha,
            "noisy_psnr": d["noisy_psnr"],
            "arms": arms,
            "best": best,
            "peak": peak,
            "curves": curves,
        }
    results["wall_s"] = wall  # the engine's clocks, summed over every process that ran them
    return results
