"""Multi-process runs for real: ``dyntheory run`` as 2 JAX processes × 2 CPU devices on this
machine (``jax.distributed`` over localhost, gloo collectives) against 1 process × 4 devices."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dyntheory.engine import rundir
from tests.helpers import xla_flags

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240  # per launch; every process group is killed past it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv, processes: int, devices: int, log: Path, each=None) -> list[subprocess.Popen]:
    """``python -m dyntheory.cli.app ARGV`` as ``processes`` JAX processes of ``devices`` each
    (``each``: one ARGV per process instead)."""
    port = _free_port()
    procs = []
    for i in range(processes):
        if each is not None:
            argv = each[i]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env["XLA_FLAGS"] = xla_flags(devices)
        if processes > 1:
            env |= {
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "JAX_NUM_PROCESSES": str(processes),
                "JAX_PROCESS_ID": str(i),
                "DYNTHEORY_HEARTBEAT_TIMEOUT_S": "10",
            }
        out = open(f"{log}.{i}.log", "wb")  # noqa: SIM115 (closed with the process)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "dyntheory.cli.app", *map(str, argv)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as one
            )
        )
        out.close()
    return procs


def kill(procs) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)


def wait(procs, log: Path, timeout: float = TIMEOUT_S) -> list[int]:
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        kill(procs)
        pytest.fail(f"a process did not finish within {timeout} s; logs: {log}.*.log")
    return [p.returncode for p in procs]


def run_ok(argv, processes, devices, log):
    codes = wait(launch(argv, processes, devices, log), log)
    logs = "\n".join(Path(f"{log}.{i}.log").read_text()[-2000:] for i in range(processes))
    assert codes == [0] * processes, logs


def assert_close_runs(a: Path, b: Path, rtol: float = 1e-5) -> None:
    subs = sorted(p.parent.relative_to(b) for p in b.glob(f"**/{rundir.METRICS}"))
    assert subs and subs == sorted(p.parent.relative_to(a) for p in a.glob(f"**/{rundir.METRICS}"))
    for sub in subs:
        ma, mb = rundir.load_metrics(a / sub), rundir.load_metrics(b / sub)
        lines_a = rundir.RunDir(a / sub, create=False).read_metrics()
        lines_b = rundir.RunDir(b / sub, create=False).read_metrics()
        assert len(lines_a) == len(lines_b), sub  # one writer: no line twice
        assert set(ma) == set(mb), sub
        for k in sorted(k for k in mb if not k.startswith("time/")):
            np.testing.assert_allclose(ma[k], mb[k], rtol=rtol, atol=rtol, err_msg=f"{sub}: {k}")


@pytest.mark.parametrize(
    "experiment, extra",
    [
        ("toy_regression", []),
        # PRM with its gate probe and the whole-training-set NTK / W_S probes, 1 seed: five
        # processes' worth of grokking runs, longer than a tiny run
        pytest.param(
            "grokking", ["--set", "optimizers=prm", "--set", "seeds=1"], marks=pytest.mark.slow
        ),
    ],
)
def test_two_processes_equal_one_process_and_resume(tmp_path, experiment, extra):
    one, two = tmp_path / "one", tmp_path / "two"
    base = ["run", experiment, "--preset", "tiny", *extra]
    steps = 60 if experiment == "toy_regression" else 20
    run_ok([*base, "--set", f"steps={2 * steps}", "--out", one], 1, 4, tmp_path / "one")
    run_ok([*base, "--set", f"steps={steps}", "--out", two], 2, 2, tmp_path / "two")
    assert (two / rundir.LOCK).read_text().strip().isdigit()
    run_ok(["resume", two, "--set", f"steps={2 * steps}"], 2, 2, tmp_path / "resume")
    assert_close_runs(two, one)


@pytest.mark.parametrize("victim", [0, 1])
def test_a_dead_process_stops_the_other(tmp_path, victim):
    d = tmp_path / "toy"
    argv = ["run", "toy_regression", "--preset", "tiny", "--out", d]
    procs = launch([*argv, "--set", "steps=10000000"], 2, 2, tmp_path / "p")
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (d / rundir.METRICS).exists():
            assert all(p.poll() is None for p in procs), "a process stopped before training"
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        time.sleep(1)
        os.killpg(procs[victim].pid, signal.SIGKILL)
        t0 = time.monotonic()
        code = wait([procs[1 - victim]], tmp_path / "p", timeout=90)[0]
    finally:
        kill(procs)
    assert code != 0 and time.monotonic() - t0 < 90
    log = Path(f"{tmp_path / 'p'}.{1 - victim}.log").read_text()
    assert "another task died" in log or "gloo" in log.lower() or "Connection" in log, log[-3000:]


def test_processes_given_different_commands_name_the_difference(tmp_path):
    d = tmp_path / "toy"
    base = ["run", "toy_regression", "--preset", "tiny", "--out", d, "--set"]
    each = [[*base, "steps=10"], [*base, "steps=20"]]
    t0 = time.monotonic()
    codes = wait(launch(None, 2, 2, tmp_path / "p", each=each), tmp_path / "p", timeout=120)
    assert codes == [2, 2] and time.monotonic() - t0 < 120
    for i in range(2):
        log = Path(f"{tmp_path / 'p'}.{i}.log").read_text()
        assert "process 1 was given a different command line than process 0" in log, log[-2000:]
        assert "argument 8 is 'steps=20' there and 'steps=10' on process 0" in log, log[-2000:]
    assert not (d / rundir.METRICS).exists()
