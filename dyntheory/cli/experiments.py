"""``dyntheory list | run | resume``: experiments found by entry point, run into run directories.

    dyntheory list                                    experiments and their presets
    dyntheory run EXPERIMENT [--preset NAME] [--set key=value ...] [--out DIR] [--force]
    dyntheory resume RUN_DIR [--set steps=N ...]

**Experiments** are plug-ins declared as entry points of the group ``dyntheory.experiments``
(``pyproject.toml``: ``[project.entry-points."dyntheory.experiments"] name = "package.module"``),
so this library names none of them. An experiment module defines

- ``Config``: a frozen dataclass that composes the engine's
  :class:`dyntheory.engine.config.TrainConfig` as its ``train`` field;
- ``PRESETS``: ``{name: dyntheory.engine.config.Preset(config, "one-line description")}``, and
  optionally ``DEFAULT_PRESET`` (else ``"quick"`` if present, else the first);
- ``run(cfg, run_dir: dyntheory.engine.rundir.RunDir) -> dict``: trains (via
  :func:`dyntheory.engine.fit` with ``run_dir=``, which resumes by itself) and returns the
  headline numbers, which the CLI writes to ``results.json``.

The module docstring's first line is the description ``dyntheory list`` shows. ``list`` reads
``Config`` and ``PRESETS`` only, so a package whose config is plain Python and whose ``run``
loads on first access (a module ``__getattr__``) is listed without loading JAX.
``experiments/toy_regression`` is the template.

**A new experiment is one file.** ``dyntheory run path/to/my_experiment.py`` (or a dotted module
name on ``sys.path``, ``dyntheory run mypackage.my_experiment``) loads a module with the same three
names, with no entry point and no reinstall; ``docs/examples/width_sweep.py`` is the example.
Its run directory records the file's absolute path, so ``dyntheory resume`` finds it again.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from dyntheory.cli.loading import (  # re-exported: the experiment as the commands find it
    EXPERIMENTS_GROUP,
    CLIError,
    default_preset,
    describe,
    experiment_id,
    experiment_names,
    load_experiment,
    load_presets,
    resolve_config,
    saved_config,
    short_name,
)
from dyntheory.engine import config as config_lib
from dyntheory.engine import integrity, owned, resume

if TYPE_CHECKING:
    from dyntheory.engine import rundir

# rundir and sharding load JAX: they are imported where a command computes, so that building the
# parser and `dyntheory list` do not (integrity and owned are plain Python).


def execute(module: ModuleType, cfg, run_dir: rundir.RunDir) -> dict[str, Any]:
    """Run an experiment into ``run_dir`` and write ``results.json``."""
    from dyntheory.engine import sharding

    results = module.run(cfg, run_dir)
    if results is not None and sharding.is_main_process():
        run_dir.write_results(results)
    return results or {}


def run_experiment(
    name: str,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    force: bool = False,
) -> tuple[rundir.RunDir, dict]:
    """``dyntheory run`` as a function: returns the run directory and the results.

    The lock is taken first, before anything in the directory is read (:meth:`RunDir.lock`),
    and held for the whole run. dyntheory deletes only what it wrote
    (:mod:`dyntheory.engine.owned`): ``force`` clears a run directory, and refuses one that holds
    anything foreign, naming it; a run refuses to overwrite a foreign file of a run's own names.
    If the run fails before it has written any metrics or checkpoint (a bad input found late),
    what this call created is removed and what it replaced is put back, so the directory is as
    it was and the corrected command runs without ``force``.
    """
    from dyntheory.engine import rundir, sharding

    module = load_experiment(name)
    preset, cfg = resolve_config(module, preset, overrides)
    sharding.check_same_on_all_processes("the resolved config", config_lib.to_dict(cfg))
    path = Path(out or Path("runs") / f"{short_name(name)}-{preset}")
    main = sharding.is_main_process()
    existed = path.exists()
    had_lock = (path / rundir.LOCK).exists()
    run_dir = rundir.RunDir(path, check=False)
    try:
        with run_dir.lock():
            return run_dir, _run_locked(module, name, preset, overrides, cfg, run_dir, force)
    except BaseException:
        left = {p.name for p in path.iterdir()} if main and path.is_dir() else {"?"}
        if not existed and left <= {rundir.LOCK, rundir.MARKER}:
            shutil.rmtree(path)  # the directory this call created, holding only its own files
        elif existed and not had_lock and rundir.MARKER not in left:
            (path / rundir.LOCK).unlink(missing_ok=True)  # the lock file this call created
        raise


def _run_locked(module, name, preset, overrides, cfg, run_dir: rundir.RunDir, force: bool):
    from dyntheory.engine import rundir, sharding

    main = sharding.is_main_process()
    error = None
    if main:
        owned.remove_leftovers(run_dir.path)
        run_dir.check_writable()
        error = _refusal(run_dir, force)
    sharding.agree(error)
    if main and force:
        run_dir.clear()
    before = {p.name for p in run_dir.path.iterdir()} if main else set()
    config_path = run_dir.file(rundir.CONFIG)
    old_config = config_path.read_bytes() if main and config_path.is_file() else None
    if main:
        owned.mark(run_dir.path)
        run_dir.write_config(
            {
                "experiment": experiment_id(name),
                "preset": preset,
                "overrides": list(overrides),
                "config": config_lib.to_dict(cfg),
            }
        )
    try:
        return execute(module, cfg, run_dir)
    except BaseException:
        if main and not run_dir.has_run():  # nothing to resume: leave the directory as it was
            created = owned.written(run_dir.path) - before
            owned.remove(run_dir.path, created)
            if old_config is not None:
                rundir.write_bytes(config_path, old_config)
            if rundir.MARKER not in before:
                run_dir.file(rundir.MARKER).unlink(missing_ok=True)
        raise


def _refusal(run_dir: rundir.RunDir, force: bool) -> CLIError | None:
    """Why ``dyntheory run`` may not write into ``run_dir`` (``None``: it may)."""
    if force and run_dir.foreign() is not None:
        return CLIError(
            f"--force refused: {run_dir.path} is not a dyntheory run directory to clear "
            f"({run_dir.foreign()} was not written by dyntheory); choose another --out."
        )
    if force:
        return None
    if run_dir.has_run():
        return CLIError(
            f"{run_dir.path} already holds a run; continue it with `dyntheory resume "
            f"{run_dir.path}`, or pass --force to start over, or --out another directory."
        )
    clash = owned.collision(run_dir.path)
    if clash is not None:
        return CLIError(
            f"{clash} exists and was not written by dyntheory; a run in {run_dir.path} would "
            "overwrite it. Choose another --out."
        )
    return None


def check_resume(module: ModuleType, old, new) -> dict[str, tuple]:
    """The keys a resume changes; :class:`CLIError` naming the first that may not change."""
    changes = resume.changed_keys(old, new)
    allowed = resume.resumable_keys(new)
    for key, (a, b) in changes.items():
        if key not in allowed:
            name = module.__name__.split(".")[-1]
            raise CLIError(
                f"{key} cannot change on resume ({a!r} -> {b!r}): the checkpoints hold a run with "
                f"{key}={a!r}. Keys {name} can resume with changed: {', '.join(allowed)}. "
                f"For another {key}, start a new run (dyntheory run {name} --out NEW_DIR)."
            )
    return changes


def engine_dirs(path: Path) -> list[Path]:
    """The engine run directories at and below ``path`` (those with metrics or checkpoints)."""
    found = {p.parent for p in path.glob(f"**/{owned.METRICS}")}
    found |= {p.parent for p in path.glob(f"**/{owned.CHECKPOINTS}") if p.is_dir()}
    return sorted(found)


def _check_integrity(run_dir: rundir.RunDir, saved: dict) -> None:
    """Every engine run directory of ``run_dir`` can resume under the policy in force, or a
    :class:`CLIError` that names what is wrong and the explicit ways on."""
    from dyntheory.engine import sharding

    errors, notes, mismatch, error = [], [], False, None
    main = sharding.is_main_process()
    for d in engine_dirs(run_dir.path) if main else ():  # only it reads the run directory
        try:
            notes += integrity.plan(d).notes
        except integrity.IntegrityError as e:
            errors.append(str(e))
            mismatch |= not e.no_checkpoint
    if errors:
        preset = saved.get("preset")
        again = f"dyntheory run {saved['experiment']}" + (f" --preset {preset}" if preset else "")
        again += "".join(f" --set {o}" for o in saved.get("overrides", []))
        ways = (
            f"`dyntheory resume {run_dir.path} --rebuild` continues from the latest checkpoint "
            "and rebuilds the named files from there; `--truncate` goes back to the newest "
            "checkpoint every file covers; "
            if mismatch
            else ""
        )
        error = CLIError(
            f"cannot resume {run_dir.path}: {'; '.join(errors)}. Nothing was changed. {ways}"
            f"`{again} --out {run_dir.path} --force` deletes what the run wrote and starts over."
        )
    sharding.agree(error)
    integrity.say(notes)


def resume_experiment(
    path: str | Path, overrides: Sequence[str] = (), policy: str = "strict"
) -> tuple[rundir.RunDir, dict]:
    """``dyntheory resume`` as a function.

    The lock comes first. Overrides are checked against the saved config, and the run files
    against the checkpoints (:mod:`dyntheory.engine.integrity`, under ``policy``), before
    anything is written: only resumable keys (:func:`dyntheory.engine.resume.resumable_keys`)
    may change, and the changes are printed; a run without a usable checkpoint is refused, never
    started over. If the resumed run then fails before it writes a new checkpoint (``steps``
    below the latest checkpoint, a NaN right away), ``config.json`` is put back as it was.
    """
    from dyntheory.engine import rundir, sharding

    run_dir = rundir.RunDir(path, create=False)
    main = sharding.is_main_process()
    with run_dir.lock(), integrity.policy(policy):
        saved = run_dir.read_config()
        sharding.check_same_on_all_processes("the saved config", saved)
        module = load_experiment(saved["experiment"])
        old = saved_config(module, saved, run_dir.path)
        cfg = config_lib.apply_overrides(old, overrides)
        changes = check_resume(module, old, cfg)
        run_dir.check_writable()
        _check_integrity(run_dir, saved)
        if main:
            owned.remove_leftovers(run_dir.path)
            for key, (a, b) in changes.items():
                print(f"resume: {key}: {a!r} -> {b!r}", file=sys.stderr)
        before = run_dir.checkpoint_steps()
        text = run_dir.file(rundir.CONFIG).read_bytes()
        if main:
            saved["config"] = config_lib.to_dict(cfg)
            saved["overrides"] = list(saved.get("overrides", [])) + list(overrides)
            run_dir.write_config(saved)
        try:
            return run_dir, execute(module, cfg, run_dir)
        except BaseException:
            if main and run_dir.checkpoint_steps() == before:  # no progress: as it was
                rundir.write_bytes(run_dir.file(rundir.CONFIG), text)
            raise


# ----------------------------------------------------------------------------- subcommands


def cmd_list(args) -> int:
    names = experiment_names()
    if not names:
        print(
            f"no experiments found: none is installed as an entry point of {EXPERIMENTS_GROUP!r}"
            " (pip install -e . in the repository registers them)."
        )
    for name in names:
        try:
            module = load_presets(name)
        except Exception as e:  # a broken experiment must not hide the others
            print(f"{name}\n    (cannot load: {type(e).__name__}: {e})")
            continue
        print(f"{name}: {describe(module)}")
        default = default_preset(module)
        for preset, p in module.PRESETS.items():
            mark = " (default)" if preset == default else ""
            print(f"    --preset {preset}{mark}: {p.description}")
    return 0


def _summary(run_dir: rundir.RunDir, results: dict) -> None:
    from dyntheory.engine import sharding

    if not sharding.is_main_process():
        return
    print(f"run directory: {run_dir.path}")
    for key, value in list(results.items())[:12]:
        if isinstance(value, int | float | str | bool) or value is None:
            print(f"  {key}: {value}")


def add_run(p):
    p.add_argument("experiment", help="experiment name (see `dyntheory list`)")
    p.add_argument("--preset", help="preset name (default: the experiment's default)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (repeatable; dotted keys for nested configs; a comma list "
        "of optimizer numbers, lr=1e-3,3e-3, is a grid)",
    )
    p.add_argument(
        "--grid",
        dest="overrides",
        action="append",
        metavar="KEY=V1,V2,...",
        help="a grid axis of optimizer numbers (repeatable: the cartesian product), e.g. "
        "--grid lr=1e-3,3e-3 --grid prm_alpha=0.1,1; every cell trains in one compiled program "
        "and lands in its own sub-run",
    )
    p.add_argument("--out", help="run directory (default: runs/<experiment>-<preset>)")
    p.add_argument("--force", action="store_true", help="start over in an existing run directory")


def cmd_run(args) -> int:
    run_dir, results = run_experiment(
        args.experiment, args.preset, args.overrides, args.out, args.force
    )
    _summary(run_dir, results)
    return 0


def add_resume(p):
    p.add_argument("run_dir", help="a run directory written by `dyntheory run`")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. steps=20000 to extend the run",
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--rebuild",
        dest="policy",
        action="store_const",
        const="rebuild",
        default="strict",
        help="a run file is missing or short: continue from the latest checkpoint anyway and "
        "rebuild the file from there (the steps before it stay missing from it)",
    )
    how.add_argument(
        "--truncate",
        dest="policy",
        action="store_const",
        const="truncate",
        help="a run file is missing or short: go back to the newest checkpoint that every file "
        "covers and recompute from there",
    )


def cmd_resume(args) -> int:
    run_dir, results = resume_experiment(args.run_dir, args.overrides, args.policy)
    _summary(run_dir, results)
    return 0
