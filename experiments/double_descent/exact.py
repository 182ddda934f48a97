r"""The exact part: minimum-norm random-features regression swept through ``N = n``.

For every (task, feature map) and seed: draw the teacher data and ``N_max`` random features, then
for every ``N`` of the grid fit ``θ̂ = Φ⁺ y`` and account for it with ``W_∞``, ``G_∞``
(:mod:`dyntheory.randfeat`). One jitted function per (task, feature map) runs the whole ``N`` grid
(``N`` is traced: the feature matrix is padded to ``N_max`` with zero columns, which changes
nothing), in float64.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from dyntheory import randfeat, spectrum
from dyntheory.probes import ratio
from experiments.double_descent.data import make_task

SUMMARY_KEYS = (
    "test_mse",
    "train_mse",
    "rank",
    "lambda_max",
    "lambda_min_nonzero",
    "noise_channel_fraction_train",
    "noise_test_energy",
    "clean_test_energy",
    "noise_in_channel_fraction",
    "noise_gain",
    "noise_amplification",
    "invisible_test_energy",
)


def feature_counts(n: int, ratios) -> list[int]:
    """The grid ``N = round(r·n)`` (at least 1, duplicates removed, ascending)."""
    return sorted({max(1, round(r * n)) for r in ratios})


def _make_sweep(ex, kind: str, task: str, counts: list[int]):
    n_max = max(counts)
    grid = jnp.asarray(counts, jnp.int32)

    @jax.jit
    def sweep(key):
        kd, kf = jax.random.split(key)
        data = make_task(kd, ex.n_train, ex.n_test, ex.d_in, task, ex.label_noise, jnp.float64)
        rf = randfeat.init_features(kf, n_max, ex.d_in, jnp.float64)

        def one(nf):
            phi = randfeat.features(kind, rf, data["x"], nf, ex.bandwidth)
            phiq = randfeat.features(kind, rf, data["x_test"], nf, ex.bandwidth)
            acc = randfeat.min_norm_accounting(phi, phiq, data["y_clean"], data["y"])
            s = randfeat.summarize(acc, data["y_test"], data["y"])
            pred_sign = jnp.where(acc.fit.test_pred >= 0, 1.0, -1.0)
            s["test_sign_error"] = jnp.mean(pred_sign != jnp.sign(data["y_test"]))
            return s, acc.fit.eigvals

        return jax.lax.map(one, grid)

    return sweep


def summarize_sweep(counts: list[int], n: int, per_seed: dict[str, np.ndarray]) -> dict:
    """Curves (mean / median over seeds) and the peak checks for one (task, feature map)."""
    mean = {k: v.mean(axis=0) for k, v in per_seed.items()}
    median = {k: np.median(v, axis=0) for k, v in per_seed.items()}
    c = np.asarray(counts)
    at = lambda N: int(np.argmin(np.abs(c - N)))
    i_n, i_lo, i_hi = at(n), at(n / 4), at(4 * n)
    err = mean["test_mse"]
    i_peak = int(np.argmax(err))
    i_frac = int(np.argmax(mean["noise_in_channel_fraction"]))
    i_noise = int(np.argmax(mean["noise_test_energy"]))
    ratio_lo = ratio(float(err[i_n]), float(err[i_lo]))
    ratio_hi = ratio(float(err[i_n]), float(err[i_hi]))
    window = lambda i: 0.8 * n <= counts[i] <= 1.25 * n
    return {
        "N": counts,
        "N_over_n": (c / n).tolist(),
        "mean": {k: v.tolist() for k, v in mean.items()},
        "median": {k: v.tolist() for k, v in median.items()},
        "per_seed_test_mse": per_seed["test_mse"].tolist(),
        "peak_N": counts[i_peak],
        "peak_ratio_vs_quarter_n": ratio_lo,
        "peak_ratio_vs_4n": ratio_hi,
        "median_peak_ratio_vs_quarter_n": ratio(
            float(median["test_mse"][i_n]), float(median["test_mse"][i_lo])
        ),
        "median_peak_ratio_vs_4n": ratio(
            float(median["test_mse"][i_n]), float(median["test_mse"][i_hi])
        ),
        "noise_in_channel_fraction_peak_N": counts[i_frac],
        "noise_test_energy_peak_N": counts[i_noise],
        "noise_channel_fraction_train_is_monotone": bool(
            np.all(np.diff(mean["noise_channel_fraction_train"]) >= -1e-9)
        ),
        "checks": {
            "test_error_peaks_at_n": counts[i_peak] == counts[i_n],
            "peak_at_least_3x_quarter_n": ratio_lo is not None and ratio_lo >= 3,
            "peak_at_least_3x_4n": ratio_hi is not None and ratio_hi >= 3,
            "noise_test_energy_peaks_at_n": counts[i_noise] == counts[i_n],
            "noise_in_channel_fraction_peaks_in_threshold_window": window(i_frac),
        },
    }


def spectrum_summary(counts: list[int], eigvals: np.ndarray, n: int) -> dict:
    """Per ``N``: λ_max, λ_min⁺, condition number, effective rank, decay of the top half."""
    out = {
        k: []
        for k in (
            "lambda_max",
            "lambda_min_nonzero",
            "condition_number",
            "effective_rank",
            "decay_exponent",
        )
    }
    for lam in eigvals:  # (n,) descending, seed 0
        lam = np.asarray(lam, np.float64)
        pos = lam[lam > 0]
        out["lambda_max"].append(float(pos[0]))
        out["lambda_min_nonzero"].append(float(pos[-1]))
        out["condition_number"].append(float(pos[0] / pos[-1]))
        out["effective_rank"].append(float(spectrum.participation_ratio(jnp.asarray(pos))))
        out["decay_exponent"].append(
            float(spectrum.power_law_exponent(pos, 1, pos.size // 2)) if pos.size >= 4 else None
        )
    return out


def run_exact(ex) -> tuple[dict, dict[str, np.ndarray]]:
    """All (task, feature map) sweeps: the results block and the spectra arrays (seed 0)."""
    counts = feature_counts(ex.n_train, ex.n_ratios)
    results, arrays = {}, {}
    with jax.enable_x64(True):
        for task in ex.tasks:
            for kind in ex.feature_maps:
                t0 = time.perf_counter()
                sweep = _make_sweep(ex, kind, task, counts)
                rows, eig0 = [], None
                for s in range(ex.seeds):
                    summ, eig = sweep(jax.random.fold_in(jax.random.key(ex.seed), s))
                    rows.append({k: np.asarray(v, np.float64) for k, v in summ.items()})
                    if s == 0:
                        eig0 = np.asarray(eig)
                per_seed = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
                block = summarize_sweep(counts, ex.n_train, per_seed)
                block["spectrum"] = spectrum_summary(counts, eig0, ex.n_train)
                block["wall_s"] = time.perf_counter() - t0
                results[f"{task}/{kind}"] = block
                arrays[f"{task}/{kind}/eigvals"] = eig0
                arrays[f"{task}/{kind}/N"] = np.asarray(counts)
    return results, arrays
