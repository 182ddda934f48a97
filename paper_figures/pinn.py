"""PINN for advection: relative L2 error against the exact solution vs iteration, per optimizer.

Reads a ``dyntheory run pinn`` directory: ``results.json`` (``curves``: the median over seeds of
every (optimizer, lr) arm, ``best``: each optimizer's best lr, ``target``, ``ratio``) and, for the
band, the best arms' ``<optimizer>_lr<lr>/metrics.jsonl`` (``grid/rel_l2`` per seed).

One colour per optimizer; the best lr of each is bold with a min–max band over seeds, the other
lrs thin; the dashed line is the target error (paper: 0.40, reached 2.4× sooner with PRM).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from paper_figures import runs, style

NAME = "pinn"
EXPERIMENT = "pinn"


def arm_name(opt: str, lr: float) -> str:
    """Sub-directory / curve name of one arm (as ``experiments/pinn/run.py`` writes it)."""
    return f"{opt}_lr{lr:.0e}"


def draw(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Draw ``pinn.png``/``.pdf`` into ``out_dir`` from a PINN run directory."""
    run_dir = runs.require(run_dir, figure=NAME, experiment=EXPERIMENT, files=["results.json"])
    where = dict(figure=NAME, experiment=EXPERIMENT, run_dir=run_dir)
    res = runs.read_json(run_dir / "results.json")
    runs.need(res, ["curves", "best", "arms", "target"], where="results.json", **where)
    best_files = [f"{arm_name(o, b['lr'])}/metrics.jsonl" for o, b in res["best"].items()]
    runs.require(run_dir, figure=NAME, experiment=EXPERIMENT, files=best_files)
    curves = res["curves"]
    steps = np.asarray(curves["step"], float)

    style.apply()
    fig, ax = style.plt.subplots(figsize=(style.WIDTH_ONE + 1.2, 3.9))
    summary = []
    for opt, by_lr in res["arms"].items():
        color, label = style.COLORS.get(opt), style.LABELS.get(opt, opt)
        best_lr = res["best"][opt]["lr"]
        for key, arm in sorted(by_lr.items(), key=lambda kv: kv[1]["lr"]):
            name = arm_name(opt, arm["lr"])
            runs.need(curves, [name], where="results.json['curves']", **where)
            if arm["lr"] == best_lr:
                m = runs.metrics(run_dir / name)
                runs.need(m, ["grid/rel_l2"], where=f"{name}/metrics.jsonl", **where)
                it = arm.get("median_iters")
                reached = f"{it:,.0f} it. to target" if it is not None else "target not reached"
                style.band(
                    ax,
                    m["step"],
                    m["grid/rel_l2"],
                    color,
                    f"{label} lr {key} (best: {reached})",
                    lw=2.0,
                )
                summary.append(f"{label}: {reached}")
            else:
                ax.plot(
                    steps,
                    np.asarray(curves[name], float),
                    color=color,
                    lw=0.8,
                    alpha=0.5,
                    label=f"{label} lr {key}",
                )
    ax.axhline(
        res["target"],
        color=style.COLORS["fit"],
        ls="--",
        lw=0.9,
        label=f"target {res['target']:.2f}",
    )
    ax.set_yscale("log")
    ax.set_xlabel("iteration (optimizer step)")
    ax.set_ylabel("relative L2 error vs exact solution")
    ratio = res.get("ratio")
    ratio_txt = "n/a (a median not reached)" if ratio is None else f"{ratio:.2f}×"
    ax.set_title(
        f"PINN, advection β = 5 with a noisy initial condition\niterations to "
        f"{res['target']:.2f}: AdamW / PRM = {ratio_txt} (paper: {res.get('paper_ratio')}×)"
    )
    ax.legend(loc="upper right", fontsize=7, ncol=2, framealpha=0.9)
    style.note(ax, "median over seeds; best lr bold with min–max band", "lower left")
    return style.save(fig, out_dir, NAME)


if __name__ == "__main__":
    raise SystemExit(runs.script(NAME, EXPERIMENT, draw))
