"""The dynamics experiment: config checks, its two probes' closed forms, a tiny end-to-end run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dyntheory.drift import coherent, curves, rms_over_seeds
from dyntheory.engine import rundir
from dyntheory.engine.config import ConfigError, apply_overrides
from dyntheory.losses import loss_fn
from dyntheory.models import MLP, functional
from dyntheory.probes import DriftDiffusion, ProbeContext
from dyntheory.probes.dissipation import PARTS, SUBS
from experiments.dynamics import PRESETS, Config
from experiments.dynamics.run import fit_window

pytestmark = pytest.mark.one_device  # their runs on one device (tests/conftest.py)


@pytest.mark.parametrize(
    "override, match",
    [
        ("sgd_batch=1", "sgd_batch"),
        ("directions=100", "directions"),
        ("probe_size=8", "probe_size"),
        ("split_threshold=1", "split_threshold"),
        ("sgd_noise=-1", "noise"),
        ("sgd_lr=0", "lr"),
    ],
)
def test_bad_values_raise_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(Config(), [override])


def test_presets_are_valid():
    assert {"tiny", "quick", "paper"} <= set(PRESETS)
    for p in PRESETS.values():
        assert p.config.train.probe_size in (None, p.config.n_train) and p.config.sgd_batch % 8 == 0


# ----------------------------------------------------------------------------- the drift probe


def _ctx(apply_fn, x, y, batch):
    return ProbeContext(
        apply_fn,
        loss_fn("squared"),
        optax.sgd(0.1),
        {"x": x, "y": y},
        None,
        lambda: batch,
        jax.random.key(0),
    )


def _model(key=0):
    model = MLP(3, (5,), 1, activation="tanh", rngs=nnx.Rngs(jax.random.key(key)))
    return functional(model)


def test_drift_basis_is_orthonormal_and_spans_the_top_ntk_modes():
    apply_fn, params = _model()
    x = jax.random.normal(jax.random.key(1), (6, 3), jnp.float32)
    probe = DriftDiffusion(directions=2)
    st = probe.init(_ctx(apply_fn, x, None, None), params, None)
    jac = jax.jacrev(lambda p: apply_fn(p, x).reshape(-1))(params)
    jmat = jnp.concatenate([leaf.reshape(6, -1) for leaf in jax.tree.leaves(jac)], axis=1)
    jmat = jmat.astype(jnp.float64)
    lam = jnp.linalg.eigvalsh(jmat @ jmat.T)[::-1]
    for which, expected in (("top", lam[:2]), ("bottom", lam[::-1][:2])):
        v = st[which]
        np.testing.assert_allclose(v @ v.T, np.eye(2), atol=1e-5)
        # J Vᵀ = U diag(√λ): column norms are √λ of the chosen NTK eigenvalues
        np.testing.assert_allclose(
            jnp.linalg.norm(jmat @ v.T, axis=0), jnp.sqrt(expected), rtol=1e-4
        )
        np.testing.assert_allclose(st[f"lam_{which}"], expected, rtol=1e-4)


def test_identical_examples_give_pure_drift():
    """A minibatch of b copies of one example has no fluctuation: noise 0, drift = η V ∇L."""
    apply_fn, params = _model()
    x = jax.random.normal(jax.random.key(2), (6, 3), jnp.float32)
    batch = {"x": jnp.repeat(x[:1], 4, axis=0), "y": jnp.ones((4, 1), jnp.float32)}
    ctx = _ctx(apply_fn, x, None, batch)
    probe = DriftDiffusion(directions=3, lr=0.2)
    st = probe.init(ctx, params, None)
    for k in range(2):
        st, scalars, _ = probe(ctx, st, params, None, jnp.int32(k))
    grad = jax.grad(lambda p: loss_fn("squared")(apply_fn, p, batch, None)[0])(params)
    flat = jnp.concatenate([g.reshape(-1) for g in jax.tree.leaves(grad)]).astype(jnp.float64)
    expected = 2 * 0.2 * jnp.linalg.norm(st["top"] @ flat)
    np.testing.assert_allclose(scalars["drift_top"], expected, rtol=1e-5)
    assert float(scalars["noise_top"]) == 0.0 and int(scalars["count"]) == 2


# ----------------------------------------------------------------------------- summaries


def test_coherent_part_removes_the_noise_mean_square():
    a, b = np.array([3.0, 0.5]), np.array([4.0, 1.0])
    np.testing.assert_allclose(coherent(np.hypot(a, b), b), a)
    assert np.isnan(coherent(np.array([1.0]), np.array([2.0])))[0]
    np.testing.assert_allclose(rms_over_seeds(np.array([[3.0, 4.0]])), [np.sqrt(12.5)])


def test_fit_window_ends_where_a_saturating_drift_reaches_a_quarter():
    tau, t = 50.0, np.arange(1, 2001, dtype=float)
    d = 1 - np.exp(-t / tau)
    lo, hi = fit_window(t, d)
    # first t with 1 − e^{−t/τ} ≥ ¼ (1 − e^{−T/τ}):  t ≥ −τ log(1 − ¼(1 − e^{−T/τ}))
    expected = np.ceil(-tau * np.log(1 - 0.25 * (1 - np.exp(-t[-1] / tau))))
    assert lo == 1 and hi == expected


# ----------------------------------------------------------------------------- tiny run


@pytest.fixture(scope="module")
def dynamics_tiny(tiny_run):
    """The session's tiny run (shared with the figure tests) and its results.json."""
    path = tiny_run("dynamics")
    return path, rundir.read_json(path / rundir.RESULTS)


def test_tiny_run_results_and_arrays(dynamics_tiny):
    path, results = dynamics_tiny
    cfg = PRESETS["tiny"].config
    assert rundir.read_json(path / rundir.RESULTS)["experiment"] == "dynamics"
    gd, sgd = results["gd"], results["sgd"]
    for key in ("coupling_corr", "coupling_rel_err", "ntk_drift_peak", "channel_dim"):
        assert np.isfinite(gd[key])
    assert set(sgd["slopes"]) == {"drift_top", "noise_top", "drift_bottom", "noise_bottom"}
    arrays = rundir.RunDir(path / "gd", create=False).read_arrays()
    t = len(arrays["dissipation/step"])
    assert arrays["dissipation/w_eigenvalues"].shape == (t, cfg.n_train)
    assert arrays["ntk/eigenvalues"].shape == (t, cfg.n_train)
    assert arrays["dissipation/predicted_displacement"].shape == (t, cfg.n_test)


def test_tiny_run_four_cells_add_up_and_coupling_matches(dynamics_tiny):
    path, _ = dynamics_tiny
    m = rundir.load_metrics(path / "gd")
    pre = "probe/dissipation/"
    rows = np.isfinite(m[f"{pre}train_clean_channel"])
    cells = {f"{p}_{s}": m[f"{pre}train_{p}_{s}"][rows] for p in PARTS for s in SUBS}
    noise = cells["noise_channel"] + cells["noise_reservoir"]
    clean = cells["clean_channel"] + cells["clean_reservoir"]
    # each part's energy is split, not changed: ‖Π_c g‖² + ‖Π_r g‖² = ‖g‖² at every probe step
    np.testing.assert_allclose(
        noise, m[f"{pre}noise_channel"][rows] + m[f"{pre}noise_reservoir"][rows], rtol=1e-9
    )
    np.testing.assert_allclose(clean, np.full_like(clean, clean[0]), rtol=1e-9)
    np.testing.assert_allclose(noise, np.full_like(noise, noise[0]), rtol=1e-9)
    # the logged correlation is that of the two displacement arrays
    arrays = rundir.RunDir(path / "gd", create=False).read_arrays()
    pred = arrays["dissipation/predicted_displacement"][-1]
    actual = arrays["dissipation/actual_displacement"][-1]
    np.testing.assert_allclose(
        np.corrcoef(pred, actual)[0, 1], m[f"{pre}coupling_corr"][-1], rtol=1e-9
    )


def test_tiny_run_drift_is_logged_every_step(dynamics_tiny):
    path, _ = dynamics_tiny
    m = rundir.load_metrics(path / "sgd")
    count = m["probe/drift/count"][:, 0]
    rows = np.isfinite(count)
    np.testing.assert_array_equal(count[rows], m["step"][rows] + 1)
    c = curves(m)
    assert c["count"][-1] == PRESETS["tiny"].config.sgd_steps + 1
    assert np.all(np.isfinite(c["noise_top"])) and np.all(c["noise_top"] >= 0)
