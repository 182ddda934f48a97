"""Minibatch drift versus diffusion on log-log axes, with fitted slopes (THEORY §5, Thm 4.1).

Reads ``sgd/metrics.jsonl`` and ``results.json`` of a ``dyntheory run dynamics`` directory: per
step and seed, the accumulated batch-mean gradient and the accumulated fluctuation projected on
the top and bottom NTK eigendirections at initialization (``probe/drift/*``), and the fit window.

Curves are the root mean square over seeds (:func:`experiments.dynamics.run.curves`); the
coherent drift is the accumulated batch mean with the noise's mean square removed. Left: the top
directions (the signal channel): the drift grows like ``t`` until the direction is learned, the
noise like ``√t``. Right: the bottom directions (the reservoir), where the coherent part is tiny
and grows slowly. Dashed: least-squares fits of ``log`` norm against ``log t``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dyntheory.drift import curves
from paper_figures import runs, style

NAME = "drift_diffusion"
EXPERIMENT = "dynamics"
FILES = ["config.json", "sgd/metrics.jsonl", "results.json"]
KEYS = ["count", "drift_top", "noise_top", "drift_bottom", "noise_bottom"]


def _fit(t: np.ndarray, y: np.ndarray, lo: float, hi: float) -> tuple[float, float, np.ndarray]:
    """Slope and intercept of ``log y`` against ``log t`` over ``[lo, hi]`` (finite, positive)."""
    keep = (t >= lo) & (t <= hi) & np.isfinite(y) & (y > 0)
    slope, icpt = np.polyfit(np.log(t[keep]), np.log(y[keep]), 1)
    return float(slope), float(icpt), t[keep]


def draw(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Draw ``drift_diffusion.png``/``.pdf`` into ``out_dir`` from a dynamics run directory."""
    run_dir = runs.require(run_dir, figure=NAME, experiment=EXPERIMENT, files=FILES)
    where = dict(figure=NAME, experiment=EXPERIMENT, run_dir=run_dir)
    m = runs.metrics(run_dir / "sgd")
    runs.need(m, [f"probe/drift/{k}" for k in KEYS], where="sgd/metrics.jsonl", **where)
    res = runs.read_json(run_dir / "results.json")
    runs.need(res, ["sgd"], where="results.json", **where)
    runs.need(res["sgd"], ["fit_window"], where="results.json['sgd']", **where)
    sgd = res["sgd"]
    c = curves(m)
    t = c["count"]
    lo, hi = sgd["fit_window"]

    style.apply()
    fig, axes = style.plt.subplots(1, 2, figsize=(style.WIDTH_TWO + 0.5, 3.9), sharey=True)
    titles = {
        "top": f"top {sgd['directions']} NTK directions (signal channel)",
        "bottom": f"bottom {sgd['directions']} NTK directions (reservoir)",
    }
    for ax, which in zip(axes, ("top", "bottom"), strict=True):
        ax.plot(
            t,
            c[f"batch_{which}"],
            color=style.COLORS["signal"],
            lw=1.0,
            alpha=0.8,
            label=r"accumulated batch mean $\|\sum\eta V\hat g\|$",
        )
        ax.plot(
            t,
            c[f"drift_{which}"],
            color=style.COLORS["train"],
            lw=1.8,
            label=r"coherent drift $\|\sum\eta V\mu\|$",
        )
        ax.plot(
            t,
            c[f"noise_{which}"],
            color=style.COLORS["noise"],
            lw=1.8,
            label=r"noise $\|\sum\eta V\xi\|$",
        )
        windows = {"drift": (lo, hi) if which == "top" else (1, t[-1]), "noise": (1, t[-1])}
        for kind, color in (("drift", style.COLORS["fit"]), ("noise", style.PALETTE["vermillion"])):
            a, b = windows[kind]
            slope, icpt, tt = _fit(t, c[f"{kind}_{which}"], a, b)
            span = f"t ≤ {b:.0f}" if b < t[-1] else "whole run"
            ax.plot(
                tt,
                np.exp(icpt) * tt**slope,
                color=color,
                lw=1.1,
                ls="--",
                label=f"{kind} fit ({span}): slope {slope:.2f}",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("SGD steps accumulated t (log scale)")
        ax.set_title(titles[which])
        ax.legend(loc="upper left", fontsize=7, framealpha=0.9)
    axes[0].set_ylabel("accumulated norm, parameter units (log scale)")
    style.note(axes[0], "theory: drift slope 1, noise slope ½", "lower right")
    cfg = runs.read_json(run_dir / "config.json").get("config", {})
    fig.suptitle(
        f"Drift vs diffusion: online SGD (batch {sgd['batch_size']}, lr {sgd['lr']}, label noise "
        f"σ = {sgd.get('label_noise')}), tanh MLP width {cfg.get('width')}, RMS over "
        f"{sgd['seeds']} seeds",
        fontsize=10,
    )
    return style.save(fig, out_dir, NAME)


if __name__ == "__main__":
    raise SystemExit(runs.script(NAME, EXPERIMENT, draw))
