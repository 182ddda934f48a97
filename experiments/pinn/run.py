"""Wiring of the PINN experiment: model, loss hook, collocation sampler, the sweep, results.json.

Run directory::

    config.json, results.json, pinn.png / pinn.pdf
    <optimizer>_lr<lr>/                  one sub-run per (optimizer, lr), all seeds:
                                         spec.json, metrics.jsonl (grid/rel_l2 every eval_every
                                         steps), probes.npz
    <optimizer>_lr<lr>+<n>.sweep/        the one program that trained an optimizer's lrs
                                         (checkpoints/, every member's metrics)

``results.json`` (schema checked by ``tests/test_exp_pinn.py``)::

    {"experiment": "pinn", "target": 0.4, "paper_ratio": 2.4, "wall_s": ...,
     "arms": {"adamw": {"<lr>": {"lr", "iters_to_target": [per seed, null = never],
                                 "median_iters", "final_rel_l2": [...], "best_rel_l2": [...],
                                 "median_final_rel_l2", "final_ic_noise_fit": [...],
                                 "wall_s", ["final_gate_mean": PRM only]}}, "prm": {...}},
     "best": {"adamw": {"lr", "median_iters", "median_final_rel_l2"}, "prm": {...}},
     "ratio": best AdamW median iters / best PRM median iters (> 1: PRM needs fewer),
     "ratio_at_adamw_lr": AdamW's best / PRM at AdamW's best lr,
     "curves": {"step": [...], "<optimizer>_lr<lr>": median rel-L2 over seeds per step},
     "gate_curves": {"step": [...], "prm_lr<lr>": median over seeds of PRM's mean gate q}}
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dyntheory.engine import sweep
from dyntheory.engine.config import TrainConfig
from dyntheory.models import MLP, abstract, functional
from dyntheory.probes import GateStats, Schedule, last_finite, ratio, seed_columns
from experiments.pinn import problem
from experiments.pinn.config import Config

PAPER_RATIO = 2.4


arm_name = sweep.lr_arm_name  # the sub-run of one (optimizer, lr): "adamw_lr1e-03"


def embed_fn(cfg: Config):
    """The input map in front of the MLP (``(n, 2) → (n, d_in)``) and ``d_in``."""
    # float32 constants: the CLI turns jax_enable_x64 on, and a float64 constant would promote
    # the whole network to float64.
    f32 = lambda v: jnp.asarray([v], jnp.float32)  # (1, d): broadcasts over rows explicitly
    if cfg.embedding == "periodic":
        scale, shift = f32([1.0, 1.0, 2.0 / cfg.t_max]), f32([0.0, 0.0, -1.0])
        return (lambda z: problem.periodic_embedding(z) * scale + shift), 3
    span = f32([float(problem.TWO_PI), cfg.t_max])
    return (lambda z: 2.0 * z / span - 1.0), 2


def make_model(cfg: Config):
    """``(apply_fn(params, z) -> (n, 1), init_params(key) -> params)`` for rows ``z = (x, t)``."""
    embed, d_in = embed_fn(cfg)
    build = lambda key: MLP(
        d_in, (cfg.width,) * cfg.depth, 1, activation=cfg.activation, rngs=nnx.Rngs(params=key)
    )
    mlp_apply, _ = abstract(lambda: build(jax.random.key(0)))
    apply_fn = lambda params, z: mlp_apply(params, embed(z))
    init_params = lambda key: functional(build(key))[1]
    return apply_fn, init_params


def make_loss(cfg: Config, ic: problem.ICData):
    """The engine's loss hook: the PINN loss on train batches, the error on the ``grid`` set.

    Train batches are ``{"z": (b, 2), "bc_t": (b,)}``; the eval set is ``{"z", "u"}`` (the exact
    solution): its "loss" is the mean squared error to the exact solution and its aux holds
    ``rel_l2`` and ``ic_noise_fit`` = 1 − ‖u(·, 0) − y‖²/‖ε‖², how much of the IC noise the
    network has absorbed (0: fits sin x exactly, 1: interpolates the noisy observations).
    """
    noise_energy = jnp.sum(ic.noise**2)

    def loss_fn(apply_fn, params, batch, key):
        del key
        u_fn = lambda z: apply_fn(params, z)
        if "u" in batch:  # the error grid (an eval set)
            u = u_fn(batch["z"]).reshape(-1)
            mse = jnp.mean((u - batch["u"]) ** 2)
            rel = jnp.linalg.norm(u - batch["u"]) / jnp.linalg.norm(batch["u"])
            mis = problem.ic_misfit(u_fn, ic)
            return mse, {"rel_l2": rel, "ic_noise_fit": 1.0 - jnp.sum(mis**2) / noise_energy}
        loss, aux = problem.pinn_loss(
            u_fn,
            batch["z"],
            batch["bc_t"][: cfg.n_bc],
            ic,
            cfg.beta,
            cfg.w_pde,
            cfg.w_ic,
            cfg.w_bc,
        )
        return loss, aux

    return loss_fn


def make_data(cfg: Config):
    """Fresh collocation batches (a sampler) or one fixed set (a dataset dict)."""

    def sample(key, b):
        kz, kb = jax.random.split(key)
        return {
            "z": problem.sample_collocation(kz, b, cfg.t_max),
            "bc_t": problem.sample_boundary_times(kb, b, cfg.t_max),
        }

    if cfg.resample:
        return sample
    fixed_key = jax.random.fold_in(jax.random.key(cfg.data_seed), 1)
    return {k: np.asarray(v) for k, v in sample(fixed_key, cfg.train.batch_size).items()}


def train_config(cfg: Config) -> TrainConfig:
    """The engine's part of the config (a fixed collocation set is full-batch)."""
    return cfg.train if cfg.resample else dataclasses.replace(cfg.train, batch_size=None)


def first_crossing(steps: np.ndarray, err: np.ndarray, target: float) -> int | None:
    """First step with ``err <= target`` (NaN entries skipped), or None."""
    hit = np.flatnonzero(np.nan_to_num(err, nan=np.inf) <= target)
    return int(steps[hit[0]]) if hit.size else None


def _median_iters(iters: list[int | None]) -> float | None:
    """Median over seeds, a seed that never crossed counting as +∞; None if the median is ∞."""
    vals = np.asarray([math.inf if i is None else i for i in iters], dtype=float)
    med = float(np.median(vals))
    return None if math.isinf(med) else med


def summarize_arm(history: dict, cfg: Config) -> dict:
    """Per-seed crossings and errors of one (optimizer, lr) run from its metrics table."""
    steps = history["step"]
    rel = seed_columns(history["grid/rel_l2"])
    noise = seed_columns(history["grid/ic_noise_fit"])
    evaluated = ~np.isnan(rel[:, 0])
    steps, rel, noise = steps[evaluated], rel[evaluated], noise[evaluated]
    iters = [first_crossing(steps, rel[:, s], cfg.target) for s in range(rel.shape[1])]
    final = [float(x) for x in rel[-1]]
    return {
        "iters_to_target": iters,
        "median_iters": _median_iters(iters),
        "final_rel_l2": final,
        "best_rel_l2": [float(np.nanmin(rel[:, s])) for s in range(rel.shape[1])],
        "median_final_rel_l2": float(np.median(final)),
        "final_ic_noise_fit": [float(x) for x in noise[-1]],
        "_curve": (steps, np.median(rel, axis=1)),
    }


def _better(a: dict, b: dict | None) -> bool:
    """Is arm ``a`` better than ``b``: fewer median iterations, then lower final error."""
    if b is None:
        return True
    ka = (math.inf if a["median_iters"] is None else a["median_iters"], a["median_final_rel_l2"])
    kb = (math.inf if b["median_iters"] is None else b["median_iters"], b["median_final_rel_l2"])
    return ka < kb


def run(cfg: Config, run_dir, *, progress: bool | None = None) -> dict:
    """Train every (optimizer, lr) arm on the same noisy IC and seeds into ``run_dir``.

    The lrs of one optimizer train in one compiled program (:func:`dyntheory.engine.sweep.
    run_arms`), each landing in its sub-run ``run_dir/<optimizer>_lr<lr>/``; an interrupted
    sweep resumes from its checkpoints. Returns the results (also written to results.json, the
    figure is drawn from it by ``paper_figures``).
    """
    ic = problem.make_ic_data(jax.random.key(cfg.data_seed), cfg.n_ic, cfg.sigma)
    grid = problem.eval_grid(cfg.grid_nx, cfg.grid_nt, cfg.t_max)
    eval_sets = {"grid": {"z": grid, "u": problem.exact_solution(grid, cfg.beta)}}
    apply_fn, init_params = make_model(cfg)
    loss_fn, data, tcfg = make_loss(cfg, ic), make_data(cfg), train_config(cfg)

    todo = sweep.arms(cfg.optim, cfg.optimizers, name=arm_name, prm_alpha=cfg.alpha)
    done = sweep.run_arms(
        tcfg,
        todo,
        out=run_dir,
        config=cfg,
        probes=lambda optim: [GateStats(Schedule.every(50))] if optim.family == "prm" else [],
        progress=progress,
        apply_fn=apply_fn,
        init_params=init_params,
        data=data,
        loss=loss_fn,
        eval_sets=eval_sets,
    )
    wall = sweep.total_seconds(done)
    arms: dict[str, dict] = {}
    curves: dict[str, list] = {}
    gates: dict[str, list] = {}
    for a in todo:
        res, opt, name = done[a.name].result, a.optim.family, a.name
        arm = summarize_arm(res.history, cfg)
        steps, curve = arm.pop("_curve")
        curves.setdefault("step", steps.tolist())
        curves[name] = curve.tolist()
        if opt == "prm":
            arm["final_gate_mean"] = last_finite(res.history, "probe/gate/gate_mean")
            gate_steps, gate_curve = _median_curve(res.history, "probe/gate/gate_mean")
            gates.setdefault("step", gate_steps.tolist())
            gates[name] = gate_curve.tolist()
        key = name.removeprefix(f"{opt}_lr").removeprefix(f"{a.optim.lr:.0e}")
        arms.setdefault(opt, {})[f"{a.optim.lr:g}{key}"] = {
            "lr": a.optim.lr,
            **arm,
            "wall_s": done[a.name].wall_s,
            "arms_in_program": done[a.name].arms_in_program,
        }

    best = {}
    for opt, by_lr in arms.items():
        choice = None
        for a in by_lr.values():
            choice = a if _better(a, choice) else choice
        best[opt] = {k: choice[k] for k in ("lr", "median_iters", "median_final_rel_l2")}
    results = {
        "experiment": "pinn",
        "target": cfg.target,
        "paper_ratio": PAPER_RATIO,
        "step_resolution": cfg.train.eval_every,
        "arms": arms,
        "best": best,
        "ratio": None,
        "ratio_at_adamw_lr": None,
    }
    if "adamw" in best and "prm" in best:
        a_best = best["adamw"]
        results["ratio"] = ratio(a_best["median_iters"], best["prm"]["median_iters"])
        same = arms["prm"][f"{a_best['lr']:g}"]
        results["ratio_at_adamw_lr"] = ratio(a_best["median_iters"], same["median_iters"])
    results["curves"] = curves
    results["gate_curves"] = gates
    results["wall_s"] = wall  # the engine's clocks, summed over every process that ran them
    return results


def _median_curve(history: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps where ``key`` was logged and its median over seeds there."""
    v = seed_columns(history[key])
    ok = ~np.isnan(v[:, 0])
    return history["step"][ok], np.median(v[ok], axis=1)
