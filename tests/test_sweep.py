"""The optimizer as data and the sweep axis: every cell of a grid equals a separate run of it."""

from __future__ import annotations

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dyntheory import probes
from dyntheory.engine import NonFiniteError, TrainConfig, apply_overrides, load_metrics, sweep
from dyntheory.engine.config import from_dict, to_dict
from dyntheory.engine.loop import member_name
from dyntheory.optim import prm
from dyntheory.optim.config import OptimizerConfig
from dyntheory.optim.state import hyperparams

N, D = 48, 4


def _task():
    x = jax.random.normal(jax.random.key(1), (N, D), jnp.float32)
    y = jnp.tanh(x @ jnp.arange(1.0, D + 1, dtype=jnp.float32))[:, None]

    def apply_fn(params, x):
        return jnp.tanh(x @ params["w1"]) @ params["w2"]

    def init(key):
        k1, k2 = jax.random.split(key)
        return {
            "w1": jax.random.normal(k1, (D, 8), jnp.float32) / 2,
            "w2": jax.random.normal(k2, (8, 1), jnp.float32) / 3,
        }

    return dict(apply_fn=apply_fn, init_params=init, data={"x": x, "y": y}, loss="squared")


def test_config_builds_the_optimizers_it_names():
    """Injected numbers give the same steps as the plain factories (float32 round-off)."""
    w = {"a": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32)}
    g = lambda t: jax.tree.map(lambda x: jnp.sin(3 * x + t), w)

    def run(opt):
        st, p = opt.init(w), w
        for t in range(10):
            u, st = opt.update(g(t), st, p)
            p = optax.apply_updates(p, u)
        return p["a"], st

    cases = [
        (OptimizerConfig(lr=1e-2, weight_decay=0.1), optax.adamw(1e-2, weight_decay=0.1)),
        (
            OptimizerConfig(family="prm", lr=1e-2, weight_decay=0.1, prm_alpha=0.3),
            prm(1e-2, weight_decay=0.1, alpha=0.3, gate_stats=True),
        ),
    ]
    for cfg, ref in cases:
        a, st = run(cfg.build())
        np.testing.assert_allclose(a, run(ref)[0], atol=1e-6)
        assert set(hyperparams(st)) == set(cfg.numbers)
        p = cfg.preconditioner()(st)
        assert p["a"].shape == (6,) and bool(jnp.all(p["a"] > 0))


def test_grid_config_parses_validates_and_expands():
    cfg = OptimizerConfig(family="prm", lr=(1e-3, 3e-3), prm_alpha=(0.1, 1.0))
    assert cfg.grid_keys == ("lr", "prm_alpha")
    assert len(cfg.cells()) == 4 and len(cfg.cells("adamw")) == 2  # AdamW reads no α
    names = [a.name for a in sweep.arms(cfg, ("adamw", "prm"))]
    assert names[:2] == ["adamw_lr0.001", "adamw_lr0.003"] and "prm_lr0.003_prm_alpha1" in names
    assert from_dict(OptimizerConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg
    for bad, msg in (((1e-3, 1e-3), "distinct"), ((), "distinct"), (-1.0, "> 0")):
        with pytest.raises(ValueError, match=msg):
            OptimizerConfig(lr=bad)
    with pytest.raises(ValueError, match="hold a grid"):
        cfg.cells()[0].resolve(lr=(1e-3, 2e-3)).hyperparams()


def test_every_cell_equals_a_separate_run(tmp_path):
    """lr × α for PRM (2 seeds, minibatches, a probe reading the state): one program equals
    four separate programs, metrics and sub-runs alike."""
    task = _task()
    cfg = TrainConfig(steps=30, batch_size=16, seeds=2, fuse=10, log_every=5, eval_every=0)
    grid = OptimizerConfig(family="prm", lr=(1e-2, 3e-2), prm_alpha=(0.2, 1.0))
    todo = sweep.arms(grid, ("prm",))
    gate = lambda optim: [probes.GateStats(probes.Schedule.every(10))]
    one = sweep.run_arms(cfg, todo, out=tmp_path / "one", probes=gate, **task)
    sep = sweep.run_arms(cfg, todo, out=tmp_path / "sep", probes=gate, sweep=False, **task)
    assert {r.arms_in_program for r in one.values()} == {4}
    for arm in todo:
        a, b = one[arm.name].result, sep[arm.name].result
        for k in ("train/loss", "train/grad_norm", "probe/gate/gate_mean"):
            np.testing.assert_allclose(a.history[k], b.history[k], atol=1e-6, rtol=1e-6)
        np.testing.assert_allclose(a.final["train/loss"], b.final["train/loss"], atol=1e-6)
        jax.tree.map(
            lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), a.state.params, b.state.params
        )
        on_disk = load_metrics(tmp_path / "one" / arm.name)
        np.testing.assert_allclose(on_disk["train/loss"], b.history["train/loss"], atol=1e-6)
        assert on_disk["train/loss"].shape == b.history["train/loss"].shape  # (T, 2 seeds)


def test_a_nan_in_a_grid_names_the_cell_and_the_seed():
    """A NaN in one member of cells × seeds names that cell's settings and its seed."""
    task = _task()
    cfg = TrainConfig(steps=10, seeds=2, fuse=5, log_every=5, eval_every=0)
    grid = OptimizerConfig(family="sgd", lr=(1e-2, 1e30), b1=0.0)  # the second cell diverges
    with pytest.raises(NonFiniteError, match=r"at step \d+ \(cell lr=1e\+30, seed 0\)"):
        sweep.run_arms(cfg, sweep.arms(grid, ("sgd",)), **task)

    def trainer(seeds, grid=None):
        return types.SimpleNamespace(cfg=TrainConfig(seeds=seeds), grid=grid)

    cells = [{"lr": 0.01, "prm_alpha": a, "b1": 0.9} for a in (0.1, 0.4)]
    assert member_name(trainer(2, cells), 3) == "cell prm_alpha=0.4, seed 1"
    cells = [{"lr": lr, "prm_alpha": a} for lr in (0.01, 0.1) for a in (0.1, 0.4)]
    assert member_name(trainer(1, cells), 1) == "cell lr=0.01, prm_alpha=0.4, seed 0"
    assert member_name(trainer(3), 2) == "seed 2"


def test_one_seed_cells_and_overrides_with_comma_lists():
    """``--set lr=a,b`` is a grid; one seed per cell drops the seed axis as a plain run does."""

    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Exp:
        optim: OptimizerConfig = OptimizerConfig()

    cfg = apply_overrides(Exp(), ["lr=1e-2,2e-2", "weight_decay=0.1"])
    assert cfg.optim.lr == (1e-2, 2e-2) and cfg.optim.weight_decay == 0.1
    task = _task()
    train = TrainConfig(steps=20, fuse=10, log_every=5, eval_every=0)
    todo = sweep.arms(cfg.optim, ("adamw",))
    one = sweep.run_arms(train, todo, **task)
    sep = sweep.run_arms(train, todo, sweep=False, **task)
    for arm in todo:
        a, b = one[arm.name].result.history, sep[arm.name].result.history
        assert a["train/loss"].shape == b["train/loss"].shape == (5,)
        np.testing.assert_allclose(a["train/loss"], b["train/loss"], atol=1e-6, rtol=1e-6)


def test_experiment_grids_from_the_command_line():
    """``--grid prm_alpha=...`` on grokking: one PRM arm per α (AdamW, which reads no α, once);
    the short names reach the ``optim`` block."""
    import argparse

    from dyntheory.cli.experiments import add_run
    from experiments.grokking.config import PRESETS
    from experiments.grokking.run import arms

    p = argparse.ArgumentParser()
    add_run(p)
    args = p.parse_args(["grokking", "--grid", "prm_alpha=0.1,1", "--set", "b1=0.8"])
    cfg = apply_overrides(PRESETS["tiny"].config, args.overrides)
    assert cfg.optim.prm_alpha == (0.1, 1.0) and cfg.optim.b1 == 0.8
    names = [a.name for a in arms(cfg, n_train=55)]
    assert names == ["adamw", "prm_prm_alpha0.1", "prm_prm_alpha1"]


def test_numbers_are_program_inputs_and_the_probes_read_them_from_the_state():
    """Another lr is another input, not another program; the probes' step reads each member's."""
    from dyntheory.optim.state import set_hyperparams

    cfg = OptimizerConfig(lr=1e-2, weight_decay=0.1)
    w = {"a": jnp.ones(4, jnp.float32)}
    opt = cfg.build()

    @jax.jit
    def step(st):
        u, st = opt.update(jax.tree.map(jnp.ones_like, w), st, w)
        return u, st

    st = opt.init(w)
    u1, _ = step(st)
    u2, st2 = step(set_hyperparams(st, {"lr": 2e-2}))
    assert step._cache_size() == 1
    np.testing.assert_allclose(u2["a"], 2 * u1["a"], rtol=1e-6)
    p1, p2 = cfg.preconditioner()(step(st)[1]), cfg.preconditioner()(st2)
    np.testing.assert_allclose(p2["a"], 2 * p1["a"], rtol=1e-6)
    model = cfg.step_model()
    assert model["momentum"] == 0.9 and model["decay"] == pytest.approx(1e-3)
    d = probes.Dissipation(probes.Schedule.every(5), **model)
    assert d.preconditioner == OptimizerConfig(lr=3.0).preconditioner()  # equal: one program
    with pytest.raises(ValueError, match="b1=0"):
        OptimizerConfig(family="sgd").step_model()
    with pytest.raises(ValueError, match="no hyperparameter"):
        set_hyperparams(st, {"prm_alpha": 1.0})
