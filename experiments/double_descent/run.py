"""Wiring of the double-descent experiment: the exact sweep, the trained sweep, results.json.

Run directory::

    config.json, results.json (written by the CLI from run()'s return value)
    exact_results.json           the exact part's block of results.json, written when it is done
    exact_spectra.npz            K = ΦΦᵀ eigenvalues per N (seed 0): "<task>/<map>/eigvals" (|N|, n)
    mlp/noise<p>_w<width>/       one engine run per (label noise, width), all seeds (vmap)

``results.json`` (schema checked by ``tests/test_exp_double_descent.py``)::

    {"experiment": "double_descent", "wall_s", "cpu_s",
     "exact": {"<task>/<map>": {"N", "N_over_n", "mean": {<summary key>: [per N]}, "median",
               "per_seed_test_mse", "peak_N", "peak_ratio_vs_quarter_n", "peak_ratio_vs_4n",
               "noise_in_channel_fraction_peak_N", "noise_test_energy_peak_N",
               "noise_channel_fraction_train_is_monotone", "checks": {...},
               "spectrum": {"lambda_max", "lambda_min_nonzero", "condition_number",
                            "effective_rank", "decay_exponent"}, "wall_s"}},
     "trained": {"widths", "n_train", "noise": {"<p>": {"label_noise", "test_mse", "train_mse",
                 "noise_in_channel_fraction", "noise_channel_fraction_train",
                 "interpolation_width", "near_threshold_widths", "peak_width", "peak_test_mse",
                 "peak_over_ends", "peak_is_interior",
                 "runs": [{"width", "n_params", "test_mse", "train_mse", "curve_step",
                           "curve_test_mse", "four_cell", ...}]}}},
     "summary": {the headline numbers and checks}}
"""

from __future__ import annotations

import time

from dyntheory.engine import rundir
from experiments.double_descent.config import Config
from experiments.double_descent.exact import run_exact
from experiments.double_descent.trained import run_trained


def _summary(results: dict) -> dict:
    out: dict = {}
    for name, block in results.get("exact", {}).items():
        out[f"exact/{name}"] = {
            "peak_N": block["peak_N"],
            "peak_ratio_vs_quarter_n": block["peak_ratio_vs_quarter_n"],
            "peak_ratio_vs_4n": block["peak_ratio_vs_4n"],
            "noise_in_channel_fraction_peak_N": block["noise_in_channel_fraction_peak_N"],
            "noise_test_energy_peak_N": block["noise_test_energy_peak_N"],
            **block["checks"],
        }
    trained = results.get("trained")
    if trained:
        noise = trained["noise"]
        for key, b in noise.items():
            out[f"trained/noise{key}"] = {
                k: b[k]
                for k in (
                    "peak_width",
                    "peak_over_ends",
                    "peak_is_interior",
                    "interpolation_width",
                    "near_threshold_widths",
                )
            }
        levels = sorted(noise, key=float)
        if len(levels) >= 2 and float(levels[0]) == 0.0:
            clean, noisy = noise[levels[0]], noise[levels[-1]]
            out["trained/noisy_peak_over_clean_peak"] = (
                noisy["peak_over_ends"] / clean["peak_over_ends"]
                if clean["peak_over_ends"]
                else None
            )
    return out


def run(cfg: Config, run_dir) -> dict:
    """Both parts; returns results.json's content (module docstring)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = run_dir if isinstance(run_dir, rundir.RunDir) else rundir.RunDir(run_dir)
    results: dict = {"experiment": "double_descent"}
    if cfg.run_exact:
        results["exact"], arrays = run_exact(cfg.exact)
        rundir.write_npz(out.file("exact_spectra.npz"), arrays)
        rundir.write_json(
            out.file("exact_results.json"), results["exact"]
        )  # kept if a later part fails
    if cfg.run_trained:
        results["trained"] = run_trained(cfg, out)
    results["summary"] = _summary(results)
    results["wall_s"] = time.perf_counter() - t0
    results["cpu_s"] = time.process_time() - c0  # all threads; wall_s on a busy machine misleads
    return results
