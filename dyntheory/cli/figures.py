"""``dyntheory figures``: regenerate every paper figure from run directories.

    dyntheory figures [--runs DIR] [--preset NAME] [--out DIR] [--only NAME ...]
                      [--no-run | --yes] [--gallery DIR] [--list]

Figure ``f`` of experiment ``e`` is drawn from ``DIR/e-PRESET`` (default ``runs/e-quick``) into
``--out`` (default ``figures/``) as ``f.png`` and ``f.pdf``. Run directories that are missing are
first listed, each with its command and its preset's description (which states the expected
run time), and produced with ``dyntheory run e --preset PRESET --out DIR/e-PRESET`` once the user
agrees: asked on a terminal, given by ``--yes``; without a terminal on stdin (CI, a pipe) and
without ``--yes`` the command refuses in one line instead of waiting. ``--no-run`` reports the
missing runs instead. A run directory that exists but lacks a file is never touched: the figure
says which file is missing and the command that produces it. A figure drawn from a run whose
preset or overrides differ from ``PRESET`` says so in the figure (the catalogue's ``draw_all``).
One progress line per run and per figure.

The figures are plug-ins: the ``dyntheory.figures`` entry point names a catalogue module (this
repository's ``paper_figures.catalog``) with ``FIGURES`` (``name``, ``experiment``, ``what``),
``select``, ``run_dir``, ``is_missing``, ``draw_all``, ``gallery`` and ``MissingRunError``; the
figures only read run directories, and the runs they need are produced here, through
:func:`dyntheory.cli.experiments.run_experiment`.
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import NamedTuple

from dyntheory.cli import experiments

FIGURES_GROUP = "dyntheory.figures"


def load_catalog():
    """The figure catalogue module registered under the ``dyntheory.figures`` entry point."""
    eps = list(entry_points(group=FIGURES_GROUP))
    if not eps:
        raise experiments.CLIError(
            f"no figure catalogue is installed (entry point group {FIGURES_GROUP!r}); "
            "pip install -e . in the repository registers paper_figures."
        )
    return eps[0].load()


class Planned(NamedTuple):
    experiment: str
    path: Path
    description: str  # the preset's one line, which states its expected run time


def plan(catalog, runs, preset: str, only) -> list[Planned]:
    """The runs ``figures`` would make: one per missing run directory of the selected figures.

    :class:`~dyntheory.cli.experiments.CLIError` if an experiment lacks the preset.
    """
    needed = list(dict.fromkeys(f.experiment for f in catalog.select(only)))
    out = []
    for exp in needed:
        path = Path(catalog.run_dir(runs, exp, preset))
        if not catalog.is_missing(path):
            continue
        module = experiments.load_experiment(exp)
        if preset not in module.PRESETS:
            raise experiments.CLIError(
                f"unknown preset {preset!r} for {exp}; available: {', '.join(module.PRESETS)}."
            )
        out.append(Planned(exp, path, module.PRESETS[preset].description))
    return out


def confirm(planned: list[Planned], preset: str, yes: bool, log=print, stdin=None) -> bool:
    """List the planned runs and return whether to make them: ``yes``, else the user's answer on
    a terminal; :class:`~dyntheory.cli.experiments.CLIError` when there is no terminal to ask."""
    stdin = sys.stdin if stdin is None else stdin
    log(f"{len(planned)} run(s) of preset {preset!r} are missing and would be made first:")
    for p in planned:
        log(f"  dyntheory run {p.experiment} --preset {preset} --out {p.path}")
        log(f"      {p.description}")
    if yes:
        return True
    if not (hasattr(stdin, "isatty") and stdin.isatty()):
        raise experiments.CLIError(
            f"{len(planned)} run(s) are missing (listed above); pass --yes to run them, or "
            "--no-run to draw only from the runs that exist."
        )
    answer = input("Run them now? [y/N] ").strip().lower()
    return answer in ("y", "yes")


def produce_missing(catalog, runs, preset: str, only, log=print) -> None:
    """Run ``dyntheory run <experiment> --preset <preset>`` for every missing run directory."""
    planned = plan(catalog, runs, preset, only)
    for i, p in enumerate(planned, 1):
        log(
            f"run {i}/{len(planned)} {p.experiment}: {p.path} is missing; running "
            f"`dyntheory run {p.experiment} --preset {preset} --out {p.path}`"
        )
        t0 = time.perf_counter()
        experiments.run_experiment(p.experiment, preset, (), p.path)
        log(f"run {i}/{len(planned)} {p.experiment}: done in {time.perf_counter() - t0:.0f} s")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``figures`` flags."""
    p.add_argument("--runs", default="runs", help="directory of the run directories (default runs)")
    p.add_argument("--out", default="figures", help="output directory (default figures)")
    p.add_argument(
        "--preset",
        default="quick",
        help="preset of the run directories <runs>/<experiment>-<preset> (default quick)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        metavar="FIGURE",
        default=None,
        help="draw only these figures (see --list)",
    )
    runs = p.add_mutually_exclusive_group()
    runs.add_argument(
        "--no-run",
        action="store_true",
        help="do not run experiments whose run directory is missing; report them",
    )
    runs.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="run the missing experiments without asking (needed when stdin is not a terminal)",
    )
    p.add_argument(
        "--gallery",
        default=None,
        metavar="DIR",
        help="also write small (<= 150 kB) PNG copies into DIR, e.g. paper_figures/gallery",
    )
    p.add_argument("--list", action="store_true", help="list the figures and their experiments")


def handler(args: argparse.Namespace) -> int:
    """Draw the figures; exit status 0, or 2 if a run or a file was missing."""
    catalog = load_catalog()
    preset = args.preset
    if args.list:
        for f in catalog.FIGURES:
            print(f"{f.name:16s} {f.experiment:15s} {f.what}")
        return 0
    t0 = time.perf_counter()
    try:
        if not args.no_run:
            planned = plan(catalog, args.runs, preset, args.only)
            if planned and not confirm(planned, preset, args.yes):
                print("dyntheory figures: nothing run; --no-run draws from the runs that exist.")
                return 1
            produce_missing(catalog, args.runs, preset, args.only)
        written = catalog.draw_all(args.runs, args.out, preset, only=args.only)
    except catalog.MissingRunError as e:
        print(f"dyntheory figures: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # an unknown figure name
        print(f"dyntheory figures: error: {e}", file=sys.stderr)
        return 2
    if args.gallery:
        for path in catalog.gallery(written, args.gallery):
            print(f"gallery: {path} ({path.stat().st_size // 1000} kB)")
    print(f"{len(written)} figures (PNG + PDF) in {args.out}/ in {time.perf_counter() - t0:.0f} s")
    return 0
