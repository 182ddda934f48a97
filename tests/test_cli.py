"""The dyntheory CLI, typed configs with --set overrides, and the progress bar."""

import dataclasses
import io as stdio
import json
import os
import subprocess
import sys
from typing import Literal

import pytest

from dyntheory.cli import app as cli
from dyntheory.engine import rundir
from dyntheory.engine.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    from_dict,
    keys,
    parse_value,
    replace,
    to_dict,
)
from dyntheory.engine.progress import Progress


@dataclasses.dataclass(frozen=True)
class Inner:
    width: int = 4
    acts: tuple[str, ...] = ("relu",)


@dataclasses.dataclass(frozen=True)
class Outer:
    lr: float = 0.1
    mode: Literal["a", "b"] = "a"
    scale: float | None = None
    flag: bool = False
    model: Inner = Inner()
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError("lr must be positive")


def test_overrides_parse_by_type():
    cfg = apply_overrides(
        Outer(),
        [
            "lr=1e-3",
            "mode=b",
            "scale=none",
            "flag=true",
            "steps=7",
            "model.width=16",
            "model.acts=tanh, gelu",
            "batch_size=32",
        ],
    )
    # engine keys reach the composed TrainConfig, unqualified or as train.<key>
    assert (cfg.lr, cfg.mode, cfg.scale, cfg.flag, cfg.train.steps) == (1e-3, "b", None, True, 7)
    assert cfg.model == Inner(16, ("tanh", "gelu")) and cfg.train.batch_size == 32
    assert apply_overrides(cfg, ["train.steps=9"]).train.steps == 9
    assert apply_overrides(cfg, {"batch_size": "none", "model.acts": ""}).model.acts == ()
    assert parse_value("2", int | None) == 2 and parse_value("3,4", tuple[int, float]) == (3, 4.0)
    assert "model.width" in keys(Outer) and "train.steps" in keys(Outer)
    assert replace(Outer(), steps=3, lr=0.5, model__width=2) == apply_overrides(
        Outer(), ["steps=3", "lr=0.5", "model.width=2"]
    )
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        replace(Outer(), steps=0)
    assert from_dict(Outer, json.loads(json.dumps(to_dict(cfg)))) == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("nope=1", r"unknown config key 'nope' for Outer; allowed keys: lr, .*model\.width"),
        ("lr=fast", r"lr: cannot parse 'fast' as float"),
        ("steps=1.5", r"steps: cannot parse '1.5' as int"),
        ("mode=c", r"mode: 'c' is not one of 'a', 'b'"),
        ("flag=maybe", r"flag: cannot parse 'maybe' as bool"),
        ("model=3", r"'model' is a group; set one of its keys: model\.width, model\.acts"),
        ("model.depth=3", r"unknown config key 'model\.depth' for Inner"),
        ("lr=-1", r"lr=-1: lr must be positive"),
        ("steps=0", r"steps must be >= 1"),
        ("lr", r"not of the form key=value"),
    ],
)
def test_override_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Outer(), [override])


@dataclasses.dataclass(frozen=True)
class Paired:
    a: bool = False
    b: int = 0

    def __post_init__(self):
        if self.a and self.b != 1:
            raise ValueError("a=true needs b=1")


def test_overrides_do_not_depend_on_their_order():
    assert apply_overrides(Paired(), ["a=true", "b=1"]) == Paired(True, 1)
    assert apply_overrides(Paired(), {"b": "1", "a": "true"}) == Paired(True, 1)
    with pytest.raises(ConfigError, match="a=true: a=true needs b=1"):
        apply_overrides(Paired(), ["a=true", "b=2"])
    with pytest.raises(ConfigError, match="unknown config key 'c'"):
        apply_overrides(Paired(), ["c=1", "a=true", "b=1"])


def test_from_dict_is_strict():
    with pytest.raises(ConfigError, match="unknown config key.*extra"):
        from_dict(Outer, {"extra": 1})
    with pytest.raises(ConfigError, match="lr: expected float"):
        from_dict(Outer, {"lr": "x"})


def test_from_dict_names_the_new_spelling_of_a_moved_key():
    """A config saved before the optimizer's numbers moved into an ``optim`` block."""
    from dyntheory.engine.config import MovedKeyError
    from dyntheory.optim.config import OptimizerConfig

    @dataclasses.dataclass(frozen=True)
    class WithOptim:
        width: int = 4
        optim: OptimizerConfig = OptimizerConfig()

    old = {"width": 8, "lr": 0.01, "lrs": [0.1, 0.3], "weight_decay": 0.1}
    with pytest.raises(MovedKeyError) as e:
        from_dict(WithOptim, old)
    assert e.value.moved == {
        "lr": "optim.lr",
        "lrs": "optim.lr",
        "weight_decay": "optim.weight_decay",
    }
    assert "\n" not in str(e.value) and "lr is now optim.lr" in str(e.value)
    # a key of the config itself, or of no group, is not taken for a moved one
    with pytest.raises(ConfigError, match="unknown config key.*extra") as e:
        from_dict(Outer, {"extra": 1})
    assert not isinstance(e.value, MovedKeyError)
    assert from_dict(WithOptim, to_dict(WithOptim())) == WithOptim()


def test_progress_bar():
    out = stdio.StringIO()
    bar = Progress(100, show=True, stream=out, delay=0.0, interval=0.0)
    bar.update(50, {"train/loss": 0.125, "test/acc": 0.5})
    bar.close()
    text = out.getvalue()
    assert "50/100" in text and "ETA" in text and "loss 0.125" in text and "test acc 0.5" in text
    assert "\n" in text  # the bar ends its line when closed
    quiet = stdio.StringIO()  # not a terminal: nothing is drawn
    Progress(100, stream=quiet, delay=0.0).update(50, {"train/loss": 1.0})
    assert quiet.getvalue() == ""


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    assert "toy_regression: Teacher-student MLP regression" in out
    assert "--preset tiny" in out and "--preset quick (default)" in out


def test_list_into_a_reader_that_stops_early_ends_quietly():
    """`dyntheory list | head -1`: a closed pipe stops the listing with status 141 (as it stops
    any command), and no traceback."""
    cmd = [sys.executable, "-c", "from dyntheory.cli.app import main; raise SystemExit(main())"]
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first line is written
    try:
        p = subprocess.run([*cmd, "list"], stdout=write, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(write)
    err = p.stderr.decode()
    assert p.returncode == 141 and "Traceback" not in err and "Exception" not in err, err


def test_run_then_resume_toy_experiment(capsys, tmp_path):
    out_dir = tmp_path / "toy"
    code, out, err = run_cli(
        capsys, "run", "toy_regression", "--preset", "tiny", "--out", str(out_dir)
    )
    assert code == 0, err
    assert f"run directory: {out_dir}" in out
    rd = rundir.RunDir(out_dir, create=False)
    config = rd.read_config()
    assert config["experiment"] == "toy_regression" and config["preset"] == "tiny"
    assert config["config"]["train"]["steps"] == 60
    results = rd.read_results()
    assert results["steps"] == 60 and results["final_train_loss"] < results["final_test_loss"] + 1
    for key in ("ntk_drift", "w_effective_rank", "coupling_corr", "noise_reservoir_fraction"):
        assert results[key] is not None
    stop = results["stopping"]  # the W_S rule (the Dissipation probe ran), not the LOO one
    assert "ws_rule_step" in stop and "loo_rule_step" not in stop
    assert stop["ws_rule_test_loss"] is not None and len(stop["validation_optimal_step"]) == 1
    table = rundir.load_metrics(out_dir)
    assert table["step"][-1] == 60 and "probe/dissipation/w_lambda_max" in table
    assert set(rd.read_arrays()) >= {"ntk/eigenvalues", "ntk/step", "dissipation/w_eigenvalues"}

    code, _, err = run_cli(
        capsys, "run", "toy_regression", "--preset", "tiny", "--out", str(out_dir)
    )
    assert code == 2 and "already holds a run" in err and "dyntheory resume" in err

    code, out, err = run_cli(capsys, "resume", str(out_dir), "--set", "steps=80")
    assert code == 0, err
    assert rd.read_config()["config"]["train"]["steps"] == 80
    assert rd.read_config()["overrides"] == ["steps=80"]
    steps = [line["step"] for line in rd.read_metrics()]
    assert steps == sorted(set(steps)) and steps[-1] == 80 and 60 in steps
    assert rd.checkpointer().latest_step() == 80 and rd.read_results()["steps"] == 80


def test_poprisk_check_through_the_cli(capsys, tmp_path):
    """The poprisk preset's wiring at smoke size: probe and evaluation every step."""
    out_dir = tmp_path / "pr"
    sets = ("n_train=32", "batch_size=8", "steps=24", "seeds=2", "width=16", "n_test=64")
    args = [a for kv in sets for a in ("--set", kv)]
    code, _, err = run_cli(
        capsys, "run", "toy_regression", "--preset", "poprisk", "--out", str(out_dir), *args
    )
    assert code == 0, err
    check = rundir.RunDir(out_dir, create=False).read_results()["poprisk_check"]
    assert len(check) == 2  # one row per seed
    for row in check:
        assert row["steps"] == 24 and row["first_step"] == 0
        assert {"w1", "w10", "before", "after", "sum_predicted"} <= set(row)
        assert "w100" not in row  # 24 // 100 < 2 windows
        assert row["before"]["sum_actual"] + row["after"]["sum_actual"] == pytest.approx(
            row["sum_actual"]
        )
        assert row["w10"]["n_windows"] == 2 and -1 <= row["w1"]["r"] <= 1
    stop = rundir.RunDir(out_dir, create=False).read_results()["stopping"]
    assert len(stop["loo_rule_step"]) == 2 and stop["window"] == 100
    assert all(v is not None for v in stop["loo_rule_test_loss"] + stop["final_test_loss"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "widht=3"], "unknown config key 'widht' for Config; allowed keys: d_in"),
        (["--set", "width=wide"], "width: cannot parse 'wide' as int"),
        (["--set", "probes=ntk,spectra"], "unknown probe"),
        (["--preset", "huge"], "unknown preset 'huge' for toy_regression; available: tiny"),
        (["--set", "batch_size=6"], "batch_size (6 examples) is not divisible by the 8 devices"),
        (["--set", "data_file=/no/such/data.npz"], "data_file '/no/such/data.npz' does not exist"),
    ],
)
def test_run_bad_inputs(capsys, tmp_path, args, message):
    code, _, err = run_cli(
        capsys, "run", "toy_regression", "--preset", "tiny", "--out", str(tmp_path / "r"), *args
    )
    assert code == 2 and message in err
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_cli_errors_and_plugins(capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    code, _, err = run_cli(capsys, "run", "toy_regression", "--out", str(blocker / "run"))
    assert code == 2 and "cannot write to the run directory" in err
    code, _, err = run_cli(capsys, "run", "no_such_experiment")
    assert code == 2 and "unknown experiment 'no_such_experiment'; available:" in err
    code, _, err = run_cli(capsys, "resume", str(tmp_path))
    assert code == 2 and "not a run directory" in err

    assert {"list", "run", "resume", "figures", "diagnose"} <= set(cli.COMMANDS)
    with pytest.raises(ValueError, match="already taken"):
        cli.register_command("figures", "", lambda p: None, lambda a: 0)
