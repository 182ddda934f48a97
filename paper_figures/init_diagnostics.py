"""Trainability at initialization: predicted vs measured GD stability, trained vs linearized.

Reads a ``dyntheory run init_diagnostics`` directory: ``results.json`` (``rows``, ``tol``,
``train_multiplier``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from paper_figures import runs, style

NAME = "init_diagnostics"
EXPERIMENT = "init_diagnostics"


def draw(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Two panels: measured stable-lr bracket vs predicted ``η_max``; trained vs linearized.

    Left: for every configuration, the bracket ``[largest stable, first diverging)`` learning
    rate against the predicted ``2n/λ_max`` (log-log; a missing side is drawn as an arrow), with
    the diagonal. Right: the loss ratio of the run at ``train_multiplier·η_max`` against the
    frozen-NTK prediction, marked by whether any predictive warning fired.
    """
    run_dir = runs.require(run_dir, figure=NAME, experiment=EXPERIMENT, files=["results.json"])
    results = runs.read_json(run_dir / "results.json")
    runs.need(
        results,
        ["rows", "tol", "train_multiplier"],
        where="results.json",
        figure=NAME,
        experiment=EXPERIMENT,
        run_dir=run_dir,
    )
    style.apply()
    plt = style.plt
    rows = results["rows"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5))
    pred = np.array([r["predicted_max_lr"] for r in rows])
    for r, p in zip(rows, pred, strict=True):
        lo, hi = r["measured_max_stable_lr"]
        color = {"below": "tab:red", "at": "tab:green", "above": "tab:blue"}[r["bound"]]
        if lo is not None and hi is not None:
            ax.plot([p, p], [lo, hi], color=color, lw=2)
        elif lo is not None:
            ax.annotate("", (p, lo * 2), (p, lo), arrowprops={"arrowstyle": "->", "color": color})
        if hi is not None and lo is None:
            ax.annotate("", (p, hi / 2), (p, hi), arrowprops={"arrowstyle": "->", "color": color})
    span = [pred.min() / 3, pred.max() * 3]
    ax.plot(span, span, "k--", lw=1, label="measured = predicted")
    for name, color in (("above", "tab:blue"), ("at", "tab:green"), ("below", "tab:red")):
        ax.plot([], [], color=color, lw=2, label=f"threshold {name} the prediction")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="predicted max lr 2n/λ_max",
        ylabel="measured stable bracket",
        title="GD stability: prediction vs runs",
    )
    ax.legend(loc="upper left", fontsize=8)
    tm = results["train_multiplier"]
    for warned in (False, True):
        sel = [r for r in rows if (not r["predicted_trainable"]) == warned]
        if not sel:
            continue
        lin = [max(r["linearized_loss_ratio"], 1e-12) for r in sel]
        act = []
        for r in sel:
            run = next(u for u in r["runs"] if u["multiplier"] == tm)
            act.append(np.nan if run["final_ratio"] is None else max(run["final_ratio"], 1e-12))
        bx.scatter(
            lin, act, marker="x" if warned else "o", label="warned" if warned else "no warning"
        )
    tol = results["tol"]
    bx.axhline(tol, color="gray", lw=1, ls=":")
    bx.axvline(tol, color="gray", lw=1, ls=":")
    lo = min([max(r["linearized_loss_ratio"], 1e-12) for r in rows] + [tol]) / 3
    bx.plot([lo, 1.5], [lo, 1.5], "k--", lw=1)
    bx.set(
        xscale="log",
        yscale="log",
        xlabel="frozen-NTK loss ratio after the budget",
        ylabel=f"trained loss ratio (GD at {tm:g} x max lr)",
        title="Trainability",
    )
    bx.legend(fontsize=8)
    return style.save(fig, out_dir, NAME)


if __name__ == "__main__":
    raise SystemExit(runs.script(NAME, EXPERIMENT, draw))
