"""Scaling-law fits: recovery of known laws, bootstrap coverage, extrapolation, bad inputs."""

import functools

import numpy as np
import pytest

from dyntheory import scaling

X = np.array([16, 32, 64, 128, 256, 512, 1024, 2048], float)
TRUE_1D = {"E": 0.1, "A": 5.0, "alpha": 0.7}
N2, D2 = (
    g.ravel() for g in np.meshgrid([8, 16, 32, 64, 128, 256.0], [32, 64, 128, 256, 512, 1024.0])
)
TRUE_2D = {"E": 0.05, "A": 3.0, "alpha": 0.8, "B": 10.0, "beta": 0.5}


def law_1d(x, p):
    return p["E"] + p["A"] * x ** -p["alpha"]


def law_2d(n, d, p):
    return p["E"] + p["A"] * n ** -p["alpha"] + p["B"] * d ** -p["beta"]


def assert_params(got, want, rtol):
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, rtol=rtol, err_msg=k)


@pytest.mark.parametrize(
    "true", [TRUE_1D, {"E": 0.0, "A": 2.0, "alpha": 1.5}, {"E": 1.0, "A": 30.0, "alpha": 0.3}]
)
def test_power_law_recovers_noiseless(true):
    fit = scaling.fit_power_law(X, law_1d(X, true))
    assert fit.n_vars == 1 and fit.n_points == X.size
    assert_params(fit.params, {k: v for k, v in true.items() if v}, rtol=1e-5)
    assert fit.params["E"] == pytest.approx(true["E"], abs=1e-8)
    np.testing.assert_allclose(scaling.predict(fit, X), law_1d(X, true), rtol=1e-6)


def test_power_law_without_offset():
    true = {"E": 0.0, "A": 4.0, "alpha": 0.9}
    fit = scaling.fit_power_law(X, law_1d(X, true), fit_offset=False)
    assert fit.params["E"] == 0.0
    assert_params(fit.params, {"A": 4.0, "alpha": 0.9}, rtol=1e-6)


def test_scaling_law_recovers_noiseless():
    fit = scaling.fit_scaling_law(N2, D2, law_2d(N2, D2, TRUE_2D))
    assert fit.n_vars == 2
    assert_params(fit.params, TRUE_2D, rtol=1e-3)


def test_power_law_recovers_noisy_and_ci_covers_truth():
    rng = np.random.default_rng(1)
    seeds = law_1d(X, TRUE_1D) * np.exp(0.02 * rng.standard_normal((6, X.size)))
    boot = scaling.bootstrap_seeds(lambda L: scaling.fit_power_law(X, L), seeds, n_boot=60, seed=0)
    assert_params(boot.fit.params, TRUE_1D, rtol=0.05)
    for k, v in TRUE_1D.items():
        lo, hi = boot.ci[k]
        assert lo <= v <= hi, (k, v, lo, hi)
        assert boot.samples[k].shape == (60,)
    d = scaling.bootstrap_to_dict(boot)
    assert d["n_boot"] == 60 and set(d["ci"]) == set(TRUE_1D)


def test_bootstrap_coverage_rate():
    """Over repeated noisy experiments the 90 % interval of α covers the truth most of the time."""
    hits = 0
    reps = 10
    for r in range(reps):
        rng = np.random.default_rng(100 + r)
        seeds = law_1d(X, TRUE_1D) * np.exp(0.03 * rng.standard_normal((16, X.size)))
        boot = scaling.bootstrap_seeds(
            lambda L: scaling.fit_power_law(X, L), seeds, n_boot=30, level=0.9, seed=r
        )
        lo, hi = boot.ci["alpha"]
        hits += lo <= TRUE_1D["alpha"] <= hi
    assert hits >= 7, f"90 % interval covered α in only {hits}/{reps} repetitions"


def test_scaling_law_recovers_noisy_exponents():
    rng = np.random.default_rng(2)
    L = law_2d(N2, D2, TRUE_2D) * np.exp(0.005 * rng.standard_normal(N2.shape))
    fit = scaling.fit_scaling_law(N2, D2, L)
    assert abs(fit.params["alpha"] - 0.8) < 0.08
    assert abs(fit.params["beta"] - 0.5) < 0.05


def test_huber_loss_resists_an_outlier():
    L = law_1d(X, TRUE_1D)
    L[3] *= 1.5  # one corrupted point
    robust = scaling.fit_power_law(X, L, delta=1e-3)
    assert abs(robust.params["alpha"] - 0.7) < 0.02
    squared = scaling.fit_power_law(X, L, delta=10.0)  # Huber = ½ r² everywhere
    assert abs(squared.params["alpha"] - 0.7) > abs(robust.params["alpha"] - 0.7)


def test_extrapolation_error():
    L = law_1d(X, TRUE_1D)
    mask = scaling.holdout_mask(X, n_holdout=2)
    assert mask.tolist() == [False] * 6 + [True] * 2
    out = scaling.extrapolation_error(scaling.fit_power_law, (X,), L, mask)
    assert len(out["heldout"]) == 2 and out["heldout"][0]["x"] == 1024.0
    assert out["mean_abs_rel_error"] < 1e-5
    L2 = law_2d(N2, D2, TRUE_2D)
    mask2 = scaling.holdout_mask(N2, D2, n_holdout=1)
    assert mask2.sum() == 6 + 6 - 1
    out2 = scaling.extrapolation_error(scaling.fit_scaling_law, (N2, D2), L2, mask2)
    assert out2["max_abs_rel_error"] < 1e-3
    # a biased law extrapolates badly: report the error, do not hide it
    Lb = L * (X / 16) ** 0.05
    outb = scaling.extrapolation_error(
        functools.partial(scaling.fit_power_law, fit_offset=True), (X,), Lb, mask
    )
    assert outb["mean_abs_rel_error"] > 1e-3


@pytest.mark.parametrize(
    "x, L, match",
    [
        (X, -law_1d(X, TRUE_1D), "positive"),
        (X, np.r_[law_1d(X, TRUE_1D)[:-1], np.nan], "finite"),
        (-X, law_1d(X, TRUE_1D), "positive"),
        (X[:3], law_1d(X[:3], TRUE_1D), "at least"),
        (X, law_1d(X, TRUE_1D)[:-1], "shape"),
        (np.r_[X[:2], X[:2], X[:2]], law_1d(np.r_[X[:2], X[:2], X[:2]], TRUE_1D), "distinct"),
        (X, law_1d(X, TRUE_1D)[None], "1-D"),
    ],
)
def test_bad_inputs_raise(x, L, match):
    with pytest.raises(ValueError, match=match):
        scaling.fit_power_law(x, L)


def test_bad_options_raise():
    L = law_1d(X, TRUE_1D)
    with pytest.raises(ValueError, match="delta"):
        scaling.fit_power_law(X, L, delta=0.0)
    with pytest.raises(ValueError, match="bounds"):
        scaling.fit_power_law(X, L, bounds=(1.0, 0.5))
    with pytest.raises(ValueError, match="S >= 2"):
        scaling.bootstrap_seeds(lambda L: scaling.fit_power_law(X, L), L[None])
    with pytest.raises(ValueError, match="level"):
        scaling.bootstrap_seeds(lambda L: scaling.fit_power_law(X, L), np.stack([L, L]), level=1.0)
    with pytest.raises(ValueError, match="hold out"):
        scaling.holdout_mask(X[:2], n_holdout=2)
    with pytest.raises(ValueError, match="mask"):
        scaling.extrapolation_error(scaling.fit_power_law, (X,), L, np.zeros(X.size, bool))
    with pytest.raises(ValueError, match="needs 1 size"):
        scaling.predict(scaling.fit_power_law(X, L), X, X)
