"""Wiring of the dynamics experiment: the GD run, the SGD run, results.json.

Run directory::

    config.json, results.json (written by the CLI from run()'s return value)
    gd/     engine run (full-batch GD): metrics.jsonl ("probe/ntk/*", "probe/dissipation/*" with
            the four-cell scalars and "cutoff", "test/loss"), probes.npz ("ntk/eigenvalues" (T, n),
            "dissipation/w_eigenvalues" (T, n), "dissipation/predicted_displacement" and
            "dissipation/actual_displacement" (T, m))
    sgd/    engine run (minibatch SGD, ``sgd_seeds`` seeds): metrics.jsonl with every step's
            "probe/drift/{drift,noise}_{top,bottom}" and "probe/drift/count"

``results.json``::

    {"experiment": "dynamics", "params", "n_train", "n_test",
     "gd": {"final_train_loss", "final_test_loss", "best_test_loss", "best_test_step",
            "ntk_drift_peak", "ntk_drift_final", "coupling_corr", "coupling_rel_err",
            "invisibility", "channel_dim", "noise_channel_fraction", "four_cell": {...}},
     "sgd": {"batch_size", "lr", "seeds", "steps", "directions", "label_noise",
             "fit_window": [t_lo, t_hi], "slopes": {"drift_top" (in the window), "noise_top",
             "drift_bottom", "noise_bottom" (whole run)}, "slopes_in_fit_window",
             "slopes_whole_run", "final"}}

Slopes are fitted to the root mean square over seeds of the accumulated noise and to the coherent
part of the accumulated batch-mean gradient (:func:`curves`).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax
from flax import nnx

from dyntheory import drift
from dyntheory.drift import curves
from dyntheory.engine import fit, rundir
from dyntheory.engine.rundir import subrun_dir
from dyntheory.models import MLP, abstract, count_params, functional
from dyntheory.probes import Dissipation, DriftDiffusion, NTKSpectrum, Schedule, last_value
from dyntheory.probes.dissipation import PARTS, SUBS
from experiments.dynamics.config import Config
from experiments.toy_regression import Config as ToyConfig
from experiments.toy_regression.run import make_data, sampler


def _toy(cfg: Config, noise: float | None = None) -> ToyConfig:
    toy = dict(
        d_in=cfg.d_in,
        teacher_width=cfg.teacher_width,
        n_train=cfg.n_train,
        n_test=cfg.n_test,
        noise=cfg.noise if noise is None else noise,
        data_seed=cfg.data_seed,
    )
    return ToyConfig(**toy)


def data(cfg: Config) -> tuple[dict, dict]:
    """The toy teacher-student data (``experiments/toy_regression``) with this config's sizes."""
    return make_data(_toy(cfg))


def model(cfg: Config):
    """``(apply_fn, init_params, n_params)`` of the student MLP."""
    build = lambda key: MLP(
        cfg.d_in, (cfg.width,) * cfg.depth, 1, activation=cfg.activation, rngs=nnx.Rngs(key)
    )
    apply_fn, params0 = abstract(lambda: build(jax.random.key(0)))
    return apply_fn, (lambda key: functional(build(key))[1]), count_params(params0)


def summarize_gd(history: dict, n_test: int) -> dict:
    """Headline numbers of the GD run (seed 0)."""
    pre = "probe/dissipation/"
    test = np.asarray(history["test/loss"], float).reshape(len(history["step"]), -1)[:, 0]
    best = int(np.nanargmin(test))
    ntk_drift = np.asarray(history["probe/ntk/drift"], float).reshape(len(history["step"]), -1)
    cells = {
        kind: {
            f"{p}_{s}": last_value(history, f"{pre}{kind}_{p}_{s}", 0) for p in PARTS for s in SUBS
        }
        for kind in ("train", "dissipated", "test")
    }
    noise = cells["train"]["noise_channel"] + cells["train"]["noise_reservoir"]
    return {
        "final_train_loss": last_value(history, "train/loss", 0),
        "final_test_loss": last_value(history, "test/loss", 0),
        "best_test_loss": float(test[best]),
        "best_test_step": int(history["step"][best]),
        "ntk_drift_peak": float(np.nanmax(ntk_drift[:, 0])),
        "ntk_drift_final": last_value(history, "probe/ntk/drift", 0),
        "coupling_corr": last_value(history, f"{pre}coupling_corr", 0),
        "coupling_rel_err": last_value(history, f"{pre}coupling_rel_err", 0),
        "invisibility": last_value(history, f"{pre}invisibility", 0),
        "channel_dim": last_value(history, f"{pre}channel_dim", 0),
        "noise_channel_fraction": cells["train"]["noise_channel"] / noise if noise > 0 else None,
        "n_test_probe": n_test,
        "four_cell": cells,
    }


def fit_window(count: np.ndarray, drift_top: np.ndarray, fraction: float = 0.25) -> list[int]:
    """Steps ``[1, t_q]`` before the coherent drift on the top directions saturates: ``t_q`` is the
    first step at which it reaches ``fraction`` of its final value (at least 8 steps)."""
    ok = np.isfinite(drift_top)
    reached = np.nonzero(ok & (drift_top >= fraction * drift_top[ok][-1]))[0]
    t_q = int(count[reached[0]]) if reached.size else int(count[-1])
    return [1, max(t_q, min(8, int(count[-1])))]


def summarize_sgd(history: dict, cfg: Config) -> dict:
    """Log-log slopes of the coherent drift and of the noise (:func:`curves`): the top-direction
    drift over :func:`fit_window` (before it saturates), everything else over the whole run."""
    c = curves(history)
    t = c["count"]
    window = fit_window(t, c["drift_top"])
    early = (t >= window[0]) & (t <= window[1])
    top_early = drift.fit_slopes(t[early], c["drift_top"][early], c["noise_top"][early])
    top = drift.fit_slopes(t, c["drift_top"], c["noise_top"])
    bottom = drift.fit_slopes(t, c["drift_bottom"], c["noise_bottom"])
    return {
        "batch_size": cfg.sgd_batch,
        "lr": cfg.sgd_lr,
        "seeds": cfg.sgd_seeds,
        "steps": cfg.sgd_steps,
        "directions": cfg.directions,
        "label_noise": cfg.sgd_noise,
        "fit_window": window,
        "slopes": {
            "drift_top": top_early.drift,
            "noise_top": top.noise,
            "drift_bottom": bottom.drift,
            "noise_bottom": bottom.noise,
        },
        "slopes_in_fit_window": {"drift_top": top_early.drift, "noise_top": top_early.noise},
        "slopes_whole_run": {"drift_top": top.drift, "noise_top": top.noise},
        "final": {k: float(v[-1]) for k, v in c.items() if k != "count"},
    }


def run(cfg: Config, run_dir) -> dict:
    """Train the GD and the SGD runs into ``run_dir/gd`` and ``run_dir/sgd``; return results."""
    out = run_dir if isinstance(run_dir, rundir.RunDir) else rundir.RunDir(run_dir)
    train, test = data(cfg)
    apply_fn, init_params, n_params = model(cfg)
    sched = Schedule.parse(cfg.probe_schedule)
    common = dict(
        apply_fn=apply_fn,
        init_params=init_params,
        data=train,
        loss="squared",
        eval_sets={"test": test},
    )
    gd = fit(
        dataclasses.replace(cfg.train, batch_size=None),
        optimizer=optax.sgd(cfg.lr),
        probes=[
            NTKSpectrum(sched, top_k=cfg.n_train),
            Dissipation(
                sched,
                lr=cfg.lr,
                threshold=cfg.split_threshold,
                mode="dissipated_fraction",
                cells=True,
                method=cfg.dissipation_method,
                rank=cfg.dissipation_rank,
                lanczos_vectors=cfg.dissipation_vectors,
            ),
        ],
        run_dir=subrun_dir(out.file("gd"), {}, config=cfg),
        **common,
    )
    sgd_cfg = dataclasses.replace(
        cfg.train,
        steps=cfg.sgd_steps,
        batch_size=cfg.sgd_batch,
        seeds=cfg.sgd_seeds,
        fuse=1,
        probe_size=cfg.n_train,  # one fixed draw of n_train samples for the drift directions
        eval_every=cfg.sgd_eval_every,
        log_every=1,
        checkpoint_every=0,
    )
    sgd = fit(
        sgd_cfg,
        optimizer=optax.sgd(cfg.sgd_lr),
        probes=[DriftDiffusion(Schedule.every(1), lr=cfg.sgd_lr, directions=cfg.directions)],
        run_dir=subrun_dir(out.file("sgd"), {}, config=cfg),
        **{**common, "data": sampler(_toy(cfg, cfg.sgd_noise))},
    )
    return {
        "experiment": "dynamics",
        "params": n_params,
        "n_train": cfg.n_train,
        "n_test": cfg.n_test,
        "gd": summarize_gd(gd.history, cfg.n_test),
        "sgd": summarize_sgd(sgd.history, cfg),
    }
