"""``dyntheory report``: results blocks made from a run directory, written into a page."""

import json

import pytest

from dyntheory.cli import app as cli
from dyntheory.cli import report
from dyntheory.engine import rundir


def _run_dir(tmp_path, results):
    path = tmp_path / "toy-quick"
    path.mkdir()
    config = {"experiment": "toy_regression", "preset": "quick", "overrides": ["lr=0.1"]}
    (path / rundir.CONFIG).write_text(json.dumps({**config, "config": {}}))
    (path / rundir.RESULTS).write_text(json.dumps(results))
    return path


def test_block_has_the_command_and_every_number(tmp_path):
    path = _run_dir(
        tmp_path,
        {"steps": 2000, "final_test_loss": [0.0612345, 0.07], "opt": {"adamw": {"q": None}}},
    )
    block = report.render(path)
    assert f"dyntheory run toy_regression --preset quick --set lr=0.1 --out {path}" in block
    assert "| `steps` | 2,000 |" in block
    assert "| `final_test_loss` | 0.061234 / 0.07 |" in block
    assert "| `opt/adamw/q` | — |" in block
    assert block.startswith("<!-- results: toy-quick -->")


def test_write_replaces_its_block_and_keeps_the_prose(tmp_path, capsys):
    path = _run_dir(tmp_path, {"loss": 1.0})
    page = tmp_path / "page.md"
    page.write_text("# Toy\n\nVerdict: prose stays.\n")
    assert cli.main(["report", str(path), "--write", str(page)]) == 0
    first = page.read_text()
    assert "Verdict: prose stays." in first and "| `loss` | 1 |" in first
    (path / rundir.RESULTS).write_text(json.dumps({"loss": 0.5}))
    assert cli.main(["report", str(path), "--write", str(page)]) == 0
    text = page.read_text()
    assert "| `loss` | 0.5 |" in text and "| `loss` | 1 |" not in text
    assert text.count("<!-- results: toy-quick -->") == 1 and text.endswith("-->\n")
    capsys.readouterr()


def test_a_directory_without_results_is_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(report.ReportError):
        report.render(tmp_path)
