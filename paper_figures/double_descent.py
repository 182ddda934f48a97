"""Double descent, model-wise and epoch-wise, with the noise-in-channel fraction overlaid.

Reads a ``dyntheory run double_descent`` directory: ``results.json`` (``exact``: min-norm random
features swept through ``N = n``; ``trained``: a width-swept MLP with and without label noise) and,
for the epoch-wise panel, ``mlp/noise<p>_w<width>/metrics.jsonl`` of the widths nearest the
interpolation threshold (the dissipation probe's four-cell scalars over time).

Solid lines (left axes): test MSE. Dashed lines (right axes): the noise-in-channel fraction, the
share of the test-output energy that the label noise carries through the signal channel,
``‖G_Q Π_c g_noise‖² / (‖G_Q Π_c g_noise‖² + ‖G_Q Π_c g_clean‖²)`` (THEORY §7: near the
threshold small kernel eigenvalues collapse and the noise enters the channel with a large gain).
(a, b) exact random features against ``N/n`` (mean over seeds, min–max band); (c) the trained MLP
against its parameter count over ``n`` at the end of training; (d) the trained MLP with label
noise against the step, for the widths nearest the threshold and the widest.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from paper_figures import runs, style

NAME = "double_descent"
EXPERIMENT = "double_descent"
MAP_COLORS = {"relu": style.PALETTE["blue"], "fourier": style.PALETTE["green"]}
PRE = "probe/dissipation/"


def _legend(ax, twin, loc="upper right") -> None:
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc=loc, fontsize=6.5, framealpha=0.9)


def _exact(ax, blocks: dict, task: str) -> None:
    twin = ax.twinx()
    for name, b in blocks.items():
        if not name.startswith(f"{task}/"):
            continue
        kind = name.split("/", 1)[1]
        color = MAP_COLORS.get(kind, style.PALETTE["purple"])
        r = np.asarray(b["N_over_n"], float)
        per_seed = np.asarray(b["per_seed_test_mse"], float)
        ax.plot(
            r,
            b["mean"]["test_mse"],
            color=color,
            lw=1.8,
            marker="o",
            ms=2.5,
            label=f"{kind} features: test MSE (peak N = {b['peak_N']})",
        )
        ax.fill_between(
            r, per_seed.min(axis=0), per_seed.max(axis=0), color=color, alpha=0.15, lw=0
        )
        twin.plot(
            r,
            b["mean"]["noise_in_channel_fraction"],
            color=color,
            lw=1.2,
            ls="--",
            label=f"{kind}: noise-in-channel fraction",
        )
    ax.axvline(1.0, color="0.5", lw=0.8, ls=":")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="features per example N / n (log scale)",
        ylabel="test MSE (log scale)",
    )
    style.plain_log_ticks(ax)
    twin.set_ylim(0, 1.02)
    twin.set_ylabel("noise-in-channel fraction")
    twin.grid(False)
    _legend(ax, twin, "upper left")


def _fraction_over_time(m: dict) -> tuple[np.ndarray, np.ndarray]:
    keys = [f"{PRE}test_noise_channel", f"{PRE}test_clean_channel"]
    t = m["step"].astype(float)
    ok = runs.finite_rows(t, *(m[k] for k in keys)) & (t > 0)
    noise, clean = (np.mean(m[k][ok], axis=1) for k in keys)
    total = noise + clean
    return t[ok], np.where(total > 0, noise / np.where(total > 0, total, 1.0), np.nan)


def draw(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Draw ``double_descent.png``/``.pdf`` into ``out_dir`` from a double-descent run."""
    run_dir = runs.require(run_dir, figure=NAME, experiment=EXPERIMENT, files=["results.json"])
    where = dict(figure=NAME, experiment=EXPERIMENT, run_dir=run_dir)
    res = runs.read_json(run_dir / "results.json")
    runs.need(res, ["exact", "trained"], where="results.json", **where)
    exact, trained = res["exact"], res["trained"]
    runs.need(trained, ["noise", "n_train", "widths"], where="results.json['trained']", **where)
    levels = sorted(trained["noise"], key=float)
    noisy_key = levels[-1]
    noisy = trained["noise"][noisy_key]
    widths = sorted(set(noisy["near_threshold_widths"]) | {max(trained["widths"])})
    sub = {w: f"mlp/noise{float(noisy_key):g}_w{w}" for w in widths}
    runs.require(
        run_dir,
        figure=NAME,
        experiment=EXPERIMENT,
        files=[f"{d}/metrics.jsonl" for d in sub.values()],
    )
    tasks = sorted({name.split("/", 1)[0] for name in exact})

    style.apply()
    fig, axes = style.plt.subplots(2, 2, figsize=(style.WIDTH_TWO + 1.5, 7.4))
    for ax, task in zip(axes[0], (tasks + tasks)[:2], strict=True):
        _exact(ax, exact, task)
        ax.set_title(f"random features, {task} task: min-norm fit vs N")
    if len(tasks) < 2:
        axes[0, 1].remove()

    ax = axes[1, 0]
    twin = ax.twinx()
    n = float(trained["n_train"])
    for key in levels:
        b = trained["noise"][key]
        ratio = np.asarray([r["n_params"] for r in b["runs"]], float) / n
        per_seed = np.asarray([r["test_mse"] for r in b["runs"]], float).reshape(len(ratio), -1)
        color = style.PALETTE["vermillion"] if float(key) > 0 else style.PALETTE["black"]
        ax.plot(
            ratio,
            b["test_mse"],
            color=color,
            lw=1.8,
            marker="o",
            ms=2.5,
            label=f"label noise {float(key):.0%}: test MSE (peak at width {b['peak_width']})",
        )
        ax.fill_between(
            ratio, per_seed.min(axis=1), per_seed.max(axis=1), color=color, alpha=0.15, lw=0
        )
        if float(key) > 0:
            frac = np.asarray([np.nan if f is None else f for f in b["noise_in_channel_fraction"]])
            twin.plot(
                ratio,
                frac,
                color=color,
                lw=1.2,
                ls="--",
                label=f"label noise {float(key):.0%}: noise-in-channel fraction",
            )
    ax.axvline(1.0, color="0.5", lw=0.8, ls=":")
    ax.set(
        xscale="log",
        xlabel="parameters per example P / n (log scale)",
        ylabel="final test MSE",
        title=f"trained MLP, n = {trained['n_train']}: model-wise",
    )
    style.plain_log_ticks(ax)
    twin.set_ylim(0, 1.02)
    twin.set_ylabel("noise-in-channel fraction")
    twin.grid(False)
    _legend(ax, twin)

    ax = axes[1, 1]
    twin = ax.twinx()
    by_width = {r["width"]: r for r in noisy["runs"]}
    for i, w in enumerate(widths):
        color = style.CYCLE[i % len(style.CYCLE)]
        r = by_width[w]
        step = np.asarray(r["curve_step"], float)
        ok = step > 0
        ax.plot(
            step[ok],
            np.asarray(r["curve_test_mse"], float)[ok],
            color=color,
            lw=1.8,
            label=f"width {w} (P/n = {r['n_params'] / n:.2f}): test MSE",
        )
        m = runs.metrics(run_dir / sub[w])
        runs.need(
            m,
            [f"{PRE}test_noise_channel", f"{PRE}test_clean_channel"],
            where=f"{sub[w]}/metrics.jsonl",
            **where,
        )
        t, frac = _fraction_over_time(m)
        twin.plot(
            t,
            frac,
            color=color,
            lw=1.1,
            ls="--",
            marker=".",
            ms=3,
            label=f"width {w}: noise-in-channel",
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="training step (log scale)",
        ylabel="test MSE (log scale)",
        title=f"trained MLP, label noise {float(noisy_key):.0%}: epoch-wise",
    )
    twin.set_ylim(0, 1.02)
    twin.set_ylabel("noise-in-channel fraction")
    twin.grid(False)
    _legend(ax, twin, "upper left")
    fig.suptitle(
        "Double descent: test error (solid) and the label noise's share of the signal "
        "channel's test-output energy (dashed)",
        fontsize=10,
    )
    return style.save(fig, out_dir, NAME)


if __name__ == "__main__":
    raise SystemExit(runs.script(NAME, EXPERIMENT, draw))
