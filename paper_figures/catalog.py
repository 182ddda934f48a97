"""Every paper figure, the run it draws from, and :func:`draw_all` (``dyntheory figures``).

Each figure is a module of this package with ``NAME``, ``EXPERIMENT`` and ``draw(run_dir,
out_dir) -> [png, pdf]``; it reads the run directory ``<runs>/<experiment>-<preset>`` only and
never trains. ``dyntheory figures`` (which finds this module through the ``dyntheory.figures``
entry point) produces a missing run first with ``dyntheory run``; a run directory that exists but
lacks a file a figure needs is never touched: that figure reports what is missing and how to
produce it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from dyntheory.engine import rundir
from paper_figures import (
    coupling,
    double_descent,
    dpo,
    drift_diffusion,
    four_cell,
    grokking,
    init_diagnostics,
    inr,
    pinn,
    scaling_laws,
    spectrum,
    style,
    ws_whole_run,
)
from paper_figures.runs import MissingRunError

__all__ = ["FIGURES", "MissingRunError", "draw_all", "gallery", "is_missing", "run_dir", "select"]


class Figure(NamedTuple):
    name: str  # file stem of the figure and name of its module in paper_figures
    experiment: str  # the experiment whose run directory it reads
    what: str  # one line: what it shows


FIGURES: tuple[Figure, ...] = (
    Figure("grokking", "grokking", "train/test accuracy vs step, AdamW vs PRM, and PRM's gate"),
    Figure("spectrum", "dynamics", "NTK and W_S eigenspectra over training, channel cutoff"),
    Figure("four_cell", "dynamics", "signal/noise × channel/reservoir over training"),
    Figure("coupling", "dynamics", "predicted vs actual test displacement, kernel drift"),
    Figure("drift_diffusion", "dynamics", "accumulated minibatch drift vs noise, log-log slopes"),
    Figure(
        "double_descent", "double_descent", "model- and epoch-wise test error, noise in channel"
    ),
    Figure("scaling_laws", "scaling_laws", "loss vs N and D, fits, CIs, held-out extrapolation"),
    Figure("pinn", "pinn", "PINN relative L2 error vs iteration per optimizer"),
    Figure("inr", "inr", "INR clean PSNR and memorized noise vs iteration per optimizer"),
    Figure(
        "init_diagnostics",
        "init_diagnostics",
        "predicted vs measured GD stability; trained vs linearized loss",
    ),
    Figure("dpo", "dpo", "DPO held-out reward accuracy, drift from the reference, gate"),
    Figure(
        "ws_whole_run",
        "grokking",
        "W_S along the whole run: identity error, spectrum, channel, dissipation",
    ),
)
NAMES = tuple(f.name for f in FIGURES)
MODULES = {
    m.NAME: m
    for m in (
        grokking,
        spectrum,
        four_cell,
        coupling,
        drift_diffusion,
        double_descent,
        scaling_laws,
        pinn,
        inr,
        init_diagnostics,
        dpo,
        ws_whole_run,
    )
}


def select(only: Iterable[str] | None = None) -> list[Figure]:
    """The figures named in ``only`` (all of them for None), in catalogue order."""
    if only is None:
        return list(FIGURES)
    only = list(only)
    unknown = [n for n in only if n not in NAMES]
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}.")
    return [f for f in FIGURES if f.name in only]


def run_dir(runs: str | os.PathLike, experiment: str, preset: str) -> Path:
    """Where ``dyntheory figures`` looks for (and writes) an experiment's run."""
    return Path(runs) / f"{experiment}-{preset}"


def provenance(path: Path, preset: str) -> str | None:
    """How the run at ``path`` differs from the preset ``preset`` its figure stands for (another
    preset, or ``--set`` overrides), as one line for the figure; ``None`` if it does not."""
    try:
        config = rundir.read_json(Path(path) / rundir.CONFIG)
    except (OSError, ValueError):
        return None
    ran, overrides = config.get("preset"), list(config.get("overrides") or [])
    if ran == preset and not overrides:
        return None
    what = f"preset {ran!r}" + (f" with --set {', '.join(overrides)}" if overrides else "")
    return f"drawn from {path}: {what}, not the {preset!r} preset as it stands"


def is_missing(path: Path) -> bool:
    """Absent or empty: nothing was ever run there (an unfinished run is not "missing")."""
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def gallery(
    written: dict[str, list[Path]], dest: str | os.PathLike, max_kb: int = 150
) -> list[Path]:
    """Small copies of the PNGs for the README: 256-colour PNGs, scaled down until each is at
    most ``max_kb`` kB (never below 40 % of the original size)."""
    from PIL import Image

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for files in written.values():
        png = next(p for p in files if p.suffix == ".png")
        with Image.open(png) as img:
            rgb = img.convert("RGB")
        target, scale = dest / png.name, 1.0
        while True:
            size = (round(rgb.width * scale), round(rgb.height * scale))
            small = rgb if scale == 1.0 else rgb.resize(size, Image.Resampling.LANCZOS)
            small.quantize(colors=256).save(target, optimize=True)
            if target.stat().st_size <= max_kb * 1000 or scale < 0.45:
                break
            scale *= 0.85
        out.append(target)
    return out


def draw_all(
    runs: str | os.PathLike = "runs",
    out: str | os.PathLike = "figures",
    preset: str = "quick",
    *,
    only: Iterable[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, list[Path]]:
    """Draw every selected figure from ``<runs>/<experiment>-<preset>`` into ``out``.

    Prints one progress line per figure and where each file went. A figure whose run is missing
    or incomplete is skipped with its message; at the end a :class:`MissingRunError` lists every
    skipped figure (the others are drawn). Returns ``{figure: [png, pdf]}``.
    """
    figures = select(only)
    written, failed = {}, []
    for i, fig in enumerate(figures, 1):
        path = run_dir(runs, fig.experiment, preset)
        t0 = time.perf_counter()
        module = MODULES[fig.name]
        stamp = provenance(path, preset)
        try:
            with style.provenance(stamp):
                written[fig.name] = module.draw(path, out)
        except MissingRunError as e:
            failed.append(str(e))
            log(f"[{i}/{len(figures)}] {fig.name}: FAILED\n  {e}")
            continue
        files = ", ".join(str(p) for p in written[fig.name])
        log(
            f"[{i}/{len(figures)}] {fig.name} ({fig.what}) from {path} in "
            f"{time.perf_counter() - t0:.1f} s -> {files}"
        )
        if stamp:
            log(f"  note (also in the figure): {stamp}")
    if failed:
        raise MissingRunError(
            f"{len(failed)} of {len(figures)} figures could not be drawn:\n" + "\n".join(failed)
        )
    return written
