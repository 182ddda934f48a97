"""The double-descent experiment: data, config validation, the tiny run and its results schema."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dyntheory.engine.config import ConfigError, apply_overrides
from dyntheory.engine.rundir import RunDir, subrun_dir
from experiments.double_descent import DESCRIPTION, PRESETS, Config
from experiments.double_descent.data import make_task
from experiments.double_descent.exact import feature_counts, summarize_sweep
from experiments.double_descent.trained import run_trained

pytestmark = pytest.mark.one_device  # their runs on one device (tests/conftest.py)


@pytest.mark.parametrize("task", ["regression", "binary"])
def test_make_task_noise(task):
    d = make_task(jax.random.key(0), 4000, 10, 5, task, 0.2, jnp.float64)
    assert d["x"].shape == (4000, 5) and d["x_test"].shape == (10, 5)
    eps = np.asarray(d["y"] - d["y_clean"])
    if task == "regression":
        assert np.var(np.asarray(d["y_clean"])) == pytest.approx(1.0, rel=0.1)
        assert np.var(eps) == pytest.approx(0.2, rel=0.1)
    else:
        assert set(np.unique(np.asarray(d["y_clean"]))) == {-1.0, 1.0}
        assert np.mean(eps != 0) == pytest.approx(0.2, abs=0.03)
    clean = make_task(jax.random.key(0), 4000, 10, 5, task, 0.0, jnp.float64)
    np.testing.assert_array_equal(clean["y"], clean["y_clean"])
    np.testing.assert_array_equal(clean["y_clean"], d["y_clean"])  # same teacher and inputs
    with pytest.raises(ValueError, match="task"):
        make_task(jax.random.key(0), 4, 4, 2, "ordinal", 0.1)
    with pytest.raises(ValueError, match="label_noise"):
        make_task(jax.random.key(0), 4, 4, 2, "binary", 1.0)


def test_feature_counts_and_peak_summary():
    assert feature_counts(200, (0.125, 0.25, 1.0, 1.0, 4.0)) == [25, 50, 200, 800]
    counts = [10, 40, 160]
    err = np.array([[1.0, 9.0, 2.0], [1.0, 7.0, 2.0]])
    frac = np.array([[0.1, 0.5, 0.2], [0.1, 0.5, 0.2]])
    per_seed = {
        "test_mse": err,
        "noise_in_channel_fraction": frac,
        "noise_test_energy": err,
        "noise_channel_fraction_train": np.array([[0.2, 1.0, 1.0]] * 2),
    }
    out = summarize_sweep(counts, 40, per_seed)
    assert out["peak_N"] == 40 and out["peak_ratio_vs_quarter_n"] == pytest.approx(8.0)
    assert out["peak_ratio_vs_4n"] == pytest.approx(4.0)
    assert all(out["checks"].values())
    assert out["noise_channel_fraction_train_is_monotone"]


@pytest.mark.parametrize(
    "override, match",
    [
        ("exact.tasks=ordinal", "tasks"),
        ("exact.label_noise=1.5", "label_noise"),
        ("widths=0,4", "widths"),
        ("lr=3", "lr"),
        ("mlp_label_noises=-0.1", "mlp_label_noises"),
        ("split_threshold=1", "split_threshold"),
        ("poprisk=true", "eval_every=1"),
    ],
)
def test_bad_values_raise(override, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(Config(), [override])


def test_subrun_dir_resumes_only_the_same_spec(tmp_path):
    path = tmp_path / "sub"
    rd = subrun_dir(path, {"width": 4, "sizes": (1, 2)})
    rd.append_metrics([{"step": 0, "train/loss": 1.0}])
    assert subrun_dir(path, {"width": 4, "sizes": [1, 2]}).read_metrics()  # same spec: kept
    assert not subrun_dir(path, {"width": 8, "sizes": [1, 2]}).read_metrics()  # changed: reset
    assert subrun_dir(None, {}) is None


def test_presets_and_docstring():
    assert set(PRESETS) == {"tiny", "quick", "paper"}
    assert "dyntheory run double_descent --preset quick" in Config.__doc__
    assert DESCRIPTION.startswith("Double descent")


def test_tiny_run_writes_results(tiny_run):
    out = tiny_run("double_descent")
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["experiment"] == "double_descent"
    cfg = PRESETS["tiny"].config
    assert set(on_disk["exact"]) == {
        f"{t}/{m}" for t in cfg.exact.tasks for m in cfg.exact.feature_maps
    }
    for block in on_disk["exact"].values():
        n_grid = len(block["N"])
        for key in (
            "test_mse",
            "noise_in_channel_fraction",
            "noise_test_energy",
            "noise_channel_fraction_train",
            "noise_amplification",
        ):
            assert len(block["mean"][key]) == n_grid
        assert set(block["checks"]) >= {
            "test_error_peaks_at_n",
            "peak_at_least_3x_quarter_n",
            "peak_at_least_3x_4n",
        }
        assert len(block["spectrum"]["lambda_max"]) == n_grid
        assert max(block["mean"]["invisible_test_energy"]) < 1e-12
    with np.load(out / "exact_spectra.npz") as z:
        assert z["regression/relu/eigvals"].shape == (len(block["N"]), cfg.exact.n_train)
    trained = on_disk["trained"]
    assert trained["widths"] == list(cfg.widths)
    noisy = trained["noise"]["0.2"]
    assert len(noisy["test_mse"]) == len(cfg.widths)
    assert len(noisy["noise_in_channel_fraction"]) == len(cfg.widths)
    run = noisy["runs"][0]
    assert len(run["test_mse"]) == cfg.train.seeds
    assert np.shape(run["four_cell"]["test"]) == (2, 2)
    assert np.isfinite(run["invisibility"])  # soft split after 40 steps: not ~0 yet
    stop = run["stopping"]  # the W_S rule next to the validation optimum, per seed
    assert len(stop["ws_rule_step"]) == len(stop["validation_optimal_step"]) == cfg.train.seeds
    assert all(0 <= t <= cfg.train.steps for t in stop["validation_optimal_step"])
    assert all(np.isfinite(stop["ws_stability_max"]))
    assert "noise_in_channel_fraction" not in trained["noise"]["0"]["runs"][0]
    assert "stopping" not in trained["noise"]["0"]["runs"][0]  # clean labels: no probe
    assert {"peak_width", "peak_over_ends", "interpolation_width"} <= set(noisy)
    assert on_disk["wall_s"] > 0 and on_disk["cpu_s"] > 0


def test_trained_run_with_the_loo_probe_reports_both_rules_and_the_check(tmp_path):
    over = ["widths=8", "mlp_label_noises=0.2", "poprisk=true", "eval_every=1", "log_every=1"]
    cfg = apply_overrides(PRESETS["tiny"].config, over)
    (run,) = run_trained(cfg, RunDir(tmp_path / "run"))["noise"]["0.2"]["runs"]
    stop = run["stopping"]
    assert set(stop) >= {"loo_rule_step", "ws_rule_step", "validation_optimal_step", "window"}
    assert len(stop["loo_rule_step"]) == cfg.train.seeds
    rows = run["poprisk_check"]
    assert len(rows) == cfg.train.seeds
    for row, split in zip(rows, stop["validation_optimal_step"], strict=True):
        assert row["steps"] == cfg.train.steps and row["split_step"] == split
        assert -1 <= row["w1"]["r"] <= 1
