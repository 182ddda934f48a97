"""The four-cell decomposition over training: clean signal / label noise × channel / reservoir.

Reads ``gd/metrics.jsonl`` of a ``dyntheory run dynamics`` directory: the dissipation probe's
``probe/dissipation/{train,test}_{clean,noise}_{channel,reservoir}`` (THEORY §3,
:func:`dyntheory.split.four_cell`) and ``test/loss``.

The output gradient at the start, ``g(0) = g_clean + g_noise`` (``g_noise = −ε/n``, the label
noise), is split by the channel/reservoir projectors of ``W_S(0, t)``. Left: the share of each
part's energy in the channel and in the reservoir, ``‖Π_sub g_part(0)‖² / ‖g_part(0)‖²`` (the
channel grows as training dissipates more directions: the signal enters it first, the noise
later). Right: what each cell does to the test outputs, ``‖G_Q Π_sub g_part(0)‖² / m`` (the mean
squared test displacement it causes), beside the test MSE. With an exact kernel split the
reservoir cells would move the test outputs by nothing (test invisibility, Prop. 3.2); with the
soft split (reservoir = dissipated fraction below the threshold) they move them little.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from paper_figures import runs, style

NAME = "four_cell"
EXPERIMENT = "dynamics"
FILES = ["config.json", "gd/metrics.jsonl", "results.json"]
CELLS = [("clean", "channel"), ("clean", "reservoir"), ("noise", "channel"), ("noise", "reservoir")]
LABEL = {"clean": "signal", "noise": "label noise"}


def draw(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Draw ``four_cell.png``/``.pdf`` into ``out_dir`` from a dynamics run directory."""
    run_dir = runs.require(run_dir, figure=NAME, experiment=EXPERIMENT, files=FILES)
    where = dict(figure=NAME, experiment=EXPERIMENT, run_dir=run_dir)
    pre = "probe/dissipation/"
    keys = [f"{pre}{side}_{p}_{s}" for side in ("train", "test") for p, s in CELLS]
    m = runs.metrics(run_dir / "gd")
    runs.need(m, [*keys, "test/loss"], where="gd/metrics.jsonl", **where)
    res = runs.read_json(run_dir / "results.json")
    runs.need(res, ["gd"], where="results.json", **where)
    m_test = int(res["gd"].get("n_test_probe") or res.get("n_test"))
    c = runs.read_json(run_dir / "config.json").get("config", {})

    steps = m["step"].astype(float)
    rows = runs.finite_rows(steps, *(m[k] for k in keys)) & (steps > 0)
    t = steps[rows]
    train = np.stack([m[f"{pre}train_{p}_{s}"][rows, 0] for p, s in CELLS])
    test = np.stack([m[f"{pre}test_{p}_{s}"][rows, 0] for p, s in CELLS]) / m_test
    test_rows = runs.finite_rows(steps, m["test/loss"])
    test_mse = 2 * m["test/loss"][test_rows, 0]  # squared_loss is ‖u − y‖²/(2n)
    test_steps = steps[test_rows]
    colors = [style.COLORS[f"{p}_{s}"] for p, s in CELLS]
    labels = [f"{LABEL[p]} in {s}" for p, s in CELLS]

    style.apply()
    fig, (ax, bx) = style.plt.subplots(1, 2, figsize=(style.WIDTH_TWO + 1.0, 3.8))
    for part, (ch, rs) in (("clean", (0, 1)), ("noise", (2, 3))):
        share = train[ch] / (train[ch] + train[rs])
        ax.plot(t, share, color=colors[ch], lw=1.8, label=f"{LABEL[part]}: in channel")
        ax.plot(
            t, 1 - share, color=colors[rs], lw=1.8, ls="--", label=f"{LABEL[part]}: in reservoir"
        )
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(t[0], t[-1])
    ax.set_xlabel("GD step (log scale)")
    ax.set_ylabel(r"share of the part's energy $\|\Pi g_{part}(0)\|^2/\|g_{part}(0)\|^2$")
    ax.set_title(r"train residual $g(0)$ = signal + label noise")
    ax.legend(loc="center right", framealpha=0.9)
    noise_share = train[2] / (train[2] + train[3])
    style.note(
        ax,
        f"label noise in the channel:\n{noise_share[0]:.0%} at step {t[0]:.0f}, "
        f"{noise_share[-1]:.0%} at step {t[-1]:.0f}",
        "center left",
    )

    for k, (_, s) in enumerate(CELLS):
        bx.plot(
            t,
            test[k],
            color=colors[k],
            lw=1.8,
            ls="-" if s == "channel" else "--",
            label=f"{labels[k]}: " + r"$\|G_Q \Pi g\|^2/m$",
        )
    bx.plot(
        test_steps[test_steps > 0],
        test_mse[test_steps > 0],
        color=style.PALETTE["black"],
        lw=1.4,
        label="test MSE (actual)",
    )
    bx.axhline(
        test_mse[0], color="0.5", lw=0.8, ls=":", label=f"test MSE at step {test_steps[0]:.0f}"
    )
    bx.set_xscale("log")
    bx.set_xlim(t[0], t[-1])
    bx.set_xlabel("GD step (log scale)")
    bx.set_ylabel("mean squared test displacement, test MSE")
    bx.set_title("effect on the test outputs")
    bx.legend(loc="upper left", framealpha=0.9)
    res_max = float(np.max(test[[1, 3]]))
    style.note(
        bx,
        f"reservoir cells move the test outputs by ≤ {res_max:.1e}\n"
        f"final: noise-in-channel {test[2][-1]:.3f}, test MSE {test_mse[-1]:.3f}",
        "center right",
    )
    fig.suptitle(
        f"Four-cell decomposition over training (teacher-student, n = {c.get('n_train')}, "
        f"σ = {c.get('noise')}, channel = dissipated fraction > {c.get('split_threshold')})",
        fontsize=10,
    )
    return style.save(fig, out_dir, NAME)


if __name__ == "__main__":
    raise SystemExit(runs.script(NAME, EXPERIMENT, draw))
