"""The NTK and dissipation-Gramian spectra over training as heat maps, with the channel cutoff.

Reads ``gd/`` of a ``dyntheory run dynamics`` directory: ``probes.npz`` (``ntk/eigenvalues`` and
``dissipation/w_eigenvalues``, descending, at every probe step) and ``metrics.jsonl``
(``probe/dissipation/channel_dim``, the number of ``W_S`` eigenvalues above the cutoff).

Left: ``λ_i(K_t)`` of the empirical NTK on the training set (colour: log scale), eigenvalue index
(1 = largest) against the step. Right: ``λ_i(W_S(0, t))/(n/2)``, the fraction of a unit output
direction's loss that training has dissipated by step ``t`` (THEORY §3; it exceeds 1 slightly for
a finite step size). The white line on both is the channel/reservoir cutoff: indices above it are
the signal channel (dissipated fraction above the split threshold), below it the reservoir.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm

from paper_figures import runs, style

NAME = "spectrum"
EXPERIMENT = "dynamics"
FILES = ["config.json", "gd/metrics.jsonl", "gd/probes.npz"]


def _edges(x: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges around the centres ``x`` (geometric midpoints on a log axis)."""
    x = np.asarray(x, float)
    mid = np.sqrt(x[1:] * x[:-1]) if log else 0.5 * (x[1:] + x[:-1])
    first = x[0] ** 2 / mid[0] if log else 2 * x[0] - mid[0]
    last = x[-1] ** 2 / mid[-1] if log else 2 * x[-1] - mid[-1]
    return np.concatenate([[first], mid, [last]])


def _cutoff_line(ax, steps, channel_dim, label):
    """The channel dimension as a step line between eigenvalue indices ``d`` and ``d + 1``."""
    ax.step(steps, np.asarray(channel_dim) + 0.5, where="mid", color="white", lw=2.0)
    ax.step(
        steps,
        np.asarray(channel_dim) + 0.5,
        where="mid",
        color="black",
        lw=0.9,
        ls="--",
        label=label,
    )


def draw(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Draw ``spectrum.png``/``.pdf`` into ``out_dir`` from a dynamics run directory."""
    run_dir = runs.require(run_dir, figure=NAME, experiment=EXPERIMENT, files=FILES)
    where = dict(figure=NAME, experiment=EXPERIMENT, run_dir=run_dir)
    a = runs.arrays(run_dir / "gd")
    runs.need(
        a,
        ["ntk/step", "ntk/eigenvalues", "dissipation/step", "dissipation/w_eigenvalues"],
        where="gd/probes.npz",
        **where,
    )
    m = runs.metrics(run_dir / "gd")
    runs.need(
        m,
        ["probe/dissipation/channel_dim", "probe/dissipation/cutoff"],
        where="gd/metrics.jsonl",
        **where,
    )
    c = runs.read_json(run_dir / "config.json").get("config", {})
    n = a["dissipation/w_eigenvalues"].shape[-1]

    style.apply()
    fig, axes = style.plt.subplots(1, 2, figsize=(style.WIDTH_TWO + 1.0, 3.9), sharey=True)
    panels = [
        (
            a["ntk/step"],
            runs.first_seed(a["ntk/eigenvalues"]),
            r"NTK eigenvalue $\lambda_i(K_{SS}(t))$ (log colour scale)",
            "empirical NTK on the training set",
        ),
        (
            a["dissipation/step"],
            runs.first_seed(a["dissipation/w_eigenvalues"]) / (n / 2),
            r"dissipated fraction $\lambda_i(W_S(0,t))\,/\,(n/2)$",
            r"dissipation Gramian $W_S(0, t)$",
        ),
    ]
    dim_steps = m["step"]
    dim = m["probe/dissipation/channel_dim"][:, 0]
    ok = np.isfinite(dim) & (dim_steps > 0)
    threshold = float(c.get("split_threshold", np.nan))
    for i, (ax, (steps, lam, clabel, title)) in enumerate(zip(axes, panels, strict=True)):
        keep = steps > 0  # log-x: the probe at step 0 is dropped (W_S(0, 0) = 0)
        steps, lam = np.asarray(steps, float)[keep], lam[keep]
        if lam.shape[0] < 2:
            raise runs.MissingRunError(
                f"figure {NAME!r}: gd/probes.npz of {run_dir} has fewer than 2 probe steps after "
                f"step 0; rerun with more steps: {runs.run_command(EXPERIMENT, run_dir)} --force"
            )
        idx = np.arange(1, lam.shape[1] + 1)
        if i == 0:
            pos = lam[lam > 0]
            norm = LogNorm(vmin=max(pos.min(), pos.max() * 1e-6), vmax=pos.max())
            mesh = ax.pcolormesh(
                _edges(steps, True),
                _edges(idx, False),
                np.maximum(lam, norm.vmin).T,
                norm=norm,
                cmap="viridis",
                shading="flat",
            )
        else:
            mesh = ax.pcolormesh(
                _edges(steps, True),
                _edges(idx, False),
                lam.T,
                vmin=0.0,
                vmax=max(1.0, float(np.nanmax(lam))),
                cmap="viridis",
                shading="flat",
            )
        _cutoff_line(
            ax,
            dim_steps[ok],
            dim[ok],
            f"channel | reservoir cutoff (dissipated fraction {threshold:g})",
        )
        ax.set_xscale("log")
        ax.set_xlim(steps[0] * 0.9, steps[-1] * 1.05)
        ax.set_ylim(idx[-1] + 0.5, 0.5)
        ax.set_xlabel("GD step (log scale)")
        ax.set_title(title)
        ax.grid(False)
        fig.colorbar(mesh, ax=ax, label=clabel, pad=0.02)
    axes[0].set_ylabel("eigenvalue index i (1 = largest)")
    for ax in axes:
        ax.legend(loc="lower left", framealpha=0.9)
    style.note(axes[1], f"final channel dim {int(dim[ok][-1])} of n = {n}", "upper right")
    fig.suptitle(
        f"NTK and $W_S$ spectra over training: teacher-student tanh MLP (width {c.get('width')}, "
        f"depth {c.get('depth')}), full-batch GD, n = {n}, label noise σ = {c.get('noise')}",
        fontsize=10,
    )
    return style.save(fig, out_dir, NAME)


if __name__ == "__main__":
    raise SystemExit(runs.script(NAME, EXPERIMENT, draw))
