"""``dyntheory figures``: regenerate every paper figure from run directories.

    dyntheory figures [--runs DIR] [--quick | --preset NAME] [--out DIR] [--only NAME ...]
                      [--no-run] [--gallery DIR] [--list]

Figure ``f`` of experiment ``e`` is drawn from ``DIR/e-PRESET`` (default ``runs/e-quick``) into
``--out`` (default ``figures/``) as ``f.png`` and ``f.pdf``. A run directory that is missing is
first produced with ``dyntheory run e --preset PRESET --out DIR/e-PRESET`` (``--no-run``: report
it instead); one that exists but lacks a file is never touched: the figure says which file is
missing and the command that produces it. One progress line per run and per figure.

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


def produce_missing(catalog, runs, preset: str, only, log=print) -> None:
    """Run ``dyntheory run <experiment> --preset <preset>`` for every missing run directory."""
    needed = list(dict.fromkeys(f.experiment for f in catalog.select(only)))
    for i, exp in enumerate(needed, 1):
        path = catalog.run_dir(runs, exp, preset)
        if not catalog.is_missing(path):
            log(f"run {i}/{len(needed)} {exp}: using {path}")
            continue
        log(
            f"run {i}/{len(needed)} {exp}: {path} is missing; running "
            f"`dyntheory run {exp} --preset {preset} --out {path}`"
        )
        t0 = time.perf_counter()
        experiments.run_experiment(exp, preset, (), path)
        log(f"run {i}/{len(needed)} {exp}: done in {time.perf_counter() - t0:.0f} s")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``figures`` flags."""
    p.add_argument("--runs", default="runs", help="directory of the run directories (default runs)")
    p.add_argument("--out", default="figures", help="output directory (default figures)")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--quick",
        action="store_true",
        help="use (and run if missing) the quick presets: --preset quick",
    )
    which.add_argument(
        "--preset",
        default=None,
        help="preset of the run directories <runs>/<experiment>-<preset> (default quick)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        metavar="FIGURE",
        default=None,
        help="draw only these figures (see --list)",
    )
    p.add_argument(
        "--no-run",
        action="store_true",
        help="do not run experiments whose run directory is missing; report them",
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
    preset = "quick" if args.quick or args.preset is None else args.preset
    if args.list:
        for f in catalog.FIGURES:
            print(f"{f.name:16s} {f.experiment:15s} {f.what}")
        return 0
    t0 = time.perf_counter()
    try:
        if not args.no_run:
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
