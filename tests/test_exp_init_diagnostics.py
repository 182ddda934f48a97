"""The init-diagnostics experiment: bracket logic, config validation, a tiny run into tmp_path."""

from __future__ import annotations

import json

import pytest

from dyntheory.engine import rundir
from dyntheory.engine.config import ConfigError, apply_overrides
from experiments.init_diagnostics import PRESETS, Config, run
from experiments.init_diagnostics.run import PREDICTIVE, bound_position, bracket

pytestmark = pytest.mark.one_device  # their runs on one device (tests/conftest.py)


def test_bracket_and_bound_position():
    m = (0.5, 0.9, 1.1, 2.0)
    assert bracket(m, ["fit", "fit", "diverged", "diverged"]) == (0.9, 1.1, False)
    assert bracket(m, ["fit", "not_fit", "fit", "fit"]) == (2.0, None, False)
    assert bracket(m, ["diverged", "fit", "diverged", "diverged"]) == (None, 0.5, True)
    # Unsorted multipliers are sorted with their statuses.
    assert bracket((2.0, 0.5, 1.1), ["diverged", "fit", "fit"]) == (1.1, 2.0, False)
    assert bound_position(0.9, 1.1) == "at"
    assert bound_position(0.5, 0.9) == "below" and bound_position(None, 0.5) == "below"
    assert bound_position(2.0, 3.0) == "above" and bound_position(4.0, None) == "above"


def test_config_validation():
    cfg = PRESETS["quick"].config
    assert 0.5 in cfg.all_multipliers() and list(cfg.all_multipliers()) == sorted(
        cfg.all_multipliers()
    )
    assert apply_overrides(cfg, ["train_multiplier=0.7"]).all_multipliers()[1] == 0.7
    for bad, match in [
        (["variants=plain,batchnorm"], "unknown variant"),
        (["activations=relu,swoosh"], "unknown activation"),
        (["multipliers=0.5,-1"], "positive"),
        (["depths=0,2"], "depths"),
        (["tol=2"], "tol"),
        (["n=1"], "n must be"),
    ]:
        with pytest.raises(ConfigError, match=match):
            apply_overrides(cfg, bad)


def test_tiny_preset_runs_and_writes_results(tmp_path):
    cfg = PRESETS["tiny"].config
    assert isinstance(cfg, Config)
    results = run(cfg, rundir.RunDir(tmp_path))
    rundir.write_json(tmp_path / "results.json", results)  # what `dyntheory run` does
    back = json.loads((tmp_path / "results.json").read_text())
    rows = back["rows"]
    assert len(rows) == len(cfg.depths) * len(cfg.activations) * len(cfg.variants)
    mults = list(cfg.all_multipliers())
    for r in rows:
        assert r["predicted_max_lr"] > 0 and r["lambda_max"] > 0
        assert [u["multiplier"] for u in r["runs"]] == mults
        for u in r["runs"]:
            assert u["status"] in ("fit", "not_fit", "diverged")
            assert u["lr"] == pytest.approx(u["multiplier"] * r["predicted_max_lr"])
        lo, hi = r["bracket_multipliers"]
        assert r["measured_max_stable_lr"] == [
            None if lo is None else pytest.approx(lo * r["predicted_max_lr"]),
            None if hi is None else pytest.approx(hi * r["predicted_max_lr"]),
        ]
        assert set(r["warnings"]) <= set(PREDICTIVE)
        assert r["trained"] == (r["runs"][mults.index(cfg.train_multiplier)]["status"] == "fit")
        assert r["warnings_match"] == ((not r["warnings"]) == r["trained"])
    s = back["summary"]
    assert s["configs"] == len(rows)
    assert s["bound_below"] + s["bound_at"] + s["bound_above"] == len(rows)
    assert s["warned_and_failed"] + s["warned_and_trained"] + s["unwarned_and_failed"] + s[
        "unwarned_and_trained"
    ] == len(rows)
    assert back["table"].count("\n") == len(rows) + 1
    assert back["activation_nonlinearity"]["identity"] == pytest.approx(0, abs=1e-12)
    from paper_figures import init_diagnostics as figure  # reads results.json only

    png, _ = figure.draw(tmp_path, tmp_path / "fig")
    assert png.stat().st_size > 1000
    reports = json.loads((tmp_path / "reports.json").read_text())
    assert len(reports) == len(rows) and all("ntk" in rep for rep in reports.values())
