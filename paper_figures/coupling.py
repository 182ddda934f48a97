"""Train→test coupling under feature learning: predicted vs actual test displacement, kernel drift.

Reads ``gd/`` of a ``dyntheory run dynamics`` directory: ``probes.npz``
(``dissipation/predicted_displacement`` = ``A (U_S(t) − U_S(0))`` with ``A = G_Q D†``, and
``dissipation/actual_displacement`` = ``U_Q(t) − U_Q(0)``, per probe step) and ``metrics.jsonl``
(``probe/ntk/drift`` = ``‖K_t − K_0‖_F/‖K_0‖_F``, ``probe/dissipation/coupling_corr`` and
``coupling_rel_err``).

Left: one point per test output, predicted against actual displacement at the end of training and
at an intermediate step, with their correlation and relative error (THEORY §4, paper Thm 5.1: the
test displacement is fixed by the train displacement along the realized path, with no
kernel-stability assumption). Middle: the kernel drift over training. Right: the correlation and
relative error of the prediction at every probe step.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from paper_figures import runs, style

NAME = "coupling"
EXPERIMENT = "dynamics"
FILES = ["config.json", "gd/metrics.jsonl", "gd/probes.npz"]


def _stats(pred: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """Pearson correlation and relative error ``‖pred − actual‖/‖actual‖``."""
    return (
        float(np.corrcoef(pred, actual)[0, 1]),
        float(np.linalg.norm(pred - actual) / np.linalg.norm(actual)),
    )


def draw(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Draw ``coupling.png``/``.pdf`` into ``out_dir`` from a dynamics run directory."""
    run_dir = runs.require(run_dir, figure=NAME, experiment=EXPERIMENT, files=FILES)
    where = dict(figure=NAME, experiment=EXPERIMENT, run_dir=run_dir)
    a = runs.arrays(run_dir / "gd")
    keys = [
        "dissipation/step",
        "dissipation/predicted_displacement",
        "dissipation/actual_displacement",
    ]
    runs.need(a, keys, where="gd/probes.npz", **where)
    m = runs.metrics(run_dir / "gd")
    pre = "probe/dissipation/"
    runs.need(
        m,
        ["probe/ntk/drift", f"{pre}coupling_corr", f"{pre}coupling_rel_err"],
        where="gd/metrics.jsonl",
        **where,
    )
    c = runs.read_json(run_dir / "config.json").get("config", {})
    steps = np.asarray(a["dissipation/step"])
    pred = runs.first_seed(a["dissipation/predicted_displacement"])
    actual = runs.first_seed(a["dissipation/actual_displacement"])
    moved = np.nonzero(np.linalg.norm(actual, axis=1) > 0)[0]
    if moved.size == 0:
        raise runs.MissingRunError(
            f"figure {NAME!r}: the test outputs of {run_dir} never moved (no probe after step 0); "
            f"rerun with more steps: {runs.run_command(EXPERIMENT, run_dir)} --force"
        )

    style.apply()
    fig, (ax, bx, cx) = style.plt.subplots(
        1, 3, figsize=(style.WIDTH_TWO + 2.5, 3.7), gridspec_kw={"width_ratios": [1.15, 1, 1]}
    )
    last, mid = moved[-1], moved[len(moved) // 4]
    shown = [(mid, style.PALETTE["sky"], 12), (last, style.PALETTE["blue"], 16)]
    for i, color, size in shown if mid != last else shown[1:]:
        r, e = _stats(pred[i], actual[i])
        ax.scatter(
            actual[i],
            pred[i],
            s=size,
            color=color,
            alpha=0.85,
            lw=0,
            label=f"step {steps[i]}: corr {r:.4f}, rel. err {e:.3f}",
        )
    lim = np.array(
        [min(actual[last].min(), pred[last].min()), max(actual[last].max(), pred[last].max())]
    )
    lim = lim + np.array([-0.05, 0.05]) * np.ptp(lim)
    ax.plot(lim, lim, color=style.COLORS["fit"], lw=0.9, ls="--", label="predicted = actual")
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(r"actual $U_Q(t) - U_Q(0)$ (output units)")
    ax.set_ylabel(r"predicted $A\,(U_S(t) - U_S(0))$")
    ax.set_title(r"test displacement, $A = G_Q D^{\dagger}$")
    ax.legend(loc="upper left", fontsize=7, framealpha=0.9)

    t = m["step"].astype(float)
    ok = runs.finite_rows(t, m["probe/ntk/drift"]) & (t > 0)
    drift = m["probe/ntk/drift"][ok, 0]
    bx.plot(
        t[ok], drift, color=style.PALETTE["green"], lw=1.8, label=r"$\|K_t - K_0\|_F / \|K_0\|_F$"
    )
    bx.set_xscale("log")
    bx.set_xlabel("GD step (log scale)")
    bx.set_ylabel("relative kernel drift (fraction of initial norm)")
    bx.set_title("NTK drift (feature learning)")
    bx.legend(loc="upper left")
    style.note(bx, f"peak {drift.max():.2f}, final {drift[-1]:.2f}", "lower right")

    ok = runs.finite_rows(t, m[f"{pre}coupling_corr"], m[f"{pre}coupling_rel_err"]) & (t > 0)
    cx.plot(
        t[ok],
        m[f"{pre}coupling_corr"][ok, 0],
        color=style.PALETTE["blue"],
        lw=1.8,
        label="correlation",
    )
    cx.plot(
        t[ok],
        m[f"{pre}coupling_rel_err"][ok, 0],
        color=style.PALETTE["vermillion"],
        lw=1.8,
        ls="--",
        label="relative error",
    )
    cx.set_xscale("log")
    cx.set_ylim(-0.02, 1.05)
    cx.set_xlabel("GD step (log scale)")
    cx.set_ylabel("prediction quality (dimensionless)")
    cx.set_title("coupling prediction over training")
    cx.legend(loc="center right")
    fig.suptitle(
        f"Train→test coupling under feature learning: tanh MLP width {c.get('width')}, "
        f"depth {c.get('depth')}, full-batch GD (lr {c.get('lr')}), m = {pred.shape[1]} test "
        f"outputs, kernel refreshed every probe step",
        fontsize=10,
    )
    return style.save(fig, out_dir, NAME)


if __name__ == "__main__":
    raise SystemExit(runs.script(NAME, EXPERIMENT, draw))
