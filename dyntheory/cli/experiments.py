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

The module docstring's first line is the description ``dyntheory list`` shows.
``experiments/toy_regression`` is the template.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from dyntheory.engine import config as config_lib
from dyntheory.engine import resume, rundir, sharding

EXPERIMENTS_GROUP = "dyntheory.experiments"


class CLIError(Exception):
    """An error to print without a traceback (exit status 2)."""


# ----------------------------------------------------------------------------- experiments


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=EXPERIMENTS_GROUP)}


def experiment_names() -> list[str]:
    """The experiments installed as ``dyntheory.experiments`` entry points, sorted."""
    return sorted(_entry_points())


def load_experiment(name: str) -> ModuleType:
    """The experiment module registered as ``name``; :class:`CLIError` if unknown or incomplete."""
    eps = _entry_points()
    if name not in eps:
        raise CLIError(
            f"unknown experiment {name!r}; available: {', '.join(sorted(eps)) or 'none'} "
            f"(experiments are entry points of the group {EXPERIMENTS_GROUP!r})."
        )
    module = eps[name].load()
    missing = [a for a in ("Config", "PRESETS", "run") if not hasattr(module, a)]
    if missing:
        raise CLIError(f"experiment {name!r} does not define {', '.join(missing)}.")
    return module


def describe(module: ModuleType) -> str:
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


def default_preset(module: ModuleType) -> str:
    presets = module.PRESETS
    return getattr(module, "DEFAULT_PRESET", "quick" if "quick" in presets else next(iter(presets)))


def resolve_config(module: ModuleType, preset: str | None, overrides: Sequence[str]):
    preset = preset or default_preset(module)
    if preset not in module.PRESETS:
        raise CLIError(
            f"unknown preset {preset!r} for {module.__name__.split('.')[-1]}; "
            f"available: {', '.join(module.PRESETS)}."
        )
    return preset, config_lib.apply_overrides(module.PRESETS[preset].config, overrides)


def execute(module: ModuleType, cfg, run_dir: rundir.RunDir) -> dict[str, Any]:
    """Run an experiment into ``run_dir`` and write ``results.json``."""
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

    The run directory is locked for the whole run (:meth:`RunDir.lock`). If the run fails before
    it has written any metrics or checkpoint (a bad input found late), what this call wrote is
    removed again, so the corrected command runs without ``--force``.
    """
    module = load_experiment(name)
    preset, cfg = resolve_config(module, preset, overrides)
    path = Path(out or Path("runs") / f"{name}-{preset}")
    main = sharding.is_main_process()
    existed = path.exists()
    run_dir = rundir.RunDir(path)
    try:
        with run_dir.lock():
            return run_dir, _run_locked(module, name, preset, overrides, cfg, run_dir, force)
    except BaseException:
        if (
            main
            and not existed
            and path.is_dir()
            and all(p.name == rundir.LOCK for p in path.iterdir())
        ):
            shutil.rmtree(path)  # the directory this call created, holding only its lock file
        raise


def _run_locked(module, name, preset, overrides, cfg, run_dir: rundir.RunDir, force: bool):
    main = sharding.is_main_process()
    error = None
    if main and run_dir.has_run() and not force:
        error = CLIError(
            f"{run_dir.path} already holds a run; continue it with `dyntheory resume "
            f"{run_dir.path}`, or pass --force to start over, or --out another directory."
        )
    sharding.agree(error)
    if main and force:
        run_dir.clear()
    fresh = main and not any(p.name != rundir.LOCK for p in run_dir.path.iterdir())
    if main:
        run_dir.write_config(
            {
                "experiment": name,
                "preset": preset,
                "overrides": list(overrides),
                "config": config_lib.to_dict(cfg),
            }
        )
    try:
        return execute(module, cfg, run_dir)
    except BaseException:
        if main and not run_dir.has_run():  # nothing to resume: leave no trace
            if fresh:
                run_dir.clear()
            else:
                run_dir.file(rundir.CONFIG).unlink(missing_ok=True)
        raise


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


def resume_experiment(
    path: str | Path, overrides: Sequence[str] = ()
) -> tuple[rundir.RunDir, dict]:
    """``dyntheory resume`` as a function.

    Overrides are checked against the saved config before anything is written: only resumable
    keys (:func:`dyntheory.engine.resume.resumable_keys`) may change, and the changes are
    printed. If the resumed run then fails before it writes a new checkpoint (``steps`` below the
    latest checkpoint, a NaN right away), ``config.json`` is put back as it was.
    """
    run_dir = rundir.RunDir(path, create=False)
    main = sharding.is_main_process()
    with run_dir.lock():
        saved = run_dir.read_config()
        module = load_experiment(saved["experiment"])
        old = config_lib.from_dict(module.Config, saved["config"])
        cfg = config_lib.apply_overrides(old, overrides)
        changes = check_resume(module, old, cfg)
        run_dir.check_writable()
        if main:
            for key, (a, b) in changes.items():
                print(f"resume: {key}: {a!r} -> {b!r}", file=sys.stderr)
            if not run_dir.has_checkpoint():
                print(
                    f"note: {run_dir.path} has no checkpoint; starting from step 0.",
                    file=sys.stderr,
                )
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
            module = load_experiment(name)
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


def cmd_resume(args) -> int:
    run_dir, results = resume_experiment(args.run_dir, args.overrides)
    _summary(run_dir, results)
    return 0
