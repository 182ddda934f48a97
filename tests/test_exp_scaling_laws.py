"""The scaling-laws experiment: exact sweeps against closed forms, config, the tiny run's schema."""

from __future__ import annotations

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dyntheory.cli import app as cli
from dyntheory.engine.config import ConfigError, apply_overrides
from experiments.scaling_laws import DESCRIPTION, PRESETS, Config, classify, teacher

pytestmark = pytest.mark.one_device  # their runs on one device (tests/conftest.py)

TS = types.SimpleNamespace(
    M=64,
    a=1.5,
    b=2.0,
    D_time=32,
    lr=1.0,
    ridge_min=-9.0,
    ridge_max=1.0,
    n_ridges=41,
    fit_lo=2,
    fit_hi_frac=0.25,
)


def test_teacher_target_power():
    with jax.enable_x64(True):
        lam, w = teacher.teacher(jax.random.key(0), 50, 1.5, 2.0)
        k = np.arange(1, 51)
        np.testing.assert_allclose(lam * w * w, k**-2.0, rtol=1e-12)


def test_sweeps_match_closed_forms():
    """Data sweep at D ≥ M is exact recovery; the model sweep at N = M too; GD → ridgeless."""
    with jax.enable_x64(True):
        key = jax.random.key(1)
        lam, w = teacher.teacher(jax.random.split(key)[0], TS.M, TS.a, TS.b)
        total = float(jnp.sum(lam * w * w))
        model = np.asarray(teacher.model_sweep(key, TS, [1, 8, 64]))
        assert model[-1] == pytest.approx(0.0, abs=1e-10 * total)  # N = M: full rank
        assert 0 < model[1] < model[0] < total
        data = np.asarray(teacher.data_sweep(key, TS, [4, 16, 32]))
        assert np.all(np.diff(data) < 0) and data[0] < total
        # GD from 0 decreases the risk and converges to the ridgeless (min-norm) solution
        t = np.asarray(teacher.time_sweep(key, TS, [0, 1, 10, 10**7]))
        assert t[0] == pytest.approx(total)
        assert t[1] < t[0]
        ridgeless = float(teacher.data_sweep(key, TS, [32])[0])
        assert t[-1] == pytest.approx(ridgeless, rel=1e-6)
        joint = np.asarray(teacher.joint_sweep(key, TS, [8, 64], [16, 32]))
        assert joint.shape == (2, 2) and np.all(joint < total) and np.all(joint > 0)
        assert joint[1, 1] < joint[0, 0]


def test_joint_padding_is_exact():
    """Zero-padded rows/columns of the joint sweep give the unpadded ridge risks."""
    with jax.enable_x64(True):
        key = jax.random.key(2)
        big = np.asarray(teacher.joint_sweep(key, TS, [4, 8], [8, 16]))
        # the (8, 16) corner uses no padding at all; padding only changes the smaller points
        again = np.asarray(teacher.joint_sweep(key, TS, [8], [16]))
        assert big[1, 1] == pytest.approx(float(again[0, 0]), rel=1e-10)


def test_gram_exponents_of_a_power_law():
    k = np.arange(1, 201, dtype=float)
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((200, 200)))
    gram = (q * k**-1.5) @ q.T
    y = q @ (k**-1.0)  # label power (u_kᵀy)² = k^-2: tail ∝ k^-1
    out = teacher.gram_exponents(gram, y, 2, 0.25)
    assert out["eigenvalue_exponent"] == pytest.approx(1.5, abs=1e-6)
    assert out["predicted_data_exponent"] == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize(
    "override, match",
    [
        ("ts.b=0.5", "1 < b"),
        ("ts.M=100", "ts.M"),
        ("ts.data_sizes=8,4,16,32", "increasing"),
        ("cls.widths=4,8", "cls.widths"),
        ("n_boot=1", "n_boot"),
        ("ts.lr=2.5", "lr"),
    ],
)
def test_bad_values_raise(override, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(Config(), [override])


def test_presets_and_docstring():
    assert set(PRESETS) == {"tiny", "quick", "paper"}
    assert "dyntheory run scaling_laws --preset quick" in Config.__doc__
    assert DESCRIPTION.startswith("Scaling laws")
    theory = Config().ts.theory
    assert theory["data_exponent"] == 1.0 and theory["time_exponent"] == pytest.approx(2 / 3)


def _check_fit(block, names=("E", "A", "alpha")):
    assert set(block["fit"]["params"]) == set(names)
    for name in names:
        lo, hi = block["fit"]["ci"][name]
        assert lo <= hi


def _check_teacher(ts):
    for name in ("data", "model", "time"):
        _check_fit(ts[name])
        assert {"theory_exponent", "exponent_error", "within_tolerance"} <= set(ts[name])
        ext = ts[name]["extrapolation"]
        assert ext["mean_abs_rel_error"] >= 0 and len(ext["heldout"]) == 1
    _check_fit(ts["joint"], ("E", "A", "alpha", "B", "beta"))
    assert np.shape(ts["joint"]["loss_mean"]) == (4, 4)
    assert ts["joint"]["extrapolation"]["heldout"]
    assert {"eigenvalue_exponent", "predicted_data_exponent"} <= set(ts["spectrum"])


def test_tiny_teacher_run_writes_results(tiny_run):
    """The tiny preset's exact part (the engine runs of the classification part: next tests)."""
    out = tiny_run("scaling_laws")  # with run_classify=false
    r = json.loads((out / "results.json").read_text())
    assert r["experiment"] == "scaling_laws" and "classification" not in r
    _check_teacher(r["teacher_student"])
    with np.load(out / "teacher_losses.npz") as z:
        assert z["data"].shape == (2, 5) and z["joint"].shape == (2, 4, 4)
    assert r["summary"]["teacher/data_exponent"]["theory"] == 1.0
    assert r["wall_s"] > 0 and r["cpu_s"] > 0


def test_classify_run_one(tmp_path):
    cfg = PRESETS["tiny"].config
    r = classify.run_one(cfg, 4, 16, None)
    assert len(r["best_test_loss"]) == cfg.train.seeds and r["curve_step"][0] == 0
    assert r["best_test_loss"][0] <= r["final_test_loss"][0]
    assert np.isfinite(r["ntk_exponent_init"]) and np.isfinite(r["ntk_exponent_final"])
    train, test = classify.make_data(cfg, 16)
    assert train["x"].shape == (16, cfg.cls.d_in) and test["y"].shape == (cfg.cls.n_test,)
    assert set(np.unique(test["y"])) <= set(range(cfg.cls.classes))
    spec = classify.spectral_prediction(cfg)
    assert spec["eigenvalue_exponent"] > 0


@pytest.mark.slow
def test_tiny_run_writes_results(tmp_path):
    out = tmp_path / "run"
    _, results = cli.run_experiment("scaling_laws", "tiny", out=out)
    r = json.loads((out / "results.json").read_text())
    _check_teacher(r["teacher_student"])
    cl = r["classification"]
    assert np.shape(cl["loss"]) == (3, 3)
    assert np.shape(cl["ntk_exponent_init"]) == (3, 3)
    _check_fit(cl["joint"], ("E", "A", "alpha", "B", "beta"))
    assert cl["data"]["fit"] is None  # three sizes are too few for a one-variable law
    assert cl["runs"]["w4_D16"]["curve_step"][0] == 0
    assert results["summary"] == r["summary"]
