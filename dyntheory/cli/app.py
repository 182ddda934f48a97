"""The ``dyntheory`` command line: the app layer on top of the engine.

    dyntheory list                                    experiments and their presets
    dyntheory run EXPERIMENT [--preset NAME] [--set key=value ...] [--out DIR] [--force]
    dyntheory resume RUN_DIR [--set steps=N ...]
    dyntheory figures ...                             paper figures from run directories
    dyntheory diagnose ...                            trainability at initialization
    dyntheory metrics RUN_DIR ... --keys K,... | --list   logged metrics at chosen steps (a table)
    dyntheory report RUN_DIR [--write PAGE]           results.json as a results-page block

Each subcommand is a module of this package with ``add_arguments(parser)`` and ``handler(args)
-> exit status``: :mod:`~dyntheory.cli.experiments` (list, run, resume),
:mod:`~dyntheory.cli.figures`, :mod:`~dyntheory.cli.diagnose`, :mod:`~dyntheory.cli.metrics`,
:mod:`~dyntheory.cli.report`.
Errors in the user's input (a bad config value, an unknown experiment, an unwritable run
directory) print one line and exit 2; a run stopped by NaN/Inf exits 1. ``DYNTHEORY_DEBUG=1``
shows the traceback instead.

Commands that compute keep compiled programs in a persistent cache, so a second run of the same
shapes skips compilation (:mod:`~dyntheory.cli.compile_cache`: ``$DYNTHEORY_CACHE_DIR``, default
``~/.cache/dyntheory/jax``; off with ``--no-compile-cache`` or ``DYNTHEORY_COMPILE_CACHE=0``).
``dyntheory --help`` and ``dyntheory list`` load no JAX.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from dyntheory.cli import compile_cache, diagnose, experiments, figures, metrics, report
from dyntheory.cli.experiments import (  # re-exported: the Python form of `dyntheory run`
    CLIError,
    load_experiment,
    resume_experiment,
    run_experiment,
)
from dyntheory.engine import config as config_lib


class Command(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]
    jax: bool = True  # False: the handler runs without starting JAX (no devices, no cache)


COMMANDS: dict[str, Command] = {}


def register_command(name: str, help: str, add_arguments, handler, jax: bool = True) -> None:
    """Add a subcommand: ``add_arguments(parser)``, ``handler(args) -> int`` (its exit status);
    ``jax=False`` for a handler that never touches JAX (it then starts faster)."""
    if name in COMMANDS:
        raise ValueError(f"subcommand {name!r} is already taken.")
    COMMANDS[name] = Command(help, add_arguments, handler, jax)


register_command(
    "list", "list experiments and their presets", lambda p: None, experiments.cmd_list, jax=False
)
register_command(
    "run", "run an experiment into a run directory", experiments.add_run, experiments.cmd_run
)
register_command(
    "resume",
    "continue a run from its latest checkpoint",
    experiments.add_resume,
    experiments.cmd_resume,
)
register_command(
    "figures",
    "draw every paper figure from run directories",
    figures.add_arguments,
    figures.handler,
)
register_command(
    "diagnose",
    "trainability diagnostics at initialization",
    diagnose.add_arguments,
    diagnose.handler,
)
register_command(
    "metrics",
    "a run's logged metrics at chosen steps, as a Markdown table",
    metrics.add_arguments,
    metrics.handler,
)
register_command(
    "report",
    "a results-page block (command and numbers) made from a run's results.json",
    report.add_arguments,
    report.handler,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dyntheory", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--no-compile-cache",
        dest="compile_cache",
        action="store_false",
        help="compile from scratch: do not read or write the persistent compilation cache "
        f"({compile_cache.cache_dir()}; also {compile_cache.ENV_SWITCH}=0)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, cmd in COMMANDS.items():
        cmd.add_arguments(sub.add_parser(name, help=cmd.help, description=cmd.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dyntheory`` console script."""
    try:
        code = _command(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()  # here, where a closed pipe is handled, not at the interpreter's exit
        return code
    except BrokenPipeError:
        # the reader of standard output has gone (`dyntheory list | head`): stop quietly, with a
        # closed pipe's usual status, and keep the interpreter from failing again at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not COMMANDS[args.command].jax:
        return _main(args)
    if compile_cache.wanted(args.compile_cache):
        compile_cache.quiet_hits()  # before JAX's C++ loads
    import jax

    # Probes use float64; models and data are float32 by explicit dtypes.
    jax.config.update("jax_enable_x64", True)
    from dyntheory.engine import sharding

    sharding.initialize_distributed()
    if compile_cache.wanted(args.compile_cache):
        compile_cache.enable()
    multi = jax.process_count() > 1
    args.argv = argv
    try:
        code = _main(args)
    except BaseException:
        if not multi:
            raise
        import traceback

        traceback.print_exc()
        code = 1
    if code and multi:
        # A clean exit would tell JAX's coordinator this process finished, and the others would
        # wait in their next collective for ever; exiting at once stops its heartbeat, so they
        # stop with an error after DYNTHEORY_HEARTBEAT_TIMEOUT_S.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(args: argparse.Namespace) -> int:
    from dyntheory.engine import integrity

    command = COMMANDS[args.command]
    non_finite: tuple[type[BaseException], ...] = ()  # a run stopped by NaN/Inf
    bad_input: tuple[type[BaseException], ...] = (
        CLIError,
        config_lib.ConfigError,
        integrity.IntegrityError,
        integrity.CheckpointError,
        FileNotFoundError,
        ValueError,
    )
    try:
        if command.jax:  # these load JAX: not for `dyntheory list`
            from dyntheory.engine import sharding
            from dyntheory.engine.files import RunDirError
            from dyntheory.engine.state import NonFiniteError

            non_finite, bad_input = (NonFiniteError,), (*bad_input, RunDirError)
            # every process of a multi-process run must run the same command (else mismatched
            # collectives abort without saying why): checked before anything else
            sharding.check_same_on_all_processes("command line", getattr(args, "argv", []))
        return int(command.handler(args) or 0)
    except non_finite as e:
        print(f"dyntheory: {e}", file=sys.stderr)
        if e.checkpoint is not None:
            where = getattr(args, "run_dir", None) or getattr(args, "out", None) or "RUN_DIR"
            print(
                f"dyntheory: to continue from step {e.checkpoint} with a changed optimizer "
                f"setting: dyntheory resume {where} --set lr=...",
                file=sys.stderr,
            )
        return 1
    except bad_input as e:
        # Bad inputs found before any compute: config values, batch size vs devices, a missing
        # dataset file, an unwritable run directory. DYNTHEORY_DEBUG=1 shows the traceback.
        if os.environ.get("DYNTHEORY_DEBUG"):
            raise
        print(f"dyntheory: error: {e}", file=sys.stderr)
        return 2


__all__ = [
    "COMMANDS",
    "CLIError",
    "build_parser",
    "load_experiment",
    "main",
    "register_command",
    "resume_experiment",
    "run_experiment",
]

if __name__ == "__main__":
    sys.exit(main())
