"""The engine: exact resume, NaN stops, vmapped seeds, batching regimes, bad inputs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dyntheory import probes
from dyntheory.engine import NonFiniteError, Trainer, batching, integrity, rundir
from dyntheory.engine.checkpoint import abstract_like
from dyntheory.engine.config import TrainConfig
from dyntheory.engine.initializer import initializer
from dyntheory.engine.state import copy_tree, when
from dyntheory.models import MLP, functional
from tests.helpers import assert_tree_all_finite, assert_trees_all_close, assert_trees_all_equal

APPLY, _ = functional(MLP(3, (8,), 1, activation="tanh", rngs=nnx.Rngs(0)))


def init(key):
    return functional(MLP(3, (8,), 1, activation="tanh", rngs=nnx.Rngs(key)))[1]


def data(n=32, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 3).astype(np.float32)
    y_clean = np.sin(x.sum(1, keepdims=True)).astype(np.float32)
    return {"x": x, "y": y_clean + 0.1 * rng.randn(n, 1).astype(np.float32), "y_clean": y_clean}


def nan_after(step, lr=0.05):
    """SGD whose learning rate turns NaN at ``step``: the update of that step poisons the params."""
    return optax.sgd(lambda t: jnp.where(t >= step, jnp.nan, lr))


@pytest.fixture(scope="module")
def resumable():
    """One device, minibatches (epoch sampling), eval, checkpoints and a stateful probe."""
    cfg = TrainConfig(
        steps=200,
        batch_size=8,
        fuse=32,
        log_every=10,
        eval_every=25,
        checkpoint_every=50,
        devices=1,
        probe_size=8,
    )
    d = data()
    return Trainer(
        cfg,
        apply_fn=APPLY,
        init_params=init,
        optimizer=nan_after(10**6),
        data=d,
        eval_sets={"test": data(16, seed=1)},
        probes=[
            probes.Dissipation(probes.Schedule.log(4), lr=0.05),
            probes.Norms(probes.Schedule.every(40)),
        ],
    )


def _strip_time(lines):
    return [{k: v for k, v in line.items() if not k.startswith("time/")} for line in lines]


def test_resume_is_bit_identical(resumable, tmp_path):
    full = resumable.run(tmp_path / "full", progress=False)
    resumable.run(tmp_path / "split", steps=100, progress=False)  # stopped at step 100
    first = rundir.RunDir(tmp_path / "split").read_metrics()
    assert first[-1]["step"] == 100 and "test/loss" in first[-1]  # the final line
    resumed = resumable.run(tmp_path / "split", steps=200, progress=False)

    a = rundir.RunDir(tmp_path / "full").read_metrics()
    b = rundir.RunDir(tmp_path / "split").read_metrics()
    assert _strip_time(a) == _strip_time(b)  # same lines, same values, no duplicates
    assert b[: len(first) - 1] == first[:-1]  # lines written before the checkpoint kept as is
    host = lambda st: jax.device_get(st._replace(key=jax.random.key_data(st.key)))
    assert_trees_all_equal(host(full.state), host(resumed.state))
    assert_trees_all_equal(full.arrays, resumed.arrays)
    assert_trees_all_equal(full.probe_states, resumed.probe_states)
    assert rundir.RunDir(tmp_path / "split").read_arrays().keys() == full.arrays.keys()

    # Line layout: every log step, eval keys on eval steps only, probe keys on probe steps.
    steps = [line["step"] for line in a]
    assert steps == sorted(set(steps)) and steps[-1] == 200
    assert set(range(0, 200, 10)) <= set(steps)
    evals = {line["step"] for line in a if "test/loss" in line}
    assert evals == set(range(0, 201, 25))
    assert {line["step"] for line in a if "probe/norms/grad/global" in line} == {
        0,
        40,
        80,
        120,
        160,
        200,
    }
    assert all(line["time/train_s"] > 0 for line in a)
    ckpt = rundir.RunDir(tmp_path / "full").checkpointer()
    assert ckpt.all_steps() == [150, 200]
    ckpt.close()
    with pytest.raises(ValueError, match="checkpoint is at step 200, beyond steps=50"):
        resumable.run(tmp_path / "full", steps=50, progress=False)


def test_nonfinite_params_stop_the_run_and_keep_a_checkpoint(resumable, tmp_path):
    tr = Trainer(
        resumable.cfg,
        apply_fn=APPLY,
        init_params=init,
        optimizer=nan_after(120),
        data=data(),
        probes=[],
    )
    with pytest.raises(
        NonFiniteError, match=r"non-finite params at step 121.*checkpoint is step 100"
    ):
        tr.run(tmp_path, progress=False)
    lines = rundir.RunDir(tmp_path).read_metrics()
    assert lines[-1]["step"] == 120 and np.isfinite(lines[-1]["train/loss"])
    ckpt = rundir.RunDir(tmp_path).checkpointer()
    assert ckpt.latest_step() == 100
    tree, meta = ckpt.restore(
        100,
        abstract_like(
            {
                "params": tr.abstract_state.params,
                "opt_state": tr.abstract_state.opt_state,
                "step": tr.abstract_state.step,
                "key": jax.random.key_data(tr.init_state().key),
                "probes": (),
            }
        ),
    )
    assert int(tree["step"]) == 100 and meta["step"] == 100
    assert_tree_all_finite(tree["params"])

    # A NaN in the data: the loss of the first step that draws it is reported.
    bad = data()
    bad["x"][5, 0] = np.nan
    tr.data = jax.device_put(bad, tr.replicated)
    with pytest.raises(NonFiniteError, match=r"non-finite train/loss at step \d+"):
        tr.run(progress=False)


def test_vmapped_seeds_equal_single_seed_runs():
    """seeds=2 trains seed+0 and seed+1 at once; each equals its own single-seed run."""

    def custom_loss(apply_fn, params, batch, key):  # the loss hook, with an aux metric
        r = apply_fn(params, batch["x"]) - batch["y"]
        return 0.5 * jnp.mean(r**2), {"max_abs_residual": jnp.max(jnp.abs(r))}

    kw = dict(
        apply_fn=APPLY,
        init_params=init,
        optimizer=optax.adam(1e-2),
        data=data(),
        loss=custom_loss,
        probes=[probes.Norms(probes.Schedule.every(30))],
    )
    cfg = TrainConfig(steps=60, batch_size=8, sampling="replacement", fuse=16, seeds=2, seed=3)
    both = Trainer(cfg, **kw).run(progress=False)
    one = Trainer(TrainConfig(**{**cfg.__dict__, "seeds": 1, "seed": 4}), **kw).run(progress=False)
    params1 = jax.tree.map(lambda x: x[1], jax.device_get(both.state.params))
    assert_trees_all_close(params1, jax.device_get(one.state.params), rtol=1e-6, atol=1e-6)
    for key in ("train/loss", "train/max_abs_residual", "probe/norms/grad/global"):
        assert both.history[key].shape[1] == 2
        np.testing.assert_allclose(both.history[key][:, 1], one.history[key], rtol=1e-5)
    assert not np.allclose(both.history["train/loss"][:, 0], both.history["train/loss"][:, 1])


def test_trainers_of_one_init_share_their_initializer():
    """Two trainers with one init_params function (a comparison's optimizers) get the same jitted
    initializer, whose params (members mapped one by one) equal each seed's init_params."""
    cfg = TrainConfig(steps=2, batch_size=8, seeds=2, seed=3)
    kw = dict(apply_fn=APPLY, init_params=init, data=data(), loss="squared")
    a = Trainer(cfg, optimizer=optax.adam(1e-2), **kw)
    b = Trainer(cfg, optimizer=optax.sgd(1e-2), **kw)
    made = lambda tr: tr._init_args()[1]
    assert initializer(init, True, a.state_shardings.params) is (
        initializer(init, True, b.state_shardings.params)
    )
    keys = jnp.stack([jax.random.key(3), jax.random.key(4)])
    vmapped = jax.jit(jax.vmap(lambda k: init(jax.random.split(k)[0])))(keys)
    assert_trees_all_equal(jax.device_get(made(a)), jax.device_get(vmapped))  # bit for bit
    assert_trees_all_equal(jax.device_get(a.init_state().params), jax.device_get(made(b)))


def test_params_as_init_start_every_member_there():
    """init_params given as params (not a function): every seed and cell starts from them, as
    inputs of the init program, and trains as it does from a function returning them."""
    p0 = jax.device_get(init(jax.random.key(7)))
    cfg = TrainConfig(steps=6, batch_size=8, seeds=2, seed=3, fuse=3)
    kw = dict(apply_fn=APPLY, data=data(), loss="squared", optimizer=optax.adam(1e-2))
    given = Trainer(cfg, init_params=p0, **kw)
    start = jax.device_get(given.init_state().params)
    for m in range(2):
        assert_trees_all_equal(jax.tree.map(lambda x, m=m: x[m], start), p0)
    fn = Trainer(cfg, init_params=lambda key: jax.tree.map(jnp.asarray, p0), **kw)
    a, b = given.run(progress=False), fn.run(progress=False)
    assert_trees_all_equal(jax.device_get(a.state.params), jax.device_get(b.state.params))
    cells = Trainer(
        cfg,
        init_params=p0,
        grid=[{"learning_rate": 1e-2}, {"learning_rate": 1e-3}],
        **{**kw, "optimizer": optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)},
    )
    assert jax.tree.leaves(cells.init_state().params)[0].shape[0] == 4  # 2 cells × 2 seeds


def test_batching_regimes_are_functions_of_step():
    d = {k: jnp.asarray(v) for k, v in data(12).items()}
    key = jax.random.key(0)
    epoch = batching.make_batcher(d, 4, "epoch")
    at = jax.jit(lambda t: epoch.at(d, key, t)["x"])
    get = jax.jit(lambda t, carry: epoch.get(d, key, t, carry))
    seen = np.concatenate([at(t)[:, 0] for t in range(3)])
    assert sorted(seen) == sorted(np.asarray(d["x"][:, 0]))  # one epoch visits each example once
    assert not np.array_equal(at(0), at(3))  # the next epoch is reshuffled
    carry = jax.jit(epoch.start)(key, 0)
    for t in range(7):  # the carried permutation gives the same batches as the stateless one
        batch, carry = get(t, carry)
        np.testing.assert_array_equal(batch["x"], at(t))
    rep = batching.make_batcher(d, 5, "replacement")
    assert jax.eval_shape(lambda: rep.at(d, key, 3))["y"].shape == (5, 1)
    full = batching.make_batcher(d, None, "epoch")
    assert full.kind == "full" and full.at(d, key, 9)["x"] is d["x"]
    sampler = lambda k, b: {"x": jax.random.normal(k, (b, 3))}
    fresh = batching.make_batcher(sampler, 6, "epoch")
    draw = jax.jit(lambda t: fresh.at(None, key, t)["x"])
    a, b = draw(1), draw(2)
    assert a.shape == (6, 3) and not np.allclose(a, b)
    np.testing.assert_array_equal(a, draw(1))
    with pytest.raises(ValueError, match="needs batch_size"):
        batching.make_batcher(sampler, None, "epoch")
    with pytest.raises(ValueError, match="exceeds"):
        batching.make_batcher(d, 13, "epoch")
    with pytest.raises(ValueError, match="sharing their leading"):
        batching.make_batcher({"x": np.ones((3, 2)), "y": np.ones(4)}, 2, "epoch")


def test_bad_inputs_fail_before_compute(tmp_path):
    kw = dict(apply_fn=APPLY, init_params=init, optimizer=optax.sgd(0.1), data=data())
    with pytest.raises(ValueError, match="batch_size .* not divisible by the 8 devices"):
        Trainer(TrainConfig(batch_size=6), **kw)
    with pytest.raises(ValueError, match="full dataset .* not divisible"):
        Trainer(TrainConfig(), **{**kw, "data": data(30)})
    with pytest.raises(ValueError, match="unknown loss"):
        Trainer(TrainConfig(batch_size=8), **kw, loss="hinge")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(rundir.RunDirError, match="cannot write"):
        Trainer(TrainConfig(batch_size=8, steps=2), **kw).run(blocker / "run")
    # A run dir with metrics but no checkpoint is not started over by a resume (that would
    # delete its metrics): it is refused, naming what is there; resume=False starts over.
    rd = rundir.RunDir(tmp_path / "stale")
    rd.append_metrics([{"step": 0, "train/loss": 1.0}])
    trainer = Trainer(TrainConfig(batch_size=8, steps=2, fuse=2), **kw)
    with pytest.raises(integrity.IntegrityError, match="metrics.jsonl but no checkpoint"):
        trainer.run(rd.path, progress=False)
    assert rd.read_metrics() == [{"step": 0, "train/loss": 1.0}]
    out = trainer.run(rd.path, resume=False, progress=False)
    lines = rd.read_metrics()
    assert [line["step"] for line in lines] == [0, 2] and lines[0]["train/loss"] != 1.0
    assert json.loads((rd.path / "metrics.jsonl").read_text().splitlines()[0])["step"] == 0
    assert out.final["train/loss"] == lines[-1]["train/loss"]


def test_probes_see_the_whole_training_set_unless_a_subset_is_asked_for_by_name():
    """``probe_size`` unset: the probe sets are the whole data and first eval set; an integer is a
    subset by name; a sampler has no whole set, so a probe that reads one needs ``probe_size``."""
    d, test = data(20), data(12, seed=1)
    ntk = probes.NTKSpectrum(probes.Schedule.every(2), top_k=4)

    def sets(**kw):
        cfg = TrainConfig(steps=2, fuse=2, devices=1, **kw)
        tr = Trainer(cfg, apply_fn=APPLY, init_params=init, optimizer=optax.sgd(0.1), data=d,
                     eval_sets={"test": test}, probes=[ntk])  # fmt: skip
        return {k: v["x"].shape[0] for k, v in tr.prober.sets.items()}

    assert sets() == {"train": 20, "test": 12}
    assert sets(probe_size=8) == {"train": 8, "test": 8}
    sampler = lambda key, b: {k: v[:b] for k, v in d.items()}
    cfg = TrainConfig(steps=2, fuse=2, devices=1, batch_size=4)
    with pytest.raises(ValueError, match="data is a sampler .* set probe_size"):
        Trainer(cfg, apply_fn=APPLY, init_params=init, optimizer=optax.sgd(0.1), data=sampler,
                probes=[ntk])  # fmt: skip
    # a probe that reads no probe set runs on a sampler without one
    Trainer(cfg, apply_fn=APPLY, init_params=init, optimizer=optax.sgd(0.1), data=sampler,
            probes=[probes.Norms(probes.Schedule.every(2))])  # fmt: skip


def test_when_traces_its_function_once_and_fills_in_its_shapes():
    traced = []

    def fn(x):
        traced.append(1)
        return {"a": x * 2.0, "b": jnp.ones((3,), jnp.int32)}

    nan = lambda shapes: jax.tree.map(lambda s: jnp.full(s.shape, -1, s.dtype), shapes)
    f = jax.jit(lambda x, p: when(p, lambda: fn(x), nan))
    x = jnp.arange(2.0)
    out = f(x, True)
    assert len(traced) == 1  # the fill took its shapes from fn's own trace
    np.testing.assert_array_equal(out["a"], [0.0, 2.0])
    np.testing.assert_array_equal(out["b"], [1, 1, 1])
    out = f(x, False)
    np.testing.assert_array_equal(out["a"], [-1.0, -1.0])
    assert out["b"].dtype == jnp.int32 and out["b"].shape == (3,)


def test_copy_tree_gives_fresh_buffers_with_the_same_values():
    tree = {"w": jnp.arange(3.0), "key": jax.random.key(1)}
    out = copy_tree(tree)
    assert out["w"].unsafe_buffer_pointer() != tree["w"].unsafe_buffer_pointer()
    np.testing.assert_array_equal(out["w"], tree["w"])
    np.testing.assert_array_equal(jax.random.key_data(out["key"]), jax.random.key_data(tree["key"]))
