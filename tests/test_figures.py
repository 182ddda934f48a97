"""paper_figures: every figure drawn from tiny runs, the figures command, and missing-run errors.

The runs are the session's shared tiny runs (``tiny_run`` in ``tests/conftest.py``: the tiny
preset of every experiment, through the code path of ``dyntheory run``), which the experiment
tests read too.
"""

from __future__ import annotations

import importlib
import inspect
import json
import shutil
from pathlib import Path

import pytest

from dyntheory.cli import app as cli
from dyntheory.cli import figures as figures_cli
from paper_figures import catalog, runs, style

# grokking's run, the longest, last: tests/test_exp_grokking.py starts beside this file on the
# other xdist worker and makes it there meanwhile, rather than wait for it here
EXPERIMENTS = sorted({f.experiment for f in catalog.FIGURES}, key=lambda e: (e == "grokking", e))


@pytest.fixture(scope="session")
def tiny_runs(tiny_run) -> Path:
    for exp in EXPERIMENTS:
        tiny_run(exp)
    return tiny_run.root


def _check_figure(fig, name: str) -> None:
    """Every panel has content; the figure has a title, a legend and labelled axes."""
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert axes, name
    for ax in axes:
        n = len(ax.lines) + len(ax.collections) + len(ax.images) + len(ax.patches)
        assert n > 0, f"{name}: empty panel {ax.get_title()!r}"
    assert fig._suptitle is not None or any(ax.get_title() for ax in axes), name
    assert any(ax.get_legend() is not None for ax in axes), f"{name}: no legend"
    assert any(ax.get_xlabel() for ax in axes) and any(ax.get_ylabel() for ax in axes), name


@pytest.mark.parametrize("fig", catalog.FIGURES, ids=catalog.NAMES)
def test_every_figure_draws_from_tiny_runs(fig, tiny_runs, tmp_path, monkeypatch):
    save = style.save
    seen = []

    def checked_save(figure, out_dir, name, dpi=None):
        _check_figure(figure, name)
        seen.append(name)
        return save(figure, out_dir, name, dpi)

    monkeypatch.setattr(style, "save", checked_save)
    module = importlib.import_module(f"paper_figures.{fig.name}")
    paths = module.draw(catalog.run_dir(tiny_runs, fig.experiment, "tiny"), tmp_path)
    assert seen == [fig.name]
    assert [p.name for p in paths] == [f"{fig.name}.png", f"{fig.name}.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"


def test_figures_command_draws_everything_with_progress(tiny_runs, tmp_path, capsys):
    out, small = tmp_path / "figs", tmp_path / "gallery"
    argv = ["--runs", str(tiny_runs), "--preset", "tiny", "--out", str(out), "--no-run"]
    status = cli.main(["figures", *argv, "--gallery", str(small)])
    text = capsys.readouterr().out
    assert status == 0, text
    n = len(catalog.FIGURES)
    for i, f in enumerate(catalog.FIGURES, 1):
        assert f"[{i}/{n}] {f.name}" in text
        for suffix in ("png", "pdf"):
            path = out / f"{f.name}.{suffix}"
            assert path.is_file() and str(path) in text
        copy = small / f"{f.name}.png"
        assert copy.read_bytes()[:4] == b"\x89PNG" and copy.stat().st_size <= 150_000


# ----------------------------------------------------------------------------- missing runs


@pytest.mark.parametrize("fig", catalog.FIGURES, ids=catalog.NAMES)
def test_missing_run_says_which_run_and_how_to_make_it(fig, tmp_path):
    module = importlib.import_module(f"paper_figures.{fig.name}")
    missing = tmp_path / f"{fig.experiment}-quick"
    with pytest.raises(runs.MissingRunError) as e:
        module.draw(missing, tmp_path / "out")
    msg = str(e.value)
    assert f"figure {fig.name!r}" in msg and f"run {fig.experiment!r}" in msg
    assert "does not exist" in msg
    assert f"dyntheory run {fig.experiment} --preset quick --out {missing}" in msg
    assert not (tmp_path / "out").exists()


def test_incomplete_run_names_the_missing_file(tiny_runs, tmp_path):
    run = tmp_path / "dynamics-tiny"
    shutil.copytree(tiny_runs / "dynamics-tiny", run)
    (run / "gd" / "probes.npz").unlink()
    from paper_figures import spectrum

    with pytest.raises(runs.MissingRunError) as e:
        spectrum.draw(run, tmp_path / "out")
    msg = str(e.value)
    assert "gd/probes.npz" in msg and str(run / "gd" / "probes.npz") in msg
    assert f"dyntheory run dynamics --preset tiny --out {run}" in msg
    assert f"dyntheory resume {run}" in msg


def test_results_without_a_key_are_reported(tiny_runs, tmp_path):
    run = tmp_path / "pinn-tiny"
    shutil.copytree(tiny_runs / "pinn-tiny", run)
    res = json.loads((run / "results.json").read_text())
    del res["curves"]
    (run / "results.json").write_text(json.dumps(res))
    from paper_figures import pinn

    with pytest.raises(runs.MissingRunError, match="results.json without 'curves'"):
        pinn.draw(run, tmp_path / "out")


def test_command_without_runs_reports_the_commands(tmp_path, capsys):
    empty = tmp_path / "runs"
    status = cli.main(
        ["figures"] + ["--runs", str(empty), "--out", str(tmp_path / "f"), "--no-run"]
    )
    err = capsys.readouterr().err
    assert status == 2
    for exp in EXPERIMENTS:
        assert f"dyntheory run {exp} --preset quick --out {empty / f'{exp}-quick'}" in err


def test_figures_runs_only_the_missing_experiments(tiny_runs, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(tiny_runs / "dynamics-tiny", root / "dynamics-tiny")
    (root / "pinn-tiny").mkdir()  # empty: counts as missing
    calls = []

    def fake_run(exp, preset, overrides, path):
        calls.append((exp, preset, path))
        shutil.copytree(tiny_runs / f"{exp}-tiny", path, dirs_exist_ok=True)

    monkeypatch.setattr(figures_cli.experiments, "run_experiment", fake_run)
    lines = []
    figures_cli.produce_missing(catalog, root, "tiny", ["spectrum", "pinn"], log=lines.append)
    written = catalog.draw_all(root, tmp_path / "f", "tiny", only=["spectrum", "pinn"])
    assert calls == [("pinn", "tiny", root / "pinn-tiny")]
    assert set(written) == {"spectrum", "pinn"}
    assert any(
        "pinn-tiny is missing; running `dyntheory run pinn --preset tiny" in s for s in lines
    )


def test_figures_lists_the_runs_it_needs_and_does_not_wait_without_a_terminal(
    tmp_path, capsys, monkeypatch
):
    calls = []
    monkeypatch.setattr(figures_cli.experiments, "run_experiment", lambda *a: calls.append(a))
    argv = ["figures", "--runs", str(tmp_path), "--preset", "tiny", "--only", "spectrum", "pinn"]
    assert cli.main(argv) == 2  # pytest's stdin is no terminal: refuse, do not hang
    out, err = capsys.readouterr()
    assert f"dyntheory run dynamics --preset tiny --out {tmp_path / 'dynamics-tiny'}" in out
    assert "smoke" in out or "s)" in out  # each run's preset description (its expected time)
    assert "pass --yes" in err and len(err.strip().splitlines()) == 1 and calls == []

    class Terminal:
        def isatty(self):
            return True

    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    planned = figures_cli.plan(catalog, tmp_path, "tiny", ["pinn"])
    assert not figures_cli.confirm(planned, "tiny", yes=False, log=lambda s: None, stdin=Terminal())
    assert figures_cli.confirm(planned, "tiny", yes=True, log=lambda s: None)


def test_a_figure_from_a_run_that_is_not_its_preset_says_so(tiny_runs, tmp_path, monkeypatch):
    run = tmp_path / "pinn-quick"
    shutil.copytree(tiny_runs / "pinn-tiny", run)
    assert catalog.provenance(tiny_runs / "pinn-tiny", "tiny") is None
    stamp = catalog.provenance(run, "quick")
    assert "preset 'tiny'" in stamp and "not the 'quick' preset" in stamp
    texts = []
    save = style.save

    def spy(figure, out_dir, name, dpi=None):
        paths = save(figure, out_dir, name, dpi)
        texts.extend(t.get_text() for t in figure.texts)
        return paths

    monkeypatch.setattr(style, "save", spy)
    lines = []
    catalog.draw_all(tmp_path, tmp_path / "f", "quick", only=["pinn"], log=lines.append)
    assert stamp in texts and any(stamp in s for s in lines)


def test_missing_run_with_a_bad_preset_fails_cleanly(tmp_path, capsys):
    argv = ["figures", "--runs", str(tmp_path), "--preset", "nope", "--only", "spectrum"]
    assert cli.main(argv) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "dynamics-nope" / "metrics.jsonl").exists()


def test_unknown_figure_and_list(capsys):
    assert cli.main(["figures", "--only", "nope", "--no-run"]) == 2
    assert "unknown figure(s) nope" in capsys.readouterr().err
    assert cli.main(["figures", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in catalog.NAMES)


def test_library_does_not_import_paper_figures_statically():
    source = inspect.getsource(figures_cli)
    assert "import paper_figures" not in source and "from paper_figures" not in source
