"""The PINN experiment: residual and boundary terms against closed forms, config, a tiny run."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dyntheory.cli import app as cli
from dyntheory.engine.config import ConfigError, apply_overrides
from experiments.pinn import PRESETS, Config, problem
from experiments.pinn.run import first_crossing, make_loss, make_model

pytestmark = pytest.mark.one_device  # their runs on one device (tests/conftest.py)

BETA = 5.0


def _exact(z):
    return problem.exact_solution(z, BETA)


# --------------------------------------------------------------------------- residual, BC, IC


def test_exact_solution_has_zero_residual():
    z = problem.sample_collocation(jax.random.key(0), 512, dtype=jnp.float64)
    r = problem.pde_residual(_exact, z, BETA)
    assert r.shape == (512,)
    np.testing.assert_allclose(r, 0.0, atol=1e-12)
    # ... and the initial condition is sin x, the boundary gap is zero.
    x = jnp.linspace(0.0, 2 * np.pi, 7, dtype=jnp.float64)
    np.testing.assert_allclose(_exact(jnp.stack([x, 0 * x], 1)), np.sin(x), atol=1e-15)
    t = jnp.linspace(0.0, 1.0, 9, dtype=jnp.float64)
    np.testing.assert_allclose(problem.periodic_bc_gap(_exact, t), 0.0, atol=1e-12)


def test_residual_matches_hand_derivatives():
    """u = x² t + cos(3t) x: u_t + β u_x = x² − 3 sin(3t) x + β (2 x t + cos 3t)."""
    u = lambda z: z[:, 0] ** 2 * z[:, 1] + jnp.cos(3 * z[:, 1]) * z[:, 0]
    z = problem.sample_collocation(jax.random.key(1), 64, dtype=jnp.float64)
    x, t = z[:, 0], z[:, 1]
    want = x**2 - 3 * jnp.sin(3 * t) * x + BETA * (2 * x * t + jnp.cos(3 * t))
    np.testing.assert_allclose(problem.pde_residual(u, z, BETA), want, rtol=1e-12)
    # A wrong β leaves a residual (u_x ≠ 0 here), so the test above is not vacuous.
    assert np.abs(problem.pde_residual(_exact, z, 4.0)).max() > 0.5


def test_bc_gap_zero_for_periodic_nonzero_otherwise():
    t = jnp.linspace(0.0, 1.0, 11, dtype=jnp.float64)
    periodic = lambda z: jnp.sin(2 * z[:, 0]) * jnp.exp(z[:, 1]) + jnp.cos(z[:, 0] - z[:, 1])
    np.testing.assert_allclose(problem.periodic_bc_gap(periodic, t), 0.0, atol=1e-12)
    linear = lambda z: z[:, 0] + z[:, 1]
    np.testing.assert_allclose(problem.periodic_bc_gap(linear, t), -2 * np.pi, rtol=1e-12)
    # The periodic embedding makes any function of it periodic in x.
    embedded = lambda z: jnp.sum(problem.periodic_embedding(z) ** 3, axis=1) + z[:, 0] * 0
    np.testing.assert_allclose(problem.periodic_bc_gap(embedded, t), 0.0, atol=1e-12)


def test_loss_of_exact_solution_is_the_noise_energy():
    ic = problem.make_ic_data(jax.random.key(3), 128, 0.1, dtype=jnp.float64)
    z = problem.sample_collocation(jax.random.key(4), 256, dtype=jnp.float64)
    t = problem.sample_boundary_times(jax.random.key(5), 32, dtype=jnp.float64)
    loss, aux = problem.pinn_loss(_exact, z, t, ic, BETA, w_ic=2.0)
    np.testing.assert_allclose(aux["loss/pde"], 0.0, atol=1e-20)
    np.testing.assert_allclose(aux["loss/bc"], 0.0, atol=1e-20)
    np.testing.assert_allclose(aux["loss/ic"], np.mean(np.asarray(ic.noise) ** 2), rtol=1e-10)
    np.testing.assert_allclose(loss, 2.0 * aux["loss/ic"], rtol=1e-12)
    assert float(problem.relative_l2(_exact, problem.eval_grid(32, 5), BETA)) < 1e-6


def test_ic_noise_is_deterministic_and_has_the_right_scale():
    a = problem.make_ic_data(jax.random.key(7), 4096, 0.3)
    b = problem.make_ic_data(jax.random.key(7), 4096, 0.3)
    c = problem.make_ic_data(jax.random.key(8), 4096, 0.3)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.allclose(a.noise, c.noise)
    np.testing.assert_allclose(a.y - np.sin(a.x), a.noise, atol=1e-6)
    assert abs(float(np.std(a.noise)) - 0.3) < 0.02
    assert float(a.x.min()) == 0.0 and float(a.x.max()) < 2 * np.pi  # [0, 2π)
    assert np.all(problem.make_ic_data(jax.random.key(7), 16, 0.0).noise == 0)


def test_collocation_and_grid_cover_the_domain():
    z = problem.sample_collocation(jax.random.key(0), 2000, t_max=0.5)
    assert z.shape == (2000, 2) and z.dtype == jnp.float32
    assert 0 <= z[:, 0].min() and z[:, 0].max() < 2 * np.pi
    assert 0 <= z[:, 1].min() and z[:, 1].max() <= 0.5
    g = problem.eval_grid(8, 3, t_max=2.0)
    assert g.shape == (24, 2)
    np.testing.assert_allclose(np.unique(g[:, 1]), [0.0, 1.0, 2.0])


def test_model_residual_by_jvp_matches_autodiff_gradient():
    """The experiment's network: the jvp residual equals ∇u · (β, 1) from jax.grad per point."""
    cfg = dataclasses.replace(PRESETS["tiny"].config, embedding="none")
    apply_fn, init = make_model(cfg)
    params = init(jax.random.key(0))
    u = lambda z: apply_fn(params, z)
    z = problem.sample_collocation(jax.random.key(1), 16)
    grad = jax.vmap(jax.grad(lambda p: apply_fn(params, p[None])[0, 0]))(z)
    want = BETA * grad[:, 0] + grad[:, 1]
    np.testing.assert_allclose(problem.pde_residual(u, z, BETA), want, rtol=1e-4, atol=1e-6)


def test_periodic_embedding_model_has_zero_bc_and_eval_metrics():
    cfg = dataclasses.replace(PRESETS["tiny"].config, embedding="periodic")
    apply_fn, init = make_model(cfg)
    params = init(jax.random.key(0))
    t = problem.sample_boundary_times(jax.random.key(2), 8)
    gap = problem.periodic_bc_gap(lambda z: apply_fn(params, z), t)
    np.testing.assert_allclose(gap, 0.0, atol=1e-5)
    ic = problem.make_ic_data(jax.random.key(0), 32, 0.1)
    grid = problem.eval_grid(16, 4)
    loss_fn = make_loss(cfg, ic)
    _, aux = loss_fn(lambda p, z: _exact(z)[:, None], None, {"z": grid, "u": _exact(grid)}, None)
    np.testing.assert_allclose(aux["rel_l2"], 0.0, atol=1e-6)
    np.testing.assert_allclose(aux["ic_noise_fit"], 0.0, atol=1e-5)  # sin x exactly: none fit


def test_first_crossing():
    steps = np.array([0, 10, 20, 30])
    assert first_crossing(steps, np.array([1.0, np.nan, 0.4, 0.3]), 0.4) == 20
    assert first_crossing(steps, np.array([1.0, 0.9, 0.5, 0.41]), 0.4) is None


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "override, match",
    [
        ("beta=0", "beta must be > 0"),
        ("sigma=-0.1", "sigma must be a finite number >= 0"),
        ("n_ic=0", "n_ic must be > 0"),
        ("n_bc=4096", "n_bc .* must be <= batch_size"),
        ("batch_size=none", "number of collocation points"),
        ("optimizers=sgd", "subset of adamw, prm"),
        ("optimizers=adamw,adamw", "repeats"),
        ("lr=", "a grid needs distinct values"),
        ("lr=0.001,-1", "lr must be > 0"),
        ("b2=1.0", r"b2 must lie in \[0, 1\)"),
        ("embedding=fourier", "not one of 'none', 'periodic'"),
        ("resample=false", "fixed collocation set .* explicit prm_alpha"),
        ("target=0", "target must be > 0"),
    ],
)
def test_bad_set_values_raise_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(PRESETS["quick"].config, [override])


def test_fixed_collocation_with_explicit_alpha_is_allowed():
    cfg = apply_overrides(PRESETS["quick"].config, ["prm_alpha=1", "resample=false"])
    assert cfg.alpha == 1.0 and not cfg.resample
    assert PRESETS["quick"].config.alpha == 1.0


def test_presets_and_docstring():
    quick = PRESETS["quick"].config
    assert quick.beta == 5.0 and quick.target == 0.40 and quick.optimizers == ("adamw", "prm")
    assert len(quick.lrs) >= 3 and quick.resample
    assert "dyntheory run pinn --preset quick" in Config.__doc__
    assert set(PRESETS) == {"tiny", "quick", "paper"}


def test_cli_rejects_bad_values_before_compute(tmp_path, capsys):
    out = tmp_path / "run"
    status = cli.main(["run", "pinn", "--preset", "tiny", "--set", "beta=-1", "--out", str(out)])
    assert status == 2
    assert "beta must be > 0" in capsys.readouterr().err
    assert not (out / "config.json").exists()


# --------------------------------------------------------------------------- end to end


def test_tiny_run_writes_results_that_the_figure_reads(tiny_run, tmp_path):
    out = tiny_run("pinn")
    cfg = PRESETS["tiny"].config
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["experiment"] == "pinn" and on_disk["target"] == cfg.target
    assert on_disk["arms"].keys() == set(cfg.optimizers)
    for opt, by_lr in on_disk["arms"].items():
        assert len(by_lr) == len(cfg.lrs)
        for arm in by_lr.values():
            assert len(arm["iters_to_target"]) == cfg.train.seeds
            assert len(arm["final_rel_l2"]) == cfg.train.seeds
            assert all(np.isfinite(arm["final_rel_l2"]))
            assert arm["wall_s"] > 0
            if opt == "prm":
                assert all(0.0 <= q <= 1.0 for q in arm["final_gate_mean"])
        assert on_disk["best"][opt]["lr"] in cfg.lrs
    for key in ("ratio", "ratio_at_adamw_lr", "paper_ratio", "wall_s", "curves"):
        assert key in on_disk
    n = len(on_disk["curves"]["step"])
    assert n >= 2 and all(len(v) == n for v in on_disk["curves"].values())
    from paper_figures import pinn as figure  # the figure reads the run directory only

    png, pdf = figure.draw(out, tmp_path)
    assert png.stat().st_size > 0 and pdf.exists()
    assert (out / "adamw_lr1e-03" / "metrics.jsonl").exists()
