"""``dyntheory metrics``: a run's logged metrics at chosen steps, read without writing."""

import pytest

from dyntheory.cli import app as cli
from dyntheory.cli.metrics import MetricsError, table
from dyntheory.engine import rundir


def _run(path, rows):
    rd = rundir.RunDir(path)
    rd.append_metrics(rows)
    return str(path)


@pytest.fixture
def two_runs(tmp_path):
    a = _run(
        tmp_path / "a" / "prm",
        [
            {"step": s, "seed": seed, "test/acc": 0.1 * s + seed, "probe/norms/param/w": 1.0 + s}
            for s in (0, 10, 20)
            for seed in (0, 1, 2)
        ]
        + [{"step": 30, "seed": 0, "test/acc": float("nan")}],
    )
    b = _run(tmp_path / "b" / "prm", [{"step": s, "test/acc": 5.0} for s in (0, 20)])
    return a, b


def test_cells_hold_the_value_at_their_step_and_never_an_earlier_one(two_runs):
    a, _ = two_runs
    lines = table([a], ["test/acc"], steps="0,15,20,30").splitlines()
    assert lines[0] == "| step | test/acc |"
    # median of s/10 + {0, 1, 2}; nothing logged at 15; only a NaN at 30: blank, not step 20's
    assert lines[2:] == ["| 0 | 1 |", "| 15 |  |", "| 20 | 3 |", "| 30 |  |"]
    per = table([a], ["test/acc"], steps="20", per_seed=True).splitlines()
    assert per[2] == "| 20 | 2 / 3 / 4 |"
    every = table([a], ["probe/norms/param/*"], every=5).splitlines()  # 5, 15, 25, 30: dropped
    assert [r.split(" | ")[0].strip("| ") for r in every[2:]] == ["0", "10", "20"]
    assert [r.split(" | ")[1].strip(" |") for r in every[2:]] == ["1", "11", "21"]


def test_list_shows_each_runs_keys(two_runs, capsys):
    a, b = two_runs
    assert cli.main(["metrics", a, b, "--list"]) == 0
    out = capsys.readouterr().out
    assert "probe/norms/param/w  (3 steps, steps 0..20)" in out
    assert "test/acc  (3 steps, steps 0..20)" in out  # the NaN at 30 is not a value
    assert f"{b}: 2 logged steps, 0..20" in out
    assert cli.main(["metrics", a]) == 2
    assert "--list" in capsys.readouterr().err


def test_columns_from_several_runs_and_patterns(two_runs):
    a, b = two_runs
    head, _, *rows = table([a, b], ["test/acc", "probe/*"], steps="0,10").splitlines()
    assert head == "| step | a/prm: test/acc | a/prm: probe/norms/param/w | b/prm: test/acc |"
    assert rows[1] == "| 10 | 2 | 11 |  |"  # b logged steps 0 and 20 only


def test_bad_inputs_are_named_and_nothing_is_written(two_runs, tmp_path, capsys):
    a, b = two_runs
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    with pytest.raises(MetricsError, match="no run has a metric matching 'grad/\\*'"):
        table([a, b], ["grad/*"])
    with pytest.raises(MetricsError, match="has no metrics.jsonl"):
        table([str(tmp_path / "a")], ["test/acc"])
    with pytest.raises(MetricsError, match="--steps takes integers"):
        table([a], ["test/acc"], steps="0,x")
    with pytest.raises(MetricsError, match="--every must be >= 1"):
        table([a], ["test/acc"], every=0)
    assert cli.main(["metrics", a, "--keys", "nope"]) == 2
    assert "no run has a metric matching 'nope'" in capsys.readouterr().err
    assert cli.main(["metrics", a, "--keys", "test/acc", "--steps", "20"]) == 0
    assert "| 20 | 3 |" in capsys.readouterr().out
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before
