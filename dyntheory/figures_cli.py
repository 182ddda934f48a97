"""``dyntheory figures``: regenerate every paper figure from run directories.

    dyntheory figures [--runs DIR] [--quick | --preset NAME] [--out DIR] [--only NAME ...]
                      [--no-run] [--gallery DIR] [--list]

Figure ``f`` of experiment ``e`` is drawn from ``DIR/e-PRESET`` (default ``runs/e-quick``) into
``--out`` (default ``figures/``) as ``f.png`` and ``f.pdf``. A run directory that is missing is
first produced with ``dyntheory run e --preset PRESET --out DIR/e-PRESET`` (``--no-run``: report
it instead); one that exists but lacks a file is never touched: the figure says which file is
missing and the command that produces it. One progress line per run and per figure.

The figures live in the top-level ``paper_figures`` package, which the library never imports
statically: :func:`handler` loads it with :mod:`importlib`. :func:`add_arguments` and
:func:`handler` follow ``dyntheory.cli``'s subcommand interface; :func:`main` (``argv -> exit
status``) is the plug-in entry.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

FIGURES_PACKAGE = "paper_figures"


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
    catalog = importlib.import_module(f"{FIGURES_PACKAGE}.catalog")
    runs = importlib.import_module(f"{FIGURES_PACKAGE}.runs")
    preset = "quick" if args.quick or args.preset is None else args.preset
    if args.list:
        for f in catalog.FIGURES:
            print(f"{f.name:16s} {f.experiment:15s} {f.what}")
        return 0
    t0 = time.perf_counter()
    try:
        written = catalog.draw_all(
            args.runs, args.out, preset, run_missing=not args.no_run, only=args.only
        )
    except runs.MissingRunError as e:
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dyntheory figures", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Plug-in entry of ``dyntheory figures``: parse ``argv`` and run :func:`handler`."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
