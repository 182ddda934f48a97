"""The PINN figure, drawn from a run directory alone (no training, no experiment imports).

``draw(run_dir)`` writes ``pinn.png`` and ``pinn.pdf`` into ``run_dir``. Top: relative L2 error
against the exact solution vs iteration (log y), one colour per optimizer, one line per learning
rate (the best lr of each optimizer bold, the others thin), the median over seeds, and a dashed
line at the target (0.40). Bottom (when PRM ran): PRM's mean gate q over the same iterations, one
line per lr. It reads ``results.json`` only (``curves``, ``gate_curves``, ``best``, ``target``),
so it can move to ``paper_figures/`` unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {"adamw": "tab:blue", "prm": "tab:orange"}
LABELS = {"adamw": "AdamW", "prm": "PRM"}


def draw(run_dir) -> list[Path]:
    """Draw ``pinn.png`` / ``pinn.pdf`` into ``run_dir``; returns their paths."""
    run_dir = Path(run_dir)
    res = json.loads((run_dir / "results.json").read_text())
    curves, best = res["curves"], res["best"]
    steps = np.asarray(curves["step"])
    gates = res.get("gate_curves") or {}
    if len(gates) > 1:
        fig, (ax, gax) = plt.subplots(
            2, 1, figsize=(6.0, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
        )
    else:
        fig, ax = plt.subplots(figsize=(6.0, 3.8))
        gax = None
    for opt, by_lr in res["arms"].items():
        for key, arm in by_lr.items():
            name = f"{opt}_lr{arm['lr']:.0e}"
            y = np.asarray(curves[name], dtype=float)
            is_best = best.get(opt, {}).get("lr") == arm["lr"]
            it = arm["median_iters"]
            label = f"{LABELS.get(opt, opt)} lr {key}" + (
                f" (best: {it:.0f} it.)" if is_best and it is not None else ""
            )
            ax.plot(
                steps,
                y,
                color=COLORS.get(opt),
                lw=2.0 if is_best else 0.8,
                alpha=1.0 if is_best else 0.5,
                label=label,
            )
    ax.axhline(res["target"], color="k", ls="--", lw=0.8)
    ax.set_yscale("log")
    if gax is not None:
        gsteps = np.asarray(gates["step"])
        for name, y in gates.items():
            if name == "step":
                continue
            lr = float(name.split("_lr")[1])
            is_best = best.get("prm", {}).get("lr") == lr
            gax.plot(
                gsteps,
                y,
                color=COLORS["prm"],
                lw=1.6 if is_best else 0.7,
                alpha=1.0 if is_best else 0.5,
                label=f"lr {lr:g}",
            )
        gax.set_ylabel("PRM mean gate q")
        gax.set_ylim(0, None)
        gax.set_xlabel("iteration")
        gax.legend(fontsize=7)
    else:
        ax.set_xlabel("iteration")
    ax.set_ylabel("relative L2 error (median over seeds)")
    ratio = res.get("ratio")
    ratio_txt = "n/a" if ratio is None else f"{ratio:.2f}×"
    ax.set_title(
        f"PINN advection: iterations to {res['target']:.2f}, AdamW/PRM = {ratio_txt} "
        f"(paper {res['paper_ratio']}×)",
        fontsize=9,
    )
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths = [run_dir / "pinn.png", run_dir / "pinn.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths
