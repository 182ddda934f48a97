"""The command line's start-up: the persistent compilation cache, "compiling…", and no JAX for
``--help`` (each checked in a fresh interpreter, as a user's shell starts one)."""

import io as stdio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dyntheory.cli import compile_cache
from dyntheory.engine.progress import Progress

ROOT = Path(__file__).resolve().parents[1]


def python(code: str, **env) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with the repository on the path, no test cache."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), base.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True
    )


def test_cache_directory_and_switch():
    home = str(Path.home())
    assert compile_cache.cache_dir({}) == Path(home) / ".cache" / "dyntheory" / "jax"
    assert compile_cache.cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/dyntheory/jax")
    env = {"XDG_CACHE_HOME": "/x", "DYNTHEORY_CACHE_DIR": "/y/c"}
    assert compile_cache.cache_dir(env) == Path("/y/c")
    assert compile_cache.wanted(True, {})
    assert not compile_cache.wanted(False, {})
    for off in ("0", "false", "OFF", "no"):
        assert not compile_cache.wanted(True, {"DYNTHEORY_COMPILE_CACHE": off})
    assert compile_cache.wanted(True, {"DYNTHEORY_COMPILE_CACHE": "1"})


# A jitted function compiled in one process and loaded from the cache in the next: JAX reports
# each persistent-cache hit as a monitoring event.
HITS = """
import sys, jax, jax.numpy as jnp
from dyntheory.cli import compile_cache
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None
)
path = compile_cache.enable(sys.argv[1] if len(sys.argv) > 1 else None)
jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((3, 3))).block_until_ready()
print(path, len(hits))
"""


def test_a_second_process_loads_the_compiled_program(tmp_path):
    cache = tmp_path / "cache"
    first = python(HITS, DYNTHEORY_CACHE_DIR=str(cache))
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == [str(cache), "0"]
    assert any(cache.iterdir())
    second = python(HITS, DYNTHEORY_CACHE_DIR=str(cache))
    assert second.returncode == 0, second.stderr
    assert int(second.stdout.split()[1]) >= 1


def test_an_uncreatable_cache_directory_is_a_note_not_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = python(HITS, DYNTHEORY_CACHE_DIR=str(blocker / "cache"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["None", "0"]
    assert "compilation cache off: cannot create" in res.stderr


def test_jax_s_own_cache_setting_wins(tmp_path):
    res = python(HITS, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[0] == str(tmp_path / "jax")


def run_cli_listing_heavy_modules(body: str):
    """Run ``body`` (lines using ``app``) in a fresh Python; it prints ``LOADED`` and the first
    JAX/Optax/Flax modules it left in ``sys.modules``."""
    return python(
        "import sys\n"
        "from dyntheory.cli import app\n"
        + body
        + "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'optax', 'flax'))\n"
        "print('LOADED', heavy[:5])\n"
    )


def test_help_loads_no_jax():
    res = run_cli_listing_heavy_modules(
        "app.build_parser()\n"
        "try:\n"
        "    app.main(['--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0\n"
    )
    assert res.returncode == 0, res.stderr
    assert "--no-compile-cache" in res.stdout
    assert "LOADED []" in res.stdout


def test_list_loads_no_jax():
    """`dyntheory list` reads every experiment's config and presets without JAX: the packages
    load their `run` module on first access, the configs are plain Python."""
    res = run_cli_listing_heavy_modules("assert app.main(['list']) == 0\n")
    assert res.returncode == 0, res.stderr
    assert "toy_regression: Teacher-student MLP regression" in res.stdout
    assert "--preset quick (default)" in res.stdout and "cannot load" not in res.stdout
    assert "LOADED []" in res.stdout


def test_compiling_is_one_line_in_a_log_and_nothing_when_quiet():
    log = stdio.StringIO()
    bar = Progress(10, stream=log)
    with bar.compiling():
        pass
    assert log.getvalue().startswith("compiling… done in ") and log.getvalue().count("\n") == 1
    quiet = stdio.StringIO()
    with Progress(10, show=False, stream=quiet).compiling():
        pass
    assert quiet.getvalue() == ""
    failed = stdio.StringIO()
    with pytest.raises(RuntimeError), Progress(10, stream=failed).compiling():
        raise RuntimeError("boom")
    assert failed.getvalue().startswith("compiling… stopped after ")


class Terminal(stdio.StringIO):
    def isatty(self):
        return True


def test_compiling_is_a_live_status_on_a_terminal(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    term = Terminal()
    with Progress(10, stream=term).compiling():
        pass
    assert "compiling…" in term.getvalue() and "done in" not in term.getvalue()
