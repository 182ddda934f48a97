"""Reading run directories for the figures, and the error a missing or incomplete one raises.

A figure names the experiment whose run it draws and the files it needs inside the run directory
(``results.json``, ``gd/probes.npz``, ...). :func:`require` checks them all before drawing and
raises :class:`MissingRunError` naming the run, the missing file and the exact command that
produces it; :func:`need` does the same for a key missing inside a file (a run written by an
older version of the experiment).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dyntheory.engine import rundir
from dyntheory.probes.history import seed_columns


class MissingRunError(FileNotFoundError):
    """A figure's run directory, or a file or key in it, is missing; the message says how to
    produce it."""


def preset_of(run_dir: Path, experiment: str) -> str:
    """The preset a run directory was (or would be) written with: its ``config.json``, else the
    ``<experiment>-<preset>`` directory name, else ``quick``."""
    try:
        preset = rundir.read_json(run_dir / rundir.CONFIG).get("preset")
    except (OSError, ValueError, AttributeError):
        preset = None
    if isinstance(preset, str) and preset:
        return preset
    prefix = f"{experiment}-"
    return run_dir.name[len(prefix) :] if run_dir.name.startswith(prefix) else "quick"


def run_command(experiment: str, run_dir: str | os.PathLike) -> str:
    """The command that writes ``run_dir`` (``dyntheory run`` with the directory's preset)."""
    run_dir = Path(run_dir)
    return f"dyntheory run {experiment} --preset {preset_of(run_dir, experiment)} --out {run_dir}"


def _message(figure: str, experiment: str, run_dir: Path, what: str) -> str:
    cmd = run_command(experiment, run_dir)
    text = (
        f"figure {figure!r} cannot be drawn: run {experiment!r} at {run_dir} {what}.\n"
        f"  produce it with: {cmd}"
    )
    started = run_dir.is_dir() and any(
        (run_dir / f).exists() for f in (rundir.CONFIG, rundir.METRICS, rundir.CHECKPOINTS)
    )
    if started:
        text += (
            f"\n  (the directory holds an unfinished or older run: continue it with "
            f"`dyntheory resume {run_dir}`, or start over by adding --force to the command)"
        )
    return text


def require(
    run_dir: str | os.PathLike, *, figure: str, experiment: str, files: Iterable[str]
) -> Path:
    """``run_dir`` as a Path, after checking that it and every one of ``files`` exist."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MissingRunError(_message(figure, experiment, run_dir, "does not exist"))
    for name in files:
        if not (run_dir / name).is_file():
            what = f"has no {name} (missing file {run_dir / name})"
            raise MissingRunError(_message(figure, experiment, run_dir, what))
    return run_dir


def need(
    mapping: Mapping[str, Any],
    keys: Iterable[str],
    *,
    where: str,
    figure: str,
    experiment: str,
    run_dir: str | os.PathLike,
) -> None:
    """Check that ``mapping`` (the content of ``where`` in ``run_dir``) holds every key."""
    missing = [k for k in keys if k not in mapping]
    if missing:
        what = f"has {where} without {', '.join(repr(k) for k in missing)} (incomplete run)"
        raise MissingRunError(_message(figure, experiment, Path(run_dir), what))


read_json = rundir.read_json  # a run's JSON files, corrupt ones named


def metrics(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A ``metrics.jsonl`` file (or the run directory holding one) as ``{"step": (T,), key:
    (T, S)}`` (a seed axis even for one seed; NaN where a line lacks the key), read by
    :func:`dyntheory.engine.rundir.load_metrics` (a partial last line is skipped)."""
    path = Path(path)
    table = rundir.load_metrics(path if path.is_dir() else path.parent)
    return {k: (v if k == "step" else seed_columns(v)) for k, v in table.items()}


def arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A ``probes.npz`` file (or the run directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / rundir.ARRAYS
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def first_seed(a: np.ndarray, trailing: int = 1) -> np.ndarray:
    """Probe arrays are ``(T, ...)`` or ``(T, S, ...)`` with seeds: the first seed's ``(T, ...)``
    when ``a`` has more than ``1 + trailing`` axes."""
    a = np.asarray(a)
    return a[:, 0] if a.ndim > 1 + trailing else a


def finite_rows(x: np.ndarray, *ys: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows where ``x`` and every column of every ``y`` are finite."""
    ok = np.isfinite(np.asarray(x, float))
    for y in ys:
        y = np.asarray(y, float)
        ok &= np.isfinite(y.reshape(len(y), -1)).all(axis=1)
    return ok


def script(name: str, experiment: str, draw, argv: list[str] | None = None) -> int:
    """Command line of one figure script: ``python -m paper_figures.<name> [RUN_DIR] [--out DIR]``
    (defaults ``runs/<experiment>-quick`` and ``figures``); prints where the files went."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog=f"python -m paper_figures.{name}", description=draw.__doc__)
    p.add_argument("run_dir", nargs="?", default=f"runs/{experiment}-quick")
    p.add_argument("--out", default="figures", help="output directory (default: figures)")
    args = p.parse_args(argv)
    try:
        paths = draw(args.run_dir, args.out)
    except MissingRunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0
