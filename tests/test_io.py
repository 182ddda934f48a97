"""Run directories: metrics lines, arrays, JSON, checkpoints."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dyntheory.engine import records, rundir, sharding
from dyntheory.engine.checkpoint import Checkpointer, abstract_like
from tests.helpers import assert_trees_all_equal


def test_run_dir_errors(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(rundir.RunDirError, match="cannot write to the run directory"):
        rundir.RunDir(blocker / "run")
    with pytest.raises(rundir.RunDirError, match="not a directory"):
        rundir.RunDir(tmp_path / "missing", create=False)
    with pytest.raises(rundir.RunDirError, match="not a run directory"):
        rundir.RunDir(tmp_path).read_config()


def test_metrics_lines_truncate_and_table(tmp_path):
    rd = rundir.RunDir(tmp_path)
    rd.append_metrics([{"step": t, "train/loss": 1.0 / (t + 1)} for t in range(0, 50, 10)])
    rd.append_metrics([{"step": 50, "train/loss": float("nan"), "test/acc": np.float32(0.5)}])
    lines = rd.read_metrics()
    assert [line["step"] for line in lines] == [0, 10, 20, 30, 40, 50]
    assert math.isnan(lines[-1]["train/loss"]) and lines[-1]["test/acc"] == 0.5
    rd.truncate_metrics(30)
    assert [line["step"] for line in rd.read_metrics()] == [0, 10, 20]
    table = rundir.load_metrics(tmp_path)
    assert table["step"].tolist() == [0, 10, 20] and table["train/loss"].shape == (3,)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'none'} has no metrics.jsonl"):
        rundir.load_metrics(rundir.RunDir(tmp_path / "none").path)  # a run that logged nothing

    seeded = [{"step": t, "seed": s, "train/loss": t + s} for t in (0, 5) for s in (0, 1)]
    seeded.append({"step": 9, "seed": 1, "test/acc": 1.0})
    table = records.metrics_table(seeded)
    assert table["train/loss"].shape == (3, 2)
    np.testing.assert_array_equal(table["train/loss"][:2], [[0, 1], [5, 6]])
    assert np.isnan(table["test/acc"][:2]).all() and table["test/acc"][2, 1] == 1.0
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # atomic writes clean up


def test_json_and_arrays_roundtrip(tmp_path):
    rundir.write_json(
        tmp_path / "r.json", {"a": np.float32(1.5), "b": np.arange(3), "c": (1, None)}
    )
    assert rundir.read_json(tmp_path / "r.json") == {"a": 1.5, "b": [0, 1, 2], "c": [1, None]}
    recs = {"ntk": [(0, {"eig": np.ones(3)}), (10, {"eig": np.zeros(3)})], "empty": []}
    arrays = records.stack_arrays(recs)
    assert arrays["ntk/eig"].shape == (2, 3) and arrays["ntk/step"].tolist() == [0, 10]
    rd = rundir.RunDir(tmp_path)
    rd.write_arrays(arrays)
    back = records.unstack_arrays(rd.read_arrays(), before_step=10)
    assert list(back) == ["ntk"] and back["ntk"][0][0] == 0 and len(back["ntk"]) == 1
    np.testing.assert_array_equal(back["ntk"][0][1]["eig"], np.ones(3))


def test_checkpoint_roundtrip_keeps_shardings(tmp_path):
    mesh = sharding.make_mesh(8)
    abstract = {
        "w": jax.ShapeDtypeStruct((16, 4), jnp.float32),
        "n": jax.ShapeDtypeStruct((), jnp.int32),
    }
    sh = sharding.state_shardings(abstract, mesh, "fsdp")
    tree = {
        "w": jax.device_put(jnp.arange(64.0, dtype=jnp.float32).reshape(16, 4), sh["w"]),
        "n": jax.device_put(jnp.int32(7), sh["n"]),
        "nested": ((), {"k": jnp.ones(2)}),
    }
    ckpt = Checkpointer(tmp_path / "ckpt", keep=2)
    for step in (10, 20, 30):
        ckpt.save(step, tree, {"step": step, "time": {"train_s": 1.5}})
    assert ckpt.all_steps() == [20, 30] and ckpt.latest_step() == 30
    restored, meta = ckpt.restore(30, abstract_like(tree))
    assert meta == {"step": 30, "time": {"train_s": 1.5}}
    assert_trees_all_equal(jax.device_get(restored), jax.device_get(tree))
    assert restored["w"].sharding.spec == sh["w"].spec
    ckpt.close()
    assert rundir.RunDir(tmp_path).checkpointer().latest_step() is None  # a different directory


def test_has_checkpoint_sees_sub_runs(tmp_path):
    rd = rundir.RunDir(tmp_path / "run")
    assert not rd.has_checkpoint()
    (tmp_path / "run" / "prm" / rundir.CHECKPOINTS / "tmp").mkdir(parents=True)
    assert not rd.has_checkpoint()  # no step directory yet
    (tmp_path / "run" / "prm" / rundir.CHECKPOINTS / "2000").mkdir()
    assert rd.has_checkpoint()


def test_only_the_main_process_writes_files(tmp_path, monkeypatch):
    monkeypatch.setattr(sharding, "is_main_process", lambda: False)
    rundir.write_json(tmp_path / "a.json", {"x": 1})
    rundir.write_npz(tmp_path / "b.npz", {"x": np.zeros(2)})
    rundir.write_bytes(tmp_path / "c.bin", b"x")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(sharding, "is_main_process", lambda: True)
    rundir.write_npz(tmp_path / "b.npz", {"x": np.zeros(2)})
    with np.load(tmp_path / "b.npz") as z:
        np.testing.assert_array_equal(z["x"], np.zeros(2))
