"""What a demanding user does to run directories, through the CLI: extend, resume after a crash or
a divergence, give bad overrides, run two writers at once, clean up after an error."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dyntheory import split
from dyntheory.cli import app as cli
from dyntheory.engine import rundir
from dyntheory.engine.config import ConfigError, replace, to_dict
from experiments.grokking import PRESETS as GROKKING
from experiments.toy_regression import PRESETS as TOY
from tests.helpers import xla_flags

pytestmark = pytest.mark.one_device  # their runs on one device (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _without_time(x):
    if isinstance(x, dict):
        return {k: _without_time(v) for k, v in x.items() if "time" not in k}
    return x


def assert_same_run(a: Path, b: Path) -> None:
    """Every metric (but timings), every probe array and results.json of two run directories,
    sub-runs included, bit for bit."""
    subs = sorted(p.parent.relative_to(b) for p in b.glob(f"**/{rundir.METRICS}"))
    assert subs == sorted(p.parent.relative_to(a) for p in a.glob(f"**/{rundir.METRICS}"))
    for sub in subs:
        ma, mb = rundir.load_metrics(a / sub), rundir.load_metrics(b / sub)
        keys = {k for k in mb if not k.startswith("time/")}
        assert keys == {k for k in ma if not k.startswith("time/")}, sub
        for k in sorted(keys):
            np.testing.assert_array_equal(ma[k], mb[k], err_msg=f"{sub}: {k}")
        xa = rundir.RunDir(a / sub, create=False).read_arrays()
        xb = rundir.RunDir(b / sub, create=False).read_arrays()
        assert set(xa) == set(xb), sub
        for k in xb:
            np.testing.assert_array_equal(xa[k], xb[k], err_msg=f"{sub}: {k}")
    ra, rb = (json.loads((d / rundir.RESULTS).read_text()) for d in (a, b))
    assert _without_time(ra) == _without_time(rb)


# ------------------------------------------------------------------ 1. extending a run is exact

EXTEND = {
    "toy_regression": [],
    # PRM: its gate probe runs every eval step, the NTK / W_S probes log-spaced
    "grokking": ["--set", "optimizers=prm", "--set", "seeds=1"],
}


@pytest.mark.parametrize(
    "experiment",
    # grokking's three runs are longer than a tiny run: slow (its two-process resume is too)
    ["toy_regression", pytest.param("grokking", marks=pytest.mark.slow)],
)
def test_resume_to_a_longer_run_equals_the_longer_run(capsys, tmp_path, experiment):
    extra = ["--preset", "tiny", *EXTEND[experiment]]
    short, long = tmp_path / "short", tmp_path / "long"
    code, _, err = run_cli(capsys, "run", experiment, *extra, "--set", "steps=60", "--out", short)
    assert code == 0, err
    code, _, err = run_cli(capsys, "resume", short, "--set", "steps=120")
    assert code == 0, err
    assert "resume: train.steps: 60 -> 120" in err
    code, _, err = run_cli(capsys, "run", experiment, *extra, "--set", "steps=120", "--out", long)
    assert code == 0, err
    assert_same_run(short, long)


# ------------------------------------------------- 2. a failed resume leaves config.json alone


def test_bad_resume_overrides_leave_the_run_resumable(capsys, tmp_path):
    d = tmp_path / "toy"
    assert run_cli(capsys, "run", "toy_regression", "--preset", "tiny", "--out", d)[0] == 0
    config = (d / rundir.CONFIG).read_bytes()

    code, _, err = run_cli(capsys, "resume", d, "--set", "steps=10")
    assert code == 2 and "the latest checkpoint is at step 60" in err and "steps >= 60" in err
    assert (d / rundir.CONFIG).read_bytes() == config

    code, _, err = run_cli(capsys, "resume", d, "--set", "width=32")
    assert code == 2 and "width cannot change on resume (16 -> 32)" in err
    assert "Traceback" not in err and "orbax" not in err.lower()
    assert (d / rundir.CONFIG).read_bytes() == config

    code, _, err = run_cli(capsys, "resume", d)
    assert code == 0, err
    assert (d / rundir.CONFIG).read_bytes() == config


def test_a_run_saved_before_the_optim_block_is_refused_naming_the_new_keys(capsys, tmp_path):
    """config.json of an older version: the optimizer's numbers at the top level (``lr``, ...).
    The resume stops in one line that names the new spelling and a new run; nothing changes."""
    d = rundir.RunDir(tmp_path / "old")
    cfg = to_dict(GROKKING["tiny"].config)
    optim = cfg.pop("optim")
    cfg.update(lr=optim["lr"], b2=optim["b2"], weight_decay=optim["weight_decay"])
    with d.lock():
        d.write_config({"experiment": "grokking", "preset": "tiny", "overrides": [], "config": cfg})
    before = {p.name: p.read_bytes() for p in d.path.iterdir()}

    code, _, err = run_cli(capsys, "resume", d.path)
    assert code == 2 and err.count("\n") == 1, err
    assert f"cannot resume {d.path}:" in err and "lr is now optim.lr" in err
    assert "weight_decay is now optim.weight_decay" in err
    new_run = f"dyntheory run grokking --preset tiny --set optim.b2={optim['b2']}"
    assert new_run in err and f"--set optim.lr={optim['lr']}" in err
    assert {p.name: p.read_bytes() for p in d.path.iterdir()} == before


# ----------------------------------------- 3. a partial metrics line or a corrupt config.json


def test_resume_after_a_crash_mid_append(capsys, tmp_path):
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    for d in (whole, crashed):
        assert run_cli(capsys, "run", "toy_regression", "--preset", "tiny", "--out", d)[0] == 0
    # the state of a run killed at step ~45 while appending a line: checkpoint 30 is the latest
    rd = rundir.RunDir(crashed, create=False)
    lines = (crashed / rundir.METRICS).read_text().splitlines(keepends=True)
    kept = [x for x in lines if json.loads(x)["step"] <= 40]
    (crashed / rundir.METRICS).write_text("".join(kept) + lines[len(kept)][:57])
    for step in rd.checkpoint_steps()["checkpoints"]:
        if step > 30:
            shutil.rmtree(crashed / rundir.CHECKPOINTS / str(step))
    assert len(rd.read_metrics()) == len(kept)  # readers skip the partial line

    code, _, err = run_cli(capsys, "resume", crashed)
    assert code == 0, err
    assert_same_run(crashed, whole)

    (crashed / rundir.CONFIG).write_text('{"experiment": "toy_regression", "conf')
    code, _, err = run_cli(capsys, "resume", crashed)
    assert code == 2 and f"{crashed / rundir.CONFIG} is corrupt" in err

    bad = whole / rundir.METRICS
    bad.write_text('{"step": 0}\n{"step": 1,\n{"step": 2}\n')
    with pytest.raises(rundir.RunDirError, match=f"{bad}, line 2, is corrupt"):
        rundir.load_metrics(whole)


# --------------------------------------------------------- 4. one writer per run directory


def _cli_process(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env["XLA_FLAGS"] = xla_flags(8)
    return subprocess.Popen(
        [sys.executable, "-m", "dyntheory.cli.app", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_not(capsys, tmp_path):
    d = tmp_path / "toy"
    proc = _cli_process(
        "run", "toy_regression", "--preset", "tiny", "--out", str(d),
        "--set", "steps=1000000", "--set", "checkpoint_every=0",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (d / rundir.METRICS).exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the run did not start within 120 s"
            time.sleep(0.2)
        for argv in (
            ["resume", d, "--set", "steps=20"],
            ["run", "toy_regression", "--preset", "tiny", "--out", d, "--force"],
        ):
            code, _, err = run_cli(capsys, *argv)
            assert code == 2
            assert f"{d} is in use by another dyntheory process (PID {proc.pid})" in err
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert (d / rundir.LOCK).exists()  # stale: its holder is dead
    # the lock does not block; the run died before its first checkpoint, so a resume would start
    # over: it is refused, and starting over is the explicit --force
    code, _, err = run_cli(capsys, "resume", d, "--set", "steps=20")
    assert code == 2 and "no checkpoint to resume from" in err and "--force" in err, err
    assert len(err.strip().splitlines()) == 1 and (d / rundir.METRICS).exists()
    code, _, err = run_cli(
        capsys, "run", "toy_regression", "--preset", "tiny", "--out", d, "--force",
        "--set", "steps=20",
    )  # fmt: skip
    assert code == 0, err
    steps = [line["step"] for line in rundir.RunDir(d, create=False).read_metrics()]
    assert steps == sorted(set(steps)) and steps[-1] == 20


# ------------------------------------------------------------------ 5. input validation


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "-inf"])
def test_non_positive_or_non_finite_lr_is_refused(capsys, tmp_path, value):
    code, _, err = run_cli(
        capsys, "run", "grokking", "--preset", "tiny", "--set", f"lr={value}",
        "--out", tmp_path / "g",
    )  # fmt: skip
    assert code == 2 and "lr must" in err, err
    assert not (tmp_path / "g").exists()


def test_numpy_and_jax_scalars_are_validated_as_floats():
    import jax.numpy as jnp

    tiny = GROKKING["tiny"].config
    for bad in (np.float32("nan"), np.float64(-1.0), jnp.asarray(np.inf)):
        with pytest.raises(ConfigError, match="lr must"):
            replace(tiny, lr=bad)
    for name, bad in (("b2", np.float32(1.0)), ("weight_decay", -0.5), ("eps", float("nan"))):
        with pytest.raises(ConfigError, match=name):
            replace(tiny, **{name: bad})
    cfg = replace(TOY["tiny"].config, lr=np.float32(0.5), steps=np.int64(7))
    assert type(cfg.lr) is float and cfg.lr == 0.5 and type(cfg.train.steps) is int
    with pytest.raises(ConfigError, match="split_threshold"):
        replace(TOY["tiny"].config, split_threshold=-0.1)


def test_split_refuses_a_nan_gramian_and_a_negative_threshold():
    w = np.eye(3)
    with pytest.raises(ValueError, match="NaN"):
        split.split(np.where(w == 1, np.nan, 0.0))
    with pytest.raises(ValueError, match="threshold"):
        split.split(w, threshold=-1e-3)
    with pytest.raises(ValueError, match="threshold"):
        split.split(w, threshold=float("nan"))


# -------------------------------------------- 6. resuming a divergence with a smaller lr


@pytest.mark.parametrize("experiment", ["toy_regression", "grokking"])
def test_resume_after_a_divergence_with_another_lr(capsys, tmp_path, experiment):
    d = tmp_path / "run"
    # the probes are not what is tested here (the extension test above covers them)
    opts = ["--set", "optimizers=adamw", "--set", "probes_per_decade=0"]
    opts = opts if experiment == "grokking" else []
    code, _, err = run_cli(
        capsys, "run", experiment, "--preset", "tiny", *opts, "--set", "steps=10", "--out", d
    )
    assert code == 0, err
    metrics = next(d.glob(f"**/{rundir.METRICS}")).parent
    at_10 = rundir.load_metrics(metrics)["train/loss"][-1]
    config = (d / rundir.CONFIG).read_bytes()

    code, _, err = run_cli(capsys, "resume", d, "--set", "steps=40", "--set", "lr=1e30")
    assert code == 1 and "non-finite" in err and "the last good checkpoint is step 10" in err
    assert f"dyntheory resume {d} --set lr=" in err
    assert (d / rundir.CONFIG).read_bytes() == config  # no new checkpoint: config.json as it was

    group = json.loads(config)["config"]
    group, key = (group["optim"], "optim.lr") if experiment == "grokking" else (group, "lr")
    old_lr = group["lr"]
    code, _, err = run_cli(capsys, "resume", d, "--set", "steps=40", "--set", f"lr={old_lr / 2}")
    assert code == 0, err
    assert f"resume: {key}: {old_lr!r} -> {old_lr / 2!r}" in err
    table = rundir.load_metrics(metrics)
    assert table["step"][-1] == 40
    row = list(table["step"]).index(10)  # resumed at the checkpoint of step 10, not from 0
    np.testing.assert_array_equal(table["train/loss"][row], at_10)
    saved = rundir.RunDir(d, create=False).read_config()
    saved_lr = saved["config"]["optim" if experiment == "grokking" else "train"]
    saved_lr = saved_lr["lr"] if experiment == "grokking" else saved["config"]["lr"]
    assert saved_lr == old_lr / 2 and saved["config"]["train"]["steps"] == 40


# ----------------------------------------------------------------------------- 7. leftovers


def test_an_error_found_late_leaves_nothing_behind(capsys, tmp_path):
    d = tmp_path / "g"
    code, _, err = run_cli(
        capsys, "run", "grokking", "--preset", "tiny", "--set", "batch_size=100000", "--out", d
    )
    assert code == 2 and "batch_size" in err
    assert not d.exists()
    d.mkdir()  # an existing, empty directory is left empty
    code, _, err = run_cli(
        capsys, "run", "grokking", "--preset", "tiny", "--set", "batch_size=100000", "--out", d
    )
    assert code == 2 and [p.name for p in d.iterdir()] == []  # left as it was found


def test_force_clears_only_a_run_directory_and_files_follow_the_umask(capsys, tmp_path):
    d = tmp_path / "toy"
    old = os.umask(0o022)
    try:
        code, _, err = run_cli(capsys, "run", "toy_regression", "--preset", "tiny", "--out", d)
    finally:
        os.umask(old)
    assert code == 0, err
    for name in (rundir.CONFIG, rundir.METRICS, rundir.ARRAYS, rundir.RESULTS):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o644, name
    code, _, err = run_cli(capsys, "run", "toy_regression", "--preset", "tiny", "--out", d)
    assert code == 2 and "already holds a run" in err
    (d / "notes.txt").write_text("another experiment's file\n")
    before = sorted(p.relative_to(d) for p in d.rglob("*"))
    code, _, err = run_cli(
        capsys, "run", "toy_regression", "--preset", "tiny", "--out", d, "--force"
    )
    assert code == 2 and f"{d / 'notes.txt'} was not written by dyntheory" in err, err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.relative_to(d) for p in d.rglob("*")) == before  # nothing was removed
    (d / "notes.txt").unlink()
    code, _, err = run_cli(
        capsys, "run", "toy_regression", "--preset", "tiny", "--out", d, "--force",
        "--set", "steps=30",
    )  # fmt: skip
    assert code == 0, err
    assert rundir.load_metrics(d)["step"][-1] == 30


def test_an_unwritable_checkpoints_directory_fails_before_compute(capsys, tmp_path):
    d = tmp_path / "toy"
    assert run_cli(capsys, "run", "toy_regression", "--preset", "tiny", "--out", d)[0] == 0
    ckpt = d / rundir.CHECKPOINTS
    shutil.rmtree(ckpt)
    ckpt.write_text("")  # not a directory (as root, a chmod would not stop writes)
    t0 = time.perf_counter()
    code, _, err = run_cli(capsys, "resume", d, "--set", "steps=120")
    assert code == 2 and f"{ckpt} is not a directory" in err
    assert time.perf_counter() - t0 < 20
    if os.geteuid() != 0:
        ckpt.unlink()
        ckpt.mkdir(mode=0o555)
        code, _, err = run_cli(capsys, "resume", d, "--set", "steps=120")
        assert code == 2 and "cannot write to" in err
