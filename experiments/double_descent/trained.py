r"""The trained part: a width-swept MLP trained by the engine, with and without label noise.

For every label-noise level and width, :func:`dyntheory.engine.fit` trains ``cfg.train.seeds`` seeds
at once (vmap) on squared loss with full-batch gradient descent, step size ``lr · n/λ_max(K_0)`` (a
fixed fraction of the stability limit ``2n/λ_max``, so every width trains at the same speed in
units of its own kernel), and the dissipation probe (its probe set is the whole training set)
accumulates ``W_S``, ``D`` and ``G_Q`` from step 0 with the NTK refreshed at every probe step:
exact for GD up to the kernel's drift within a probe interval. (``optimizer=adam`` is available,
but the probe then holds Adam's preconditioned kernel fixed over each interval, which can leave
GD's stability region and make the accumulator diverge; use an ``every:1`` schedule with it.)
With ``cells=True`` the probe adds the four-cell decomposition of
:func:`dyntheory.split.four_cell` to its scalars:
``g(0) = g_clean + g_noise`` (``g_noise = −ε/n``) × channel/reservoir, on the train side
(``train_*``: energies ‖Π g‖², ``dissipated_*``: loss dissipated) and on the test side
(``test_*``: ``‖G_Q Π g‖²``, the energy each cell moved the test outputs by).
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dyntheory import ntk, probes
from dyntheory.engine import fit
from dyntheory.engine.rundir import subrun_dir
from dyntheory.models import MLP, count_params, functional
from dyntheory.optim import state as optim_state
from dyntheory.probes.dissipation import PARTS, SUBS
from experiments.double_descent.data import make_task


def make_model(cfg, width: int):
    """``(apply_fn, init_params)`` of a one-hidden-layer MLP ``d → width → 1``."""
    build = lambda key: MLP(
        cfg.mlp_d_in, (width,), 1, activation=cfg.activation, rngs=nnx.Rngs(key)
    )
    apply_fn, params0 = functional(build(jax.random.key(0)))
    return apply_fn, (lambda key: functional(build(key))[1]), count_params(params0)


def gd_step_size(cfg, apply_fn, init_params, x) -> float:
    """``lr · n/λ_max(K_0)``: GD's step size in units of its stability limit ``2n/λ_max``.

    ``K_0`` is the NTK on the training set at seed ``cfg.train.seed``'s initial params (the engine's
    seed ``s`` initializes from ``split(key(seed + s))[0]``).
    """
    params = init_params(jax.random.split(jax.random.key(cfg.train.seed))[0])
    k0 = ntk.empirical_ntk(apply_fn, params, jnp.asarray(x))
    return float(cfg.lr * x.shape[0] / jnp.linalg.eigvalsh(k0)[-1])


def make_optimizer(cfg, apply_fn, init_params, x):
    """``(optimizer, preconditioner for the probe, step size)``."""
    if cfg.optimizer == "gd":
        eta = gd_step_size(cfg, apply_fn, init_params, x)
        return optax.sgd(eta), None, eta
    return optax.adam(cfg.lr), optim_state.adam_preconditioner(cfg.lr), cfg.lr


def _last(history: dict, key: str) -> np.ndarray:
    """The last finite value of ``key`` per seed, shape ``(S,)`` (NaN: never logged)."""
    return np.asarray(probes.last_finite(history, key), float)


def _curve(history: dict, key: str) -> tuple[list[int], list[float]]:
    """Steps where ``key`` was logged and its seed-mean there."""
    v = probes.seed_columns(history[key])
    ok = np.all(np.isfinite(v), axis=1)
    return history["step"][ok].astype(int).tolist(), v[ok].mean(axis=1).tolist()


def _peak(widths, err) -> dict:
    err = np.asarray(err)
    i = int(np.argmax(err))
    ends = max(err[0], err[-1])
    return {
        "peak_width": widths[i],
        "peak_test_mse": float(err[i]),
        "peak_over_ends": float(err[i] / ends) if ends > 0 else None,
        "peak_is_interior": 0 < i < len(widths) - 1,
    }


def run_one(cfg, data: dict, width: int, run_dir) -> dict:
    """Train one (noise level, width) over ``cfg.train.seeds`` seeds; its block of results."""
    t0 = time.perf_counter()
    apply_fn, init_params, n_params = make_model(cfg, width)
    train = {k: np.asarray(data[k])[:, None] for k in ("y", "y_clean")}
    train["x"] = np.asarray(data["x"])
    test = {"x": np.asarray(data["x_test"]), "y": np.asarray(data["y_test"])[:, None]}
    optimizer, precond, eta = make_optimizer(cfg, apply_fn, init_params, train["x"])
    probe = probes.Dissipation(
        probes.Schedule.parse(cfg.probe_schedule),
        lr=eta,
        preconditioner=precond,
        threshold=cfg.split_threshold,
        mode="dissipated_fraction",
        cells=True,
        method=cfg.dissipation_method,
        rank=cfg.dissipation_rank,
        lanczos_vectors=cfg.dissipation_vectors,
    )
    noisy = bool(np.any(train["y"] != train["y_clean"]))
    every_step = probes.Schedule.every(1)
    poprisk = (
        [probes.PopulationRisk(every_step, lr=eta, preconditioner=precond)] if cfg.poprisk else []
    )
    res = fit(
        dataclasses.replace(cfg.train, probe_size=cfg.mlp_n_train, batch_size=None),
        apply_fn=apply_fn,
        init_params=init_params,
        optimizer=optimizer,
        data=train,
        loss="squared",
        eval_sets={"test": test},
        probes=([probe] + poprisk) if noisy else [],
        run_dir=subrun_dir(
            run_dir,
            {"width": width, "noisy": noisy},
            config=cfg,
        ),
    )
    h = res.history
    steps, curve = _curve(h, "test/loss")
    block = {
        "width": width,
        "n_params": n_params,
        "step_size": eta,
        "test_mse": (2 * _last(h, "test/loss")).tolist(),  # squared_loss is ‖u − y‖²/(2n)
        "train_mse": (2 * _last(h, "train/loss")).tolist(),
        "curve_step": steps,
        "curve_test_mse": [2 * v for v in curve],
    }
    if noisy:
        block.update(_accounting(h, test["x"].shape[0]))
        # the W_S stopping rule (training set only) against the validation-optimal step; its
        # resolution is the eval interval (run with probe_schedule=every:N and eval_every=N)
        block["stopping"] = stop = probes.stopping_rules(h, "test/loss")
        if cfg.poprisk:
            block["poprisk_check"] = probes.population_risk_check(
                h, "test/loss", split_at=stop["validation_optimal_step"]
            )
    block["wall_s"] = time.perf_counter() - t0
    return block


def _accounting(h: dict, m: int) -> dict:
    """The four cells and the derived fractions at the last probe step (seed mean)."""
    pre = "probe/dissipation/"
    cells = {}
    for kind in ("train", "dissipated", "test"):
        cells[kind] = [
            [float(np.mean(_last(h, f"{pre}{kind}_{p}_{s}"))) for s in SUBS] for p in PARTS
        ]
    te, tr = cells["test"], cells["train"]
    frac_test = te[1][0] / (te[1][0] + te[0][0]) if te[1][0] + te[0][0] > 0 else None
    noise_tr = tr[1][0] + tr[1][1]
    drop, pred = _last(h, f"{pre}loss_drop"), _last(h, f"{pre}predicted_loss_drop")
    return {
        "four_cell": cells,  # [part][sub], part clean/noise, sub channel/reservoir; seed mean
        "noise_in_channel_fraction": frac_test,
        "noise_channel_fraction_train": tr[1][0] / noise_tr if noise_tr > 0 else None,
        "noise_test_energy": te[1][0] / m,
        # Φ(0) − Φ(T) vs g(0)ᵀ W g(0): how well the piecewise-constant kernel tracked the run
        "loss_identity_rel_err": float(np.mean(np.abs(pred - drop) / np.abs(drop))),
        "invisibility": float(np.mean(_last(h, f"{pre}invisibility"))),
        "coupling_corr": float(np.mean(_last(h, f"{pre}coupling_corr"))),
    }


def run_trained(cfg, out) -> dict:
    """Every (label noise, width) run; curves, peaks and four-cell accounting per width."""
    results = {"widths": list(cfg.widths), "n_train": cfg.mlp_n_train, "noise": {}}
    for p in cfg.mlp_label_noises:
        # one key for every noise level: same inputs, clean targets and noise draw, scaled by p
        noisy = make_task(
            jax.random.key(cfg.data_seed),
            cfg.mlp_n_train,
            cfg.mlp_n_test,
            cfg.mlp_d_in,
            cfg.mlp_task,
            p,
            jnp.float32,
        )
        runs = [run_one(cfg, noisy, w, out.file(f"mlp/noise{p:g}_w{w}")) for w in cfg.widths]
        mean_err = [float(np.mean(r["test_mse"])) for r in runs]
        thr = next((r["width"] for r in runs if np.mean(r["train_mse"]) < cfg.interp_tol), None)
        results["noise"][f"{p:g}"] = {
            "label_noise": p,
            "runs": runs,
            "test_mse": mean_err,
            "train_mse": [float(np.mean(r["train_mse"])) for r in runs],
            # None for clean labels (nothing to account for: no probe runs)
            "noise_in_channel_fraction": [r.get("noise_in_channel_fraction") for r in runs],
            "noise_channel_fraction_train": [r.get("noise_channel_fraction_train") for r in runs],
            "noise_test_energy": [r.get("noise_test_energy") for r in runs],
            "interpolation_width": thr,
            "near_threshold_widths": near_threshold(
                list(cfg.widths), [r["n_params"] for r in runs], cfg.mlp_n_train
            ),
            **_peak(list(cfg.widths), mean_err),
        }
    clean = results["noise"].get("0")
    for block in results["noise"].values():  # what the label noise added to the test error
        block["excess_test_mse"] = (
            None
            if clean is None
            else [a - b for a, b in zip(block["test_mse"], clean["test_mse"], strict=True)]
        )
    return results


def near_threshold(widths, n_params, n: int, k: int = 3) -> list[int]:
    """The ``k`` widths whose parameter count is closest to ``n`` (log distance)."""
    d = [abs(math.log(p / n)) for p in n_params]
    return [widths[i] for i in sorted(np.argsort(d)[:k])]
