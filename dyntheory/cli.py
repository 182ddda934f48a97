"""The ``dyntheory`` command line.

    dyntheory list                                    experiments and their presets
    dyntheory run EXPERIMENT [--preset NAME] [--set key=value ...] [--out DIR] [--force]
    dyntheory resume RUN_DIR [--set steps=N ...]
    dyntheory figures ... / dyntheory diagnose ...    (plug-in subcommands, see below)

**Experiments** are found at run time: every sub-package of the top-level ``experiments``
package (imported with :mod:`importlib`; the library never imports it statically) that defines

- ``Config``: a frozen dataclass (usually subclassing :class:`dyntheory.config.TrainConfig`);
- ``PRESETS``: ``{name: dyntheory.config.Preset(config, "one-line description")}``, and
  optionally ``DEFAULT_PRESET`` (else ``"quick"`` if present, else the first);
- ``run(cfg, run_dir: dyntheory.io.RunDir) -> dict``: trains (via :func:`dyntheory.train.fit`
  with ``run_dir=run_dir``, which resumes by itself) and returns the headline numbers, which the
  CLI writes to ``results.json``.

The package docstring's first line is the description ``dyntheory list`` shows.
``experiments/toy_regression`` is the template.

**Subcommands** live in a registry: :data:`PLUGINS` maps a name to ``"module:function"`` and a
one-line help; the module is imported only when its subcommand runs and ``function(argv) -> int``
gets the remaining arguments (it parses its own, so ``dyntheory figures --help`` is its help).
To add one, add a line to :data:`PLUGINS` (``figures`` and ``diagnose`` are reserved there).
In-process commands with arguments parsed here use :func:`register_command`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

from dyntheory import config as config_lib
from dyntheory import io

EXPERIMENTS_PACKAGE = "experiments"

# name -> ("module:function", help). function(argv: list[str]) -> int exit status.
PLUGINS: dict[str, tuple[str, str]] = {
    "figures": ("dyntheory.figures_cli:main", "draw every paper figure from run directories"),
    "diagnose": ("dyntheory.diagnostics_cli:main", "trainability diagnostics at initialization"),
}


class Command(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def register_command(name: str, help: str, add_arguments, handler) -> None:
    """Add an in-process subcommand: ``add_arguments(parser)``, ``handler(args) -> int``."""
    if name in COMMANDS or name in PLUGINS:
        raise ValueError(f"subcommand {name!r} is already taken.")
    COMMANDS[name] = Command(help, add_arguments, handler)


class CLIError(Exception):
    """An error to print without a traceback (exit status 2)."""


# ----------------------------------------------------------------------------- experiments


def experiment_names() -> list[str]:
    try:
        pkg = importlib.import_module(EXPERIMENTS_PACKAGE)
    except ImportError:
        return []
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.ispkg)


def load_experiment(name: str) -> ModuleType:
    names = experiment_names()
    if name not in names:
        raise CLIError(f"unknown experiment {name!r}; available: {', '.join(names) or 'none'}.")
    module = importlib.import_module(f"{EXPERIMENTS_PACKAGE}.{name}")
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


def execute(module: ModuleType, cfg, run_dir: io.RunDir) -> dict[str, Any]:
    """Run an experiment into ``run_dir`` and write ``results.json``."""
    results = module.run(cfg, run_dir)
    if results is not None:
        run_dir.write_results(results)
    return results or {}


def run_experiment(
    name: str,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    force: bool = False,
) -> tuple[io.RunDir, dict]:
    """``dyntheory run`` as a function: returns the run directory and the results."""
    module = load_experiment(name)
    preset, cfg = resolve_config(module, preset, overrides)
    run_dir = io.RunDir(out or Path("runs") / f"{name}-{preset}")
    if run_dir.file(io.METRICS).exists() or run_dir.has_checkpoint():
        if not force:
            raise CLIError(
                f"{run_dir.path} already holds a run; continue it with `dyntheory resume "
                f"{run_dir.path}`, or pass --force to start over, or --out another directory."
            )
        run_dir.reset()
    run_dir.write_config(
        {
            "experiment": name,
            "preset": preset,
            "overrides": list(overrides),
            "config": config_lib.to_dict(cfg),
        }
    )
    return run_dir, execute(module, cfg, run_dir)


def resume_experiment(path: str | Path, overrides: Sequence[str] = ()) -> tuple[io.RunDir, dict]:
    """``dyntheory resume`` as a function."""
    run_dir = io.RunDir(path, create=False)
    saved = run_dir.read_config()
    module = load_experiment(saved["experiment"])
    cfg = config_lib.from_dict(module.Config, saved["config"])
    cfg = config_lib.apply_overrides(cfg, overrides)
    saved["config"] = config_lib.to_dict(cfg)
    saved["overrides"] = list(saved.get("overrides", [])) + list(overrides)
    io.RunDir(path)  # writable?
    run_dir.write_config(saved)
    if not run_dir.has_checkpoint():
        print(f"note: {run_dir.path} has no checkpoint; starting from step 0.", file=sys.stderr)
    return run_dir, execute(module, cfg, run_dir)


# ----------------------------------------------------------------------------- subcommands


def _cmd_list(args) -> int:
    names = experiment_names()
    if not names:
        print("no experiments found (is the `experiments` package importable?)")
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


def _summary(run_dir: io.RunDir, results: dict) -> None:
    print(f"run directory: {run_dir.path}")
    for key, value in list(results.items())[:12]:
        if isinstance(value, int | float | str | bool) or value is None:
            print(f"  {key}: {value}")


def _add_run(p):
    p.add_argument("experiment", help="experiment name (see `dyntheory list`)")
    p.add_argument("--preset", help="preset name (default: the experiment's default)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (repeatable; dotted keys for nested configs)",
    )
    p.add_argument("--out", help="run directory (default: runs/<experiment>-<preset>)")
    p.add_argument("--force", action="store_true", help="start over in an existing run directory")


def _cmd_run(args) -> int:
    run_dir, results = run_experiment(
        args.experiment, args.preset, args.overrides, args.out, args.force
    )
    _summary(run_dir, results)
    return 0


def _add_resume(p):
    p.add_argument("run_dir", help="a run directory written by `dyntheory run`")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. steps=20000 to extend the run",
    )


def _cmd_resume(args) -> int:
    run_dir, results = resume_experiment(args.run_dir, args.overrides)
    _summary(run_dir, results)
    return 0


register_command("list", "list experiments and their presets", lambda p: None, _cmd_list)
register_command("run", "run an experiment into a run directory", _add_run, _cmd_run)
register_command("resume", "continue a run from its latest checkpoint", _add_resume, _cmd_resume)


def _run_plugin(name: str, argv: list[str]) -> int:
    target, _ = PLUGINS[name]
    module_name, _, func = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise CLIError(
                f"`dyntheory {name}` is not available yet ({module_name} not found)."
            ) from None
        raise
    return int(getattr(module, func)(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dyntheory", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, cmd in COMMANDS.items():
        cmd.add_arguments(sub.add_parser(name, help=cmd.help, description=cmd.help))
    for name, (_, help_text) in PLUGINS.items():
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.add_argument("argv", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dyntheory`` console script."""
    import jax

    # Probes use float64; models and data are float32 by explicit dtypes.
    jax.config.update("jax_enable_x64", True)
    from dyntheory import sharding
    from dyntheory.train import NonFiniteError

    sharding.initialize_distributed()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PLUGINS:
        try:
            return _run_plugin(argv[0], argv[1:])
        except CLIError as e:
            print(f"dyntheory: error: {e}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].handler(args)
    except NonFiniteError as e:
        print(f"dyntheory: {e}", file=sys.stderr)
        return 1
    except (CLIError, config_lib.ConfigError, io.RunDirError, FileNotFoundError, ValueError) as e:
        # Bad inputs found before any compute: config values, batch size vs devices, a missing
        # dataset file, an unwritable run directory. DYNTHEORY_DEBUG=1 shows the traceback.
        if os.environ.get("DYNTHEORY_DEBUG"):
            raise
        print(f"dyntheory: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
