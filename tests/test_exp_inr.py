"""The INR experiment: signals, noise, Fourier features, the metrics on hand-made cases, config,
and a tiny end-to-end run."""

from __future__ import annotations

import importlib
import json

import jax
import numpy as np
import pytest

from dyntheory.engine.config import ConfigError, apply_overrides
from experiments.inr import PRESETS, Config, signals

pytestmark = pytest.mark.one_device  # their runs on one device (tests/conftest.py)

inr_run = importlib.import_module("experiments.inr.run")  # the module, not the run function

# --------------------------------------------------------------------------- metrics


def _case(n=4096, sigma=0.2, seed=0):
    rng = np.random.default_rng(seed)
    s = np.sin(np.linspace(0, 6, n))
    eps = sigma * rng.standard_normal(n)
    return s, eps, s + eps


def test_psnr_hand_made():
    s = np.array([0.0, 1.0, 0.5, 0.25])  # range R = 1
    np.testing.assert_allclose(signals.psnr(s + 0.1, s), 20.0, rtol=1e-12)  # R²/0.01
    np.testing.assert_allclose(
        signals.psnr(2 * s + 0.01, 2 * s), 10 * np.log10(4 / 1e-4), rtol=1e-12
    )
    np.testing.assert_allclose(signals.psnr(s + 0.1, s, data_range=2.0), 10 * np.log10(400))
    with np.errstate(divide="ignore"):
        assert signals.psnr(s, s) == np.inf


def test_memorization_metrics_hand_made():
    s, eps, y = _case()
    # The clean fit memorized nothing; interpolating the targets memorized everything.
    assert signals.noise_fit(s, y, eps) == pytest.approx(0.0, abs=1e-12)
    assert signals.noise_coef(s, s, eps) == pytest.approx(0.0, abs=1e-12)
    assert signals.noise_fit(y, y, eps) == pytest.approx(1.0)
    assert signals.noise_coef(y, s, eps) == pytest.approx(1.0)
    # Half the noise: coef ½, fit 1 − ¼ = ¾.
    half = s + 0.5 * eps
    assert signals.noise_coef(half, s, eps) == pytest.approx(0.5)
    assert signals.noise_fit(half, y, eps) == pytest.approx(0.75)
    # An error orthogonal to the noise is not memorization (coef 0) but costs noise_fit.
    d = np.cos(np.linspace(0, 40, len(s)))
    d -= (d @ eps) / (eps @ eps) * eps
    assert signals.noise_coef(s + d, s, eps) == pytest.approx(0.0, abs=1e-12)
    want = 2 * 0.0 - (d @ d) / (eps @ eps)  # noise_fit = 2·coef − ‖f − s‖²/‖ε‖²
    assert signals.noise_fit(s + d, y, eps) == pytest.approx(want)


def test_masked_metrics_agree_with_the_plain_ones():
    s, eps, y = _case(n=64)
    f = s + 0.3 * eps + 0.01
    train = np.zeros(64)
    train[::2] = 1.0
    m = signals.masked_metrics(f, s, y * train, eps * train, train, 2.0)
    tr, he = train == 1, train == 0
    np.testing.assert_allclose(m["psnr"], signals.psnr(f, s, 2.0))
    np.testing.assert_allclose(m["psnr_train"], signals.psnr(f[tr], s[tr], 2.0))
    np.testing.assert_allclose(m["psnr_heldout"], signals.psnr(f[he], s[he], 2.0))
    np.testing.assert_allclose(m["noise_fit"], signals.noise_fit(f[tr], y[tr], eps[tr]))
    np.testing.assert_allclose(m["noise_coef"], signals.noise_coef(f[tr], s[tr], eps[tr]))
    np.testing.assert_allclose(m["mse_noisy"], np.mean((f[tr] - y[tr]) ** 2))
    # jax arrays give the same numbers; no held-out points give NaN.
    mj = signals.masked_metrics(*(jax.numpy.asarray(a) for a in (f, s, y, eps, train)), 2.0)
    np.testing.assert_allclose(mj["noise_coef"], m["noise_coef"], rtol=1e-6)
    full = signals.masked_metrics(f, s, y, eps, np.ones(64), 2.0)
    assert np.isnan(full["psnr_heldout"])


# --------------------------------------------------------------------------- data


def test_noise_is_deterministic_and_scaled():
    clean = np.zeros(20000)
    a, ya = signals.add_noise(jax.random.key(3), clean, 0.25)
    b, _ = signals.add_noise(jax.random.key(3), clean, 0.25)
    c, _ = signals.add_noise(jax.random.key(4), clean, 0.25)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(ya, clean + a)
    assert abs(a.std() - 0.25) < 0.01 and abs(a.mean()) < 0.01


def test_signals_fourier_features_and_split():
    x, v = signals.signal_on_grid("sines1d", 128)
    assert x.shape == (128, 1) and v.shape == (128,) and np.all((0 <= x) & (x < 1))
    for name in ("blobs2d", "hopper2d"):
        x, v = signals.signal_on_grid(name, 32)
        assert x.shape == (1024, 2) and v.min() == 0.0 and v.max() == 1.0
    B = signals.fourier_matrix(jax.random.key(0), 16, 2, 10.0)
    g = signals.fourier_features(x, B)
    assert g.shape == (1024, 32)
    np.testing.assert_allclose(g[:, :16] ** 2 + g[:, 16:] ** 2, 1.0, atol=1e-12)
    np.testing.assert_allclose(g[0], np.r_[np.ones(16), np.zeros(16)])  # x = 0
    idx = signals.split_train(8, 2, 2)
    grid = signals.grid_coords(8, 2)
    np.testing.assert_allclose(np.unique(grid[idx]), [0.0, 0.25, 0.5, 0.75])  # every other row/col
    assert len(idx) == 16
    assert len(signals.split_train(8, 1, 1)) == 8
    with pytest.raises(ValueError, match="unknown signal"):
        signals.signal_on_grid("cat", 8)


def test_make_data_consistent():
    cfg = apply_overrides(PRESETS["tiny"].config, ["sigma=0.2"])
    d = inr_run.make_data(cfg, "blobs2d")
    g, t = d["grid"], d["train"]
    on = g["train"] == 1
    assert on.sum() == d["n_train"] == len(t["y"]) == (cfg.side2d // cfg.stride) ** 2
    np.testing.assert_allclose(g["y"][on], t["y"])
    np.testing.assert_allclose(g["y"][on], g["clean"][on] + g["eps"][on], atol=1e-6)
    assert np.all(g["y"][~on] == 0) and np.all(g["eps"][~on] == 0)
    assert d["batch_size"] == round(cfg.batch_fraction * d["n_train"])
    assert 0.1 < g["eps"][on].std() / d["data_range"] < 0.3  # σ relative to the range
    again = inr_run.make_data(cfg, "blobs2d")
    np.testing.assert_array_equal(again["grid"]["eps"], g["eps"])  # same data_seed, same noise


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "override, match",
    [
        ("signals=cat", "subset of sines1d"),
        ("signals=", "subset of sines1d"),
        ("sigma=0", "sigma must be > 0"),
        ("sigma=-1", "finite number >= 0"),
        ("batch_fraction=1", r"batch_fraction must lie in \(0, 1\)"),
        ("batch_fraction=0", r"batch_fraction must lie in \(0, 1\)"),
        ("batch_size=32", "derived per signal"),
        ("stride=400", "leaves < 2 samples"),
        ("optimizers=sgd", "subset of adamw, prm"),
        ("lr=0", "lr must be > 0"),
        ("prm_rho=1", r"prm_rho must lie in \[0, 1\)"),
        ("prm_mask=sharp", "not one of 'snr', 'soft', 'hard'"),
    ],
)
def test_bad_set_values_raise_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(PRESETS["quick"].config, [override])


def test_presets_and_docstring():
    quick = PRESETS["quick"].config
    assert quick.optimizers == ("adamw", "prm") and quick.signals == ("sines1d", "blobs2d")
    assert "dyntheory run inr --preset quick" in Config.__doc__
    assert set(PRESETS) == {"tiny", "quick", "stopping", "paper"}
    stop = PRESETS["stopping"].config
    assert stop.stopping and stop.train.eval_every == 1 and stop.signals == ("sines1d",)
    with pytest.raises(ConfigError, match="ws_every"):
        apply_overrides(PRESETS["tiny"].config, ["ws_every=0"])


# --------------------------------------------------------------------------- end to end


def test_tiny_run_writes_results_that_the_figure_reads(tiny_run, tmp_path):
    out = tiny_run("inr")
    cfg = PRESETS["tiny"].config
    res = json.loads((out / "results.json").read_text())
    assert res["experiment"] == "inr" and res["wall_s"] > 0
    assert res["signals"].keys() == set(cfg.signals)
    for sig in res["signals"].values():
        assert sig["arms"].keys() == sig["best"].keys() == set(cfg.optimizers)
        assert sig["alpha"] == pytest.approx(
            sig["batch_size"] / (sig["n_train"] - sig["batch_size"])
        )
        for opt, by_lr in sig["arms"].items():
            assert len(by_lr) == len(cfg.lrs)
            for arm in by_lr.values():
                for key in ("best_psnr", "final_psnr", "final_noise_coef", "final_noise_fit"):
                    assert len(arm[key]) == cfg.train.seeds and all(np.isfinite(arm[key]))
                assert all(b >= f for b, f in zip(arm["best_psnr"], arm["final_psnr"], strict=True))
                if opt == "prm":
                    assert all(0.0 <= q <= 1.0 for q in arm["final_gate_mean"])
            for key in inr_run.SUMMARY:
                assert np.isfinite(sig["best"][opt][key])
            assert sig["peak"][opt]["median_best_psnr"] >= sig["best"][opt]["median_best_psnr"]
        n = len(sig["curves"]["step"])
        assert n >= 2 and all(len(v) == n for v in sig["curves"].values())
    from paper_figures import inr as figure  # the figure reads the run directory only

    png, pdf = figure.draw(out, tmp_path)
    assert png.stat().st_size > 0 and pdf.exists()
    assert (out / cfg.signals[0] / "adamw_lr1e-03" / "metrics.jsonl").exists()


def test_tiny_run_with_the_stopping_rules(tmp_path):
    """The stopping preset's wiring on the tiny model: every arm reports each rule's step and the
    held-out MSE there, the validation optimum, the W_S probe's validity and the LOO check."""
    from dyntheory.cli import app as cli

    over = ["signals=sines1d", "stopping=true", "eval_every=1", "log_every=1", "ws_every=10"]
    cli.run_experiment("inr", "tiny", over, out=tmp_path / "run")
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    cfg = apply_overrides(PRESETS["tiny"].config, over)
    for by_lr in res["signals"]["sines1d"]["arms"].values():
        for arm in by_lr.values():
            stop = arm["stopping"]
            for key in ("loo_rule_step", "ws_rule_step", "validation_optimal_step"):
                assert len(stop[key]) == cfg.train.seeds
            assert all(0 <= t <= cfg.train.steps for t in stop["validation_optimal_step"])
            best, final = stop["validation_optimal_test_loss"], stop["final_test_loss"]
            assert all(b <= f for b, f in zip(best, final, strict=True))
            for rule in ("loo_rule", "ws_rule"):
                picked = zip(stop[f"{rule}_step"], stop[f"{rule}_test_loss"], best, strict=True)
                for t, loss, b in picked:
                    assert loss >= b and (t is None or 0 <= t <= cfg.train.steps)
            assert len(stop["ws_stability_max"]) == len(stop["ws_identity_rel_err"]) == 2
            (row, _) = arm["poprisk_check"]
            assert set(row) >= {"before", "after", "split_step"}
            assert row["steps"] == cfg.train.steps and -1 <= row["w1"]["r"] <= 1
