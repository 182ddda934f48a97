"""Mesh layouts, and the sharded engine against the one-device engine."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from dyntheory.engine import Trainer, sharding
from dyntheory.engine.config import TrainConfig
from dyntheory.models import MLP, functional
from tests.helpers import assert_trees_all_close


def test_fsdp_spec_picks_largest_divisible_axis():
    assert sharding.fsdp_spec((16, 24), 8) == P(None, "data")
    assert sharding.fsdp_spec((24, 16), 8) == P("data", None)
    assert sharding.fsdp_spec((5, 7), 8) == P()  # nothing divisible: replicated
    assert sharding.fsdp_spec((4,), 8) == P()  # smaller than the mesh
    assert sharding.fsdp_spec((3, 64, 8), 8, skip_leading=True) == P(None, "data", None)
    assert sharding.fsdp_spec((8, 8), 1) == P()


def test_state_shardings_layouts():
    mesh = sharding.make_mesh(8)
    tree = {
        "w": jax.ShapeDtypeStruct((16, 8), jnp.float32),
        "c": jax.ShapeDtypeStruct((), jnp.int32),
    }
    rep = sharding.state_shardings(tree, mesh, "replicated")
    assert rep["w"].spec == P() and rep["c"].spec == P()
    fsdp = sharding.state_shardings(tree, mesh, "fsdp")
    assert fsdp["w"].spec == P("data", None) and fsdp["c"].spec == P()
    with pytest.raises(ValueError, match="layout"):
        sharding.state_shardings(tree, mesh, "zero")


def test_make_mesh_and_distributed_noop(monkeypatch):
    assert sharding.mesh_size(sharding.make_mesh()) == len(jax.devices())
    assert sharding.mesh_size(sharding.make_mesh(1)) == 1
    with pytest.raises(ValueError, match="device"):
        sharding.make_mesh(len(jax.devices()) + 1)
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    monkeypatch.delenv("DYNTHEORY_DISTRIBUTED", raising=False)
    assert sharding.initialize_distributed() is False  # single host: nothing to start


def _trainer(devices: int, layout: str) -> Trainer:
    apply_fn, _ = functional(MLP(4, (16,), 2, activation="tanh", rngs=nnx.Rngs(0)))
    init = lambda key: functional(MLP(4, (16,), 2, activation="tanh", rngs=nnx.Rngs(key)))[1]
    rng = np.random.RandomState(0)
    x = rng.randn(128, 4).astype(np.float32)
    y = np.stack([np.sin(x.sum(1)), np.cos(x[:, 0])], 1).astype(np.float32)
    cfg = TrainConfig(
        steps=240,
        batch_size=32,
        fuse=40,
        log_every=10,
        eval_every=40,
        devices=devices,
        layout=layout,
    )
    return Trainer(
        cfg,
        apply_fn=apply_fn,
        init_params=init,
        optimizer=optax.adam(1e-2),
        data={"x": x, "y": y},
        eval_sets={"test": {"x": x[:64] + 0.1, "y": y[:64]}},
    )


def test_sharded_runs_equal_one_device_run():
    """8 fake devices, replicated and parameter-sharded, 240 steps: equal to one device."""
    ref = _trainer(1, "replicated").run(progress=False)
    for layout in ("replicated", "fsdp"):
        tr = _trainer(8, layout)
        out = tr.run(progress=False)
        assert_trees_all_close(
            jax.device_get(out.state.params),
            jax.device_get(ref.state.params),
            rtol=0,
            atol=1e-5,
            err_msg=layout,
        )
        assert_trees_all_close(
            jax.device_get(out.state.opt_state),
            jax.device_get(ref.state.opt_state),
            rtol=0,
            atol=1e-5,
        )
        for key in ("train/loss", "train/grad_norm", "test/loss"):
            np.testing.assert_allclose(
                out.history[key], ref.history[key], rtol=0, atol=1e-5, err_msg=f"{layout} {key}"
            )
        assert int(out.state.step) == 240
        kernel = out.state.params["layers"][0]["kernel"]
        if layout == "fsdp":  # (4, 16) kernel: the 16-axis is split over the 8 devices
            assert kernel.sharding.spec == P(None, "data")
            mu = optax.tree.get(out.state.opt_state, "mu")["layers"][0]["kernel"]
            assert mu.sharding.spec == P(None, "data")
        else:
            assert kernel.sharding.spec == P() and len(kernel.sharding.device_set) == 8
