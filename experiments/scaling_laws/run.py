"""Wiring of the scaling-laws experiment: sweeps, fits with seed-bootstrap CIs, results.json.

Run directory::

    config.json, results.json (written by the CLI from run()'s return value)
    teacher_losses.npz     per-seed losses of every teacher-student sweep
    cls/w<N>_D<D>/         one engine run per (width, data size) of the classification sweep

``results.json`` (schema checked by ``tests/test_exp_scaling_laws.py``)::

    {"experiment": "scaling_laws", "wall_s", "cpu_s",
     "teacher_student": {"setup": {"M", "a", "b"}, "theory": {"data_exponent", "model_exponent",
         "time_exponent", "covariance_exponent"},
         "data" | "model" | "time": {"x", "loss_mean", "loss_per_seed", "fit": {"params",
             "objective", "n_points", "ci", "level", "n_boot"}, "extrapolation": {...},
             "theory_exponent", "exponent_error", "within_tolerance"},
         "joint": {"N", "D", "loss_mean", "fit", "extrapolation"},
         "spectrum": {"eigenvalue_exponent", "target_tail_exponent", "predicted_data_exponent"}},
     "classification": {"widths", "data_sizes", "loss": "best" test cross-entropy (N, D),
         "data" | "model" | "time" | "joint": fits as above (no theory),
         "ntk_exponent_init", "ntk_exponent_final": (N, D) grids from the NTK probe,
         "spectrum": init-NTK spectral prediction, "runs": {...}},
     "summary": {...}}

A fit block's ``extrapolation`` holds the fit without the largest ``holdout`` sizes and its
relative error on them.
"""

from __future__ import annotations

import functools
import time

import jax
import numpy as np

from dyntheory import scaling
from dyntheory.engine import rundir
from experiments.scaling_laws import classify, teacher
from experiments.scaling_laws.config import Config


def _fit_block(x, per_seed: np.ndarray, cfg: Config, holdout: int) -> dict:
    """One-variable law with seed-bootstrap CIs and the held-out extrapolation error.

    ``fit`` is None below 4 sizes and ``extrapolation`` None below ``holdout + 4`` (too few points
    for three parameters).
    """
    x = np.asarray(x, float)
    fit_fn = functools.partial(scaling.fit_power_law, delta=cfg.huber_delta)
    mean = per_seed.mean(axis=0)
    block = {
        "x": x.tolist(),
        "loss_mean": mean.tolist(),
        "loss_per_seed": per_seed.tolist(),
        "fit": None,
        "extrapolation": None,
    }
    if x.size >= 4:
        boot = scaling.bootstrap_seeds(lambda L: fit_fn(x, L), per_seed, n_boot=cfg.n_boot)
        block["fit"] = scaling.bootstrap_to_dict(boot)
    if x.size >= holdout + 4:
        mask = scaling.holdout_mask(x, n_holdout=holdout)
        ext = scaling.extrapolation_error(fit_fn, (x,), mean, mask)
        block["extrapolation"] = {**ext, "fit": scaling.fit_to_dict(ext["fit"])}
    return block


def _joint_block(Ns, Ds, per_seed: np.ndarray, cfg: Config, holdout: int) -> dict:
    """Two-variable law on the (N, D) grid; per_seed has shape (S, |N|, |D|).

    ``fit`` is None below 3 sizes per variable, ``extrapolation`` None below ``holdout + 3``.
    """
    NN, DD = (g.ravel().astype(float) for g in np.meshgrid(Ns, Ds, indexing="ij"))
    flat = per_seed.reshape(per_seed.shape[0], -1)
    fit_fn = functools.partial(scaling.fit_scaling_law, delta=cfg.huber_delta)
    block = {
        "N": list(Ns),
        "D": list(Ds),
        "loss_mean": per_seed.mean(axis=0).tolist(),
        "fit": None,
        "extrapolation": None,
    }
    smallest = min(len(Ns), len(Ds))
    if smallest >= 3:
        boot = scaling.bootstrap_seeds(lambda L: fit_fn(NN, DD, L), flat, n_boot=cfg.n_boot)
        block["fit"] = scaling.bootstrap_to_dict(boot)
    if smallest >= holdout + 3:
        mask = scaling.holdout_mask(NN, DD, n_holdout=holdout)
        ext = scaling.extrapolation_error(fit_fn, (NN, DD), flat.mean(axis=0), mask)
        block["extrapolation"] = {**ext, "fit": scaling.fit_to_dict(ext["fit"])}
    return block


def _with_theory(block: dict, exponent: float, cfg: Config) -> dict:
    block["theory_exponent"] = exponent
    if block["fit"] is None:
        block.update(exponent_error=None, within_tolerance=None, ci_covers_theory=None)
        return block
    fitted = block["fit"]["params"]["alpha"]
    block["exponent_error"] = fitted - exponent
    block["within_tolerance"] = bool(abs(fitted - exponent) <= cfg.tolerance)
    lo, hi = block["fit"]["ci"]["alpha"]
    block["ci_covers_theory"] = bool(lo <= exponent <= hi)
    return block


def run_teacher(cfg: Config, out) -> dict:
    ts = cfg.ts
    keys = jax.random.split(jax.random.key(ts.seed), ts.seeds)
    with jax.enable_x64(True):
        sweeps = {
            "data": jax.jit(jax.vmap(lambda k: teacher.data_sweep(k, ts, list(ts.data_sizes)))),
            "model": jax.jit(jax.vmap(lambda k: teacher.model_sweep(k, ts, list(ts.model_sizes)))),
            "time": jax.jit(jax.vmap(lambda k: teacher.time_sweep(k, ts, list(ts.gd_steps)))),
            "joint": jax.jit(
                jax.vmap(
                    lambda k: teacher.joint_sweep(
                        k, ts, list(ts.joint_model_sizes), list(ts.joint_data_sizes)
                    )
                )
            ),
        }
        losses, walls = {}, {}
        for name, fn in sweeps.items():
            t0 = time.perf_counter()
            losses[name] = np.asarray(fn(keys), np.float64)
            walls[name] = time.perf_counter() - t0
        spec = teacher.spectral_prediction(keys[0], ts, max(ts.data_sizes))
    rundir.write_npz(out.file("teacher_losses.npz"), losses)
    theory = ts.theory
    res = {"setup": {"M": ts.M, "a": ts.a, "b": ts.b}, "theory": theory}
    xs = {"data": ts.data_sizes, "model": ts.model_sizes, "time": ts.gd_steps}
    for name, exp_key in (
        ("data", "data_exponent"),
        ("model", "model_exponent"),
        ("time", "time_exponent"),
    ):
        block = _fit_block(xs[name], losses[name], cfg, ts.holdout)
        res[name] = _with_theory(block, theory[exp_key], cfg)
        res[name]["wall_s"] = walls[name]
    res["joint"] = _joint_block(
        ts.joint_model_sizes, ts.joint_data_sizes, losses["joint"], cfg, ts.holdout
    )
    res["joint"]["wall_s"] = walls["joint"]
    spec["predicted_minus_theory"] = spec["predicted_data_exponent"] - theory["data_exponent"]
    spec["eigenvalue_minus_a"] = spec["eigenvalue_exponent"] - ts.a
    res["spectrum"] = spec
    return res


def run_classify(cfg: Config, out) -> dict:
    c = cfg.cls
    sw = classify.sweep(cfg, out)
    best = sw["best"]  # (|N|, |D|, S)
    per_seed = np.moveaxis(best, -1, 0)  # (S, |N|, |D|)
    res = {
        "widths": list(c.widths),
        "data_sizes": list(c.data_sizes),
        "loss": best.mean(axis=-1).tolist(),
        "final_loss": sw["final"].mean(axis=-1).tolist(),
        "data": _fit_block(c.data_sizes, per_seed[:, -1, :], cfg, 1),  # widest model
        "model": _fit_block(c.widths, per_seed[:, :, -1], cfg, 1),  # most data
        "joint": _joint_block(c.widths, c.data_sizes, per_seed, cfg, 1),
    }
    # time: the test loss of the largest run against the step, up to its best step
    big = sw["runs"][f"w{c.widths[-1]}_D{c.data_sizes[-1]}"]
    steps, curve = np.asarray(big["curve_step"]), np.asarray(big["curve_test_loss"])
    stop = int(np.argmin(curve)) + 1
    keep = steps[:stop] > 0
    if keep.sum() >= 4:
        t = steps[:stop][keep].astype(float)
        fit = scaling.fit_power_law(t, curve[:stop][keep], delta=cfg.huber_delta)
        res["time"] = {
            "x": t.tolist(),
            "loss_mean": curve[:stop][keep].tolist(),
            "fit": scaling.fit_to_dict(fit),
        }  # one curve (seed mean): no CI
    else:
        res["time"] = None
    grid = lambda key: [[sw["runs"][f"w{w}_D{D}"][key] for D in c.data_sizes] for w in c.widths]
    res["ntk_exponent_init"] = grid("ntk_exponent_init")
    res["ntk_exponent_final"] = grid("ntk_exponent_final")
    res["spectrum"] = classify.spectral_prediction(cfg)
    res["runs"] = sw["runs"]
    return res


def _alpha(block, name="alpha"):
    return None if not block or block.get("fit") is None else block["fit"]["params"][name]


def _ext_err(block):
    ext = block.get("extrapolation") if block else None
    return None if ext is None else ext["mean_abs_rel_error"]


def _summary(results: dict) -> dict:
    out = {}
    ts = results.get("teacher_student")
    if ts:
        for name in ("data", "model", "time"):
            b = ts[name]
            out[f"teacher/{name}_exponent"] = {
                "fitted": _alpha(b),
                "ci": b["fit"]["ci"]["alpha"] if b["fit"] else None,
                "theory": b["theory_exponent"],
                "within_tolerance": b["within_tolerance"],
                "extrapolation_mean_abs_rel_error": _ext_err(b),
            }
        out["teacher/joint"] = {
            "alpha": _alpha(ts["joint"]),
            "beta": _alpha(ts["joint"], "beta"),
            "extrapolation_mean_abs_rel_error": _ext_err(ts["joint"]),
        }
        out["teacher/spectrum"] = ts["spectrum"]
    cl = results.get("classification")
    if cl:
        out["classification"] = {
            "data_exponent": _alpha(cl["data"]),
            "model_exponent": _alpha(cl["model"]),
            "time_exponent": _alpha(cl["time"]),
            "joint_alpha": _alpha(cl["joint"]),
            "joint_beta": _alpha(cl["joint"], "beta"),
            "joint_extrapolation_mean_abs_rel_error": _ext_err(cl["joint"]),
            "ntk_exponent_init_widest": float(np.mean(cl["ntk_exponent_init"][-1])),
            "ntk_exponent_final_widest": float(np.mean(cl["ntk_exponent_final"][-1])),
            "spectral_predicted_data_exponent": cl["spectrum"]["predicted_data_exponent"],
        }
    return out


def run(cfg: Config, run_dir) -> dict:
    """Both parts; returns results.json's content (module docstring)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = run_dir if isinstance(run_dir, rundir.RunDir) else rundir.RunDir(run_dir)
    results: dict = {"experiment": "scaling_laws"}
    if cfg.run_teacher:
        results["teacher_student"] = run_teacher(cfg, out)
    if cfg.run_classify:
        results["classification"] = run_classify(cfg, out)
    results["summary"] = _summary(results)
    results["wall_s"] = time.perf_counter() - t0
    results["cpu_s"] = time.process_time() - c0  # all threads; wall_s on a busy machine misleads
    return results
