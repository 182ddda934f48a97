"""The documentation site: it builds with warnings as errors, and its guides' examples run.

The examples live in ``docs/examples/``; the guide pages include them, and these tests import
and run them, so a guide cannot drift from code that works.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from dyntheory.cli import app as cli
from dyntheory.engine import rundir
from dyntheory.probes import ProbeContext, Schedule

pytestmark = pytest.mark.one_device  # their runs on one device (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"docs_example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_site_builds_with_warnings_as_errors(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail("mkdocs is not installed: pip install -e '.[docs]' (scripts/setup.sh does)")
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "theory" / "index.html").is_file()
    assert (tmp_path / "site" / "THEORY" / "index.html").is_file()


def test_every_example_is_included_by_a_page():
    pages = "".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    for example in EXAMPLES.glob("*.py"):
        assert f"docs/examples/{example.name}" in pages, f"no page includes {example.name}"


def test_probe_example_closed_form_and_run():
    mod = _load(EXAMPLES / "noise_fit_probe.py")
    probe = mod.NoiseFit(Schedule.every(1))
    y_clean = jnp.arange(4.0).reshape(4, 1)
    y = y_clean + jnp.array([[1.0], [-1.0], [0.5], [2.0]])
    train = {"x": y, "y": y, "y_clean": y_clean}
    for target, expected in ((y, 1.0), (y_clean, 0.0), ((y + y_clean) / 2, 0.5)):
        ctx = ProbeContext(lambda p, x, t=target: t, None, None, train, None, None, None)
        _, scalars, _ = probe(ctx, (), {}, (), jnp.int32(0))
        assert float(scalars["fraction"]) == pytest.approx(expected)
    history = mod.demo(steps=100)
    frac = np.ravel(history["probe/noise_fit/fraction"])
    assert frac.shape == (3,) and np.all(np.isfinite(frac))  # steps 0, 50, 100


def test_experiment_example_runs_from_its_file(capsys, tmp_path, monkeypatch):
    path = EXAMPLES / "width_sweep.py"
    assert len(path.read_text().splitlines()) < 100
    out = tmp_path / "ws"
    code = cli.main(["run", str(path.relative_to(ROOT)), "--preset", "tiny", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err
    rd = rundir.RunDir(out, create=False)
    assert rd.read_config()["experiment"] == str(path)  # absolute: resume finds it anywhere
    results = rd.read_results()
    assert set(results["widths"]) == {"4", "16"}
    assert all(np.isfinite(r["test_loss"][0]) for r in results["widths"].values())
    assert (out / "width-4" / rundir.METRICS).is_file()
    monkeypatch.chdir(tmp_path)  # resume loads the experiment by the recorded path, from anywhere
    assert cli.load_experiment(rd.read_config()["experiment"]).PRESETS["tiny"]


def test_unknown_experiment_names_the_file_form_and_the_entry_point(capsys):
    code = cli.main(["run", "no_such_experiment"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "path/to/my_experiment.py" in err and "'dyntheory.experiments'" in err
    assert cli.main(["run", "missing/experiment.py"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_docs_and_readme_speak_of_the_project_only():
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    pattern = re.compile(r"issue #?[0-9]|this round", re.I)
    hits = [
        f"{p.relative_to(ROOT)}: {m.group()}"
        for p in files
        for m in pattern.finditer(p.read_text())
    ]
    assert not hits, hits
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
