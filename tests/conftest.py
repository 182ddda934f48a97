"""Test set-up: 8 fake CPU devices, float64 available, strict rank promotion, fast compiles.

Must run before anything imports jax, so the device count and config take effect.

Compilation dominates the suite (a tiny run compiles for seconds and trains for milliseconds), so
the tests compile with LLVM's optimization level 0 (about half the compile time; XLA's own graph
passes are unchanged) and share a persistent compilation cache, a fresh directory per session,
with the processes they launch. The last bits of float results differ from the default level's
(measured in docs/testing.md), so a test compares with tolerances, or bit for bit only within
the session (resume, sharding, vmapped seeds). Set
``DYNTHEORY_TEST_XLA_OPT=1`` to test with the default optimization level.
"""

import atexit
import contextlib
import fcntl
import os
import shutil
import tempfile

_flags = [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]
if os.environ.get("DYNTHEORY_TEST_XLA_OPT") != "1":
    _flags.append("--xla_backend_optimization_level=0")
os.environ["XLA_FLAGS"] = " ".join(f for f in _flags if f)
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="dyntheory-test-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import pytest  # noqa: E402

# float64 is available for closed-form comparisons; library code passes dtypes explicitly,
# so float32 models stay float32.
jax.config.update("jax_enable_x64", True)
# Implicit rank promotion hides shape bugs: make it an error.
jax.config.update("jax_numpy_rank_promotion", "raise")
# Dtype promotion stays "standard": optax 0.2.8's bias correction mixes a Python float with an
# int32 count, which "strict" rejects inside optax itself.
jax.config.update("jax_numpy_dtype_promotion", "standard")


# Where a mesh is not what a test is about, it runs on one device, as a run on a CPU does: a test
# file marked ``pytestmark = pytest.mark.one_device`` gets a one-device mesh for ``devices=0``
# ("all"). On 8 fake devices sharing 2 cores every replicated computation is done 8 times: the
# grokking tests took 1.4× as long (docs/testing.md). The shared tiny runs below, the engine's
# own tests and every test that names a device count keep all 8.
@pytest.fixture(autouse=True)
def _one_device_mesh(request, monkeypatch):
    if request.node.get_closest_marker("one_device") is None:
        return
    from dyntheory.engine import sharding

    every = sharding.make_mesh
    one = lambda devices=0: every(devices or 1)
    one.every = every  # for _all_devices
    monkeypatch.setattr(sharding, "make_mesh", one)


@contextlib.contextmanager
def _all_devices():
    from dyntheory.engine import sharding

    patched = sharding.make_mesh
    sharding.make_mesh = getattr(patched, "every", patched)
    try:
        yield
    finally:
        sharding.make_mesh = patched


# The tiny preset of every experiment, run once per session through ``dyntheory run``'s code
# path and shared read-only by the experiment tests and the figure tests (a run's directory may
# gain a drawn figure; nothing else writes to it). With pytest-xdist (scripts/test.sh runs a worker
# per core), the workers share one directory: the first to need a run makes it, under a file lock,
# and the others wait for it and read it.
TINY_OVERRIDES = {"scaling_laws": ["run_classify=false"]}  # the classification part is slow


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """``tiny_run(experiment) -> run directory`` of ``dyntheory run EXPERIMENT --preset tiny``."""
    from dyntheory.cli import app as cli

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's directory, above each worker's own
    root, locks = base / "tiny-runs", base / "tiny-runs-locks"
    root.mkdir(exist_ok=True)
    locks.mkdir(exist_ok=True)

    def get(experiment: str):
        out = root / f"{experiment}-tiny"
        with open(locks / experiment, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (out / "results.json").exists():
                overrides = TINY_OVERRIDES.get(experiment, ())
                with _all_devices():  # every experiment's sharded smoke run, whoever asks first
                    cli.run_experiment(experiment, "tiny", overrides, out=out, force=True)
        return out

    get.root = root
    return get


# Under pytest-xdist (``--dist loadfile --no-loadscope-reorder``, as scripts/test.sh runs it) the
# workers take whole files in this order, so the longest files go first and the short ones fill in
# at the end: started last, one long file would be the suite's critical path while the other
# worker idles. Longest first, by measured time; the files not named follow in their usual order.
LONGEST_FIRST = [
    "test_figures.py",  # makes the shared tiny runs
    "test_exp_grokking.py",
    "test_lowrank.py",
    "test_ntk.py",
    "test_faults.py",
    "test_multiprocess.py",
    "test_cli_resume.py",
    "test_probes.py",
    "test_data_safety.py",
    "test_diagnostics.py",
    "test_exp_pinn.py",
    "test_stepwise.py",
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole
