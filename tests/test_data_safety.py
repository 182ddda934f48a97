"""dyntheory never loses a user's files: what a hostile user does to run directories.

R below is a finished ``dyntheory run toy_regression --preset tiny`` (checkpoints at 30 and 60),
copied fresh for each test from the session's shared tiny run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dyntheory.cli import app as cli
from dyntheory.engine import integrity, owned, records, rundir
from tests.test_cli_resume import assert_same_run


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def tree(d: Path) -> dict[str, bytes | None]:
    """Every path under ``d`` with its bytes (None for directories); the lock file aside."""
    return {
        str(p.relative_to(d)): None if p.is_dir() else p.read_bytes()
        for p in sorted(d.rglob("*"))
        if p.name != rundir.LOCK
    }


@pytest.fixture
def R(tiny_run, tmp_path, capsys) -> Path:
    out = tmp_path / "R"
    shutil.copytree(tiny_run("toy_regression"), out)
    capsys.readouterr()  # the shared run may have been made just now, in this test's capture
    return out


def one_line(err: str) -> str:
    """The one line of ``err`` beside the 'compiling…' progress line of a run that computes."""
    lines = [x for x in err.strip().splitlines() if not x.startswith("compiling…")]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------- deletes only what it wrote


def test_force_refuses_a_directory_that_is_not_a_run(capsys, tmp_path):
    u = tmp_path / "U"
    (u / "sub").mkdir(parents=True)
    (u / "important.txt").write_text("x\n")
    before = tree(u)
    argv = ["run", "toy_regression", "--preset", "tiny", "--force"]
    code, _, err = run_cli(capsys, *argv, "--out", u)
    assert code == 2
    assert f"{u / 'important.txt'} was not written by dyntheory" in one_line(err)
    assert tree(u) == before and not (u / rundir.LOCK).exists()


def test_force_refuses_a_run_directory_holding_a_foreign_file(capsys, R):
    (R / "checkpoints_notes.md").write_text("mine\n")
    (R / "sub").mkdir()
    before = tree(R)
    argv = ["run", "toy_regression", "--preset", "tiny", "--force"]
    code, _, err = run_cli(capsys, *argv, "--out", R)
    assert code == 2 and f"{R / 'checkpoints_notes.md'} was not written" in one_line(err)
    assert tree(R) == before


def test_a_late_failure_leaves_the_users_files(capsys, tmp_path):
    u2 = tmp_path / "U2"
    u2.mkdir()
    (u2 / rundir.CONFIG).write_text("{}\n")
    before = tree(u2)
    argv = ["run", "toy_regression", "--preset", "tiny", "--set", "batch_size=1000"]
    code, _, err = run_cli(capsys, *argv, "--out", u2)
    assert code == 2 and f"{u2 / rundir.CONFIG} exists and was not written" in one_line(err)
    assert tree(u2) == before and sorted(p.name for p in u2.iterdir()) == [rundir.CONFIG]

    # a directory holding a foreign file of another name: the run starts, fails late, and
    # leaves the directory exactly as it found it
    u3 = tmp_path / "U3"
    u3.mkdir()
    (u3 / "notes.txt").write_text("mine\n")
    before = tree(u3)
    code, _, err = run_cli(capsys, *argv, "--out", u3)
    assert code == 2 and "batch_size=1000" in one_line(err)
    assert tree(u3) == before and sorted(p.name for p in u3.iterdir()) == ["notes.txt"]


# ------------------------------------------------------------ resume never starts over by itself


def test_a_resume_without_checkpoints_refuses_and_changes_nothing(capsys, R):
    shutil.rmtree(R / rundir.CHECKPOINTS)
    before = tree(R)
    code, _, err = run_cli(capsys, "resume", R, "--set", "steps=20000")
    line = one_line(err)
    assert code == 2 and "no checkpoint to resume from" in line
    assert f"--out {R} --force" in line and "starts over" in line  # what --force would do
    assert tree(R) == before


@pytest.mark.parametrize("victim", [rundir.ARRAYS, rundir.METRICS])
def test_a_missing_run_file_is_named_then_rebuilt_or_truncated_on_request(capsys, R, victim):
    whole = rundir.RunDir(R, create=False).read_metrics()
    (R / victim).unlink()
    before = tree(R)
    code, _, err = run_cli(capsys, "resume", R, "--set", "steps=120")
    line = one_line(err)
    assert code == 2 and f"{R / victim} is missing" in line and "steps 0-59" in line
    assert "--rebuild" in line and "--truncate" in line
    assert tree(R) == before

    # --truncate: no checkpoint is covered by the missing file, so it starts over, as asked
    code, _, err = run_cli(capsys, "resume", R, "--truncate")
    assert code == 0, err
    assert "starting over" in err
    again = rundir.RunDir(R, create=False).read_metrics()
    strip = lambda lines: [{k: v for k, v in x.items() if "time" not in k} for x in lines]
    assert strip(again) == strip(whole)


def test_rebuild_continues_from_the_latest_checkpoint(capsys, R):
    (R / rundir.METRICS).unlink()
    code, _, err = run_cli(capsys, "resume", R, "--set", "steps=90", "--rebuild")
    assert code == 0, err
    assert f"{R / rundir.METRICS} is missing" in err and "rebuilding it from step 60 on" in err
    steps = [x["step"] for x in rundir.RunDir(R, create=False).read_metrics()]
    assert steps[0] == 60 and steps[-1] == 90  # what was lost stays lost, and says so


def test_a_short_metrics_file_truncates_to_the_covered_checkpoint(capsys, R, tmp_path):
    full = tmp_path / "full"
    shutil.copytree(R, full)
    lines = (R / rundir.METRICS).read_text().splitlines(keepends=True)
    kept = [x for x in lines if json.loads(x)["step"] < 40]  # covers checkpoint 30, not 60
    (R / rundir.METRICS).write_text("".join(kept))
    code, _, err = run_cli(capsys, "resume", R)
    assert code == 2 and f"{R / rundir.METRICS} is short" in one_line(err)
    code, _, err = run_cli(capsys, "resume", R, "--truncate")
    assert code == 0, err
    assert "from its checkpoint at step 30" in err
    assert_same_run(R, full)


# ------------------------------------------------------------------------ corrupt checkpoints


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(capsys, R, tmp_path):
    whole = tmp_path / "whole"
    shutil.copytree(R, whole)
    data = sorted((R / rundir.CHECKPOINTS / "60" / "state").rglob("d/*"))
    assert data
    for f in data:
        f.write_bytes(np.random.default_rng(0).bytes(300))
    (R / ".probes.npz.0123abcd.tmp").write_bytes(b"left by a kill at a rename")
    code, _, err = run_cli(capsys, "resume", R)
    assert code == 0, err
    assert "checkpoint 60 of" in err and "failed to restore" in err
    assert "trying checkpoint 30" in one_line(err)
    assert "Traceback" in (R / rundir.LOG).read_text()  # the full error is in the log
    assert (R / rundir.CHECKPOINTS / "60.corrupt").is_dir()  # kept for inspection
    assert not (R / ".probes.npz.0123abcd.tmp").exists()  # the leftover of a kill is gone
    assert_same_run(R, whole)  # to the same result as the uninterrupted run


def test_a_checkpoint_without_its_manifest_is_one_line_not_a_traceback(capsys, R):
    (R / rundir.CHECKPOINTS / "60" / "state" / "manifest.ocdbt").unlink()
    code, _, err = run_cli(capsys, "resume", R, "--set", "steps=90")
    assert code == 0
    assert "Event loop is closed" not in err and "Traceback" not in err, err
    assert "checkpoint 60 of" in err and "trying checkpoint 30" in err


def test_no_checkpoint_restores(capsys, R):
    for step in ("30", "60"):
        (R / rundir.CHECKPOINTS / step / "state" / "manifest.ocdbt").unlink()
    code, _, err = run_cli(capsys, "resume", R)
    assert code == 2 and "no checkpoint of" in err and "restores (tried 60, 30" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------- the pieces, directly


def test_ownership_marker_and_legacy_recognition(tmp_path):
    d = tmp_path / "new"
    rd = rundir.RunDir(d)
    assert owned.is_run_dir(d) and owned.written(d) == {rundir.LOCK, rundir.MARKER}
    rd.write_results({"a": 1})
    sub = rundir.RunDir(d / "adamw")
    sub.append_metrics([{"step": 0}])
    assert {rundir.RESULTS, "adamw"} <= owned.written(d)
    assert owned.written(d / "adamw") >= {rundir.METRICS}
    (d / "adamw" / "x.txt").write_text("")
    assert owned.foreign(d) == d / "adamw" / "x.txt"
    with pytest.raises(rundir.RunDirError, match="x.txt was not written by dyntheory"):
        rd.clear()
    (d / "adamw" / "x.txt").unlink()
    rd.clear()
    assert sorted(p.name for p in d.iterdir()) == [rundir.MARKER]

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / rundir.CONFIG).write_text('{"experiment": "toy_regression", "config": {}}')
    (legacy / rundir.METRICS).write_text("")
    assert owned.written(legacy) >= {rundir.CONFIG, rundir.METRICS}
    (legacy / "notes.txt").write_text("")
    assert owned.foreign(legacy) == legacy / "notes.txt"
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / rundir.CONFIG).write_text("{}")
    assert not owned.is_run_dir(plain) and owned.collision(plain) == plain / rundir.CONFIG


def test_a_sub_run_below_a_grouping_directory_is_cleared_by_force(tmp_path):
    # inr and double_descent write <out>/<signal or model>/<arm>: the directory between is
    # dyntheory's too, so a second `run --force` clears it instead of refusing
    d = tmp_path / "run"
    rd = rundir.RunDir(d)
    arm = rundir.subrun_dir(d / "sines1d" / "adamw", {"arm": "adamw"})
    arm.append_metrics([{"step": 0}])
    assert "sines1d" in owned.written(d) and "adamw" in owned.written(d / "sines1d")
    assert owned.foreign(d) is None
    (d / "sines1d" / "notes.txt").write_text("mine")
    assert owned.foreign(d) == d / "sines1d" / "notes.txt"
    (d / "sines1d" / "notes.txt").unlink()
    rd.clear()
    assert sorted(p.name for p in d.iterdir()) == [rundir.MARKER]
    # outside a run directory, the missing parents of a new run are the user's: left unmarked
    deep = tmp_path / "a" / "b" / "run"
    rundir.RunDir(deep)
    assert owned.is_run_dir(deep) and not owned.is_run_dir(tmp_path / "a" / "b")


def test_the_lock_is_taken_before_the_directory_is_read(capsys, tmp_path, monkeypatch):
    d = tmp_path / "toy"
    seen = []
    real = rundir.RunDir.check_writable

    def spy(self):
        seen.append(self.path.resolve() in rundir._LOCKS)
        return real(self)

    monkeypatch.setattr(rundir.RunDir, "check_writable", spy)
    code, _, err = run_cli(
        capsys, "run", "toy_regression", "--preset", "tiny", "--set", "batch_size=1000", "--out", d
    )
    assert code == 2 and seen and all(seen)


def test_run_seconds_add_up_over_resumes():
    history = {
        "time/train_s": np.array([1.0, 5.0]),
        "time/probe_s": np.array([0.0, 2.0]),
        "time/compile_s": np.array([3.0, 6.0]),  # two processes compiled: cumulative
        "time/checkpoint_s": np.array([[0.0, 0.0], [1.0, 0.5]]),  # per seed
    }
    assert records.run_seconds(history) == 5.0 + 2.0 + 6.0 + 1.0
    assert records.run_seconds({}) == 0.0


def test_integrity_policy_is_explicit():
    with pytest.raises(ValueError, match="unknown resume policy"):
        with integrity.policy("yolo"):
            pass
    assert integrity.current_policy() == "strict"
