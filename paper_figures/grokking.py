"""Grokking: train and test accuracy against the step (log x), AdamW vs PRM, and PRM's gate.

Reads a ``dyntheory run grokking`` directory: ``config.json`` (the task, for the title),
``results.json`` (steps to the targets) and ``<optimizer>/metrics.jsonl`` (``trainset/acc`` and
``test/acc`` per seed, PRM's ``probe/gate/gate_open_fraction`` and ``gate_mean``).

Top: train (dashed) and test (solid) accuracy, median over seeds with a min–max band, one colour
per optimizer, a dotted vertical line at each optimizer's median step to the test target.
Bottom: the fraction of PRM's coordinates whose gate is open (q > ½) and the mean gate q.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from paper_figures import runs, style

NAME = "grokking"
EXPERIMENT = "grokking"
OP_SYMBOLS = {"add": "+", "sub": "−", "mul": "×", "div": "÷"}


def _optimizers(run_dir: Path) -> list[str]:
    cfg = runs.read_json(run_dir / "config.json")
    return list(cfg.get("config", cfg).get("optimizers", ["adamw", "prm"]))


def _title(c: dict) -> str:
    model = (
        f"{c.get('depth')}-layer width-{c.get('width')} decoder"
        if c.get("model") == "transformer"
        else f"embedding MLP (width {c.get('width')}, hidden {c.get('hidden')})"
    )
    t = c.get("train", c)  # the engine's keys live in the composed "train" group
    batch = "full batch" if t.get("batch_size") is None else f"batch {t.get('batch_size')}"
    sym = OP_SYMBOLS.get(c.get("op"), c.get("op"))
    frac = 100 * float(c.get("train_fraction", float("nan")))
    return (
        f"Grokking a {sym} b mod {c.get('p')} ({frac:.0f}% of pairs for training)\n"
        f"{model}, {batch}; median of {t.get('seeds')} seeds, min–max band"
    )


def draw(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Draw ``grokking.png``/``.pdf`` into ``out_dir`` from a grokking run directory."""
    run_dir = Path(run_dir)
    runs.require(run_dir, figure=NAME, experiment=EXPERIMENT, files=["config.json"])
    opts = _optimizers(run_dir)
    run_dir = runs.require(
        run_dir,
        figure=NAME,
        experiment=EXPERIMENT,
        files=["results.json", *(f"{o}/metrics.jsonl" for o in opts)],
    )
    cfg = runs.read_json(run_dir / "config.json")
    c = cfg.get("config", cfg)
    results = runs.read_json(run_dir / "results.json")
    where = dict(figure=NAME, experiment=EXPERIMENT, run_dir=run_dir)
    runs.need(results, ["optimizers"], where="results.json", **where)
    train_t, test_t = float(c.get("train_target", 0.99)), float(c.get("test_target", 0.95))

    style.apply()
    metrics = {opt: runs.metrics(run_dir / opt) for opt in opts}
    with_ws = [o for o in opts if "probe/dissipation/g_channel" in metrics[o]]
    if with_ws:  # W_S beside the curves: its spectrum and the channel share of g(t)
        fig = style.plt.figure(figsize=(style.WIDTH_TWO + 3.0, 5.8))
        grid = fig.add_gridspec(2, 2, height_ratios=[2.2, 1], width_ratios=[1.6, 1])
        ax = fig.add_subplot(grid[0, 0])
        axg = fig.add_subplot(grid[1, 0], sharex=ax)
        _draw_ws(
            fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, 1]), run_dir, metrics, with_ws
        )
    else:
        fig, (ax, axg) = style.plt.subplots(
            2,
            1,
            figsize=(style.WIDTH_ONE + 2.0, 5.6),
            sharex=True,
            gridspec_kw={"height_ratios": [2.2, 1]},
        )
    crossings = []
    for opt in opts:
        m = metrics[opt]
        runs.need(m, ["trainset/acc", "test/acc"], where=f"{opt}/metrics.jsonl", **where)
        color, label = style.COLORS.get(opt), style.LABELS.get(opt, opt)
        pos = m["step"] > 0
        style.band(ax, m["step"], m["trainset/acc"], color, f"{label} train", "--", where=pos)
        style.band(ax, m["step"], m["test/acc"], color, f"{label} test", "-", where=pos)
        med = results["optimizers"].get(opt, {}).get("steps_to_test_target", {}).get("median")
        if med is not None:
            ax.axvline(med, color=color, ls=":", lw=1.2)
        crossings.append(f"{label} {med:,.0f}" if med is not None else f"{label} not reached")
        if "probe/gate/gate_open_fraction" in m:
            style.band(
                axg,
                m["step"],
                m["probe/gate/gate_open_fraction"],
                color,
                f"{label}: fraction of gates open (q > ½)",
                "-",
                where=pos,
            )
            style.band(
                axg,
                m["step"],
                m["probe/gate/gate_mean"],
                color,
                f"{label}: mean gate q",
                ":",
                where=pos,
            )
    if "adamw" in opts:
        axg.axhline(1.0, color=style.COLORS["adamw"], lw=1.2, label="AdamW (no gate, q ≡ 1)")
    for y in (train_t, test_t):
        ax.axhline(y, color="0.6", lw=0.8, ls=(0, (1, 3)))
    ax.set_xscale("log")
    style.plain_log_ticks(axg)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy (fraction correct)")
    ax.legend(loc="center left", ncol=2, framealpha=0.9)
    ax.set_title(_title(c))
    ratio = results.get("ratio_adamw_over_prm")
    text = f"median steps to {test_t:.0%} test (dotted): " + ", ".join(crossings)
    if ratio is not None:
        text += f"\nAdamW / PRM = {ratio:.2f}×"
    style.note(ax, text, "lower right")
    axg.set_ylim(-0.02, 1.08)
    axg.set_ylabel("gate (fraction)")
    axg.set_xlabel("optimizer step (log scale)")
    axg.legend(loc="best", framealpha=0.9)
    return style.save(fig, out_dir, NAME)


def _draw_ws(axs, axe, run_dir: Path, metrics: dict, opts: list[str]) -> None:
    """Right column: W_S's spectrum at the last probe step (first seed) and, over the run, the
    share of ‖g(t)‖² in the signal channel, with the loss-identity error in the legend."""
    for opt in opts:
        color, label = style.COLORS.get(opt), style.LABELS.get(opt, opt)
        arrays = runs.arrays(run_dir / opt)
        lam = runs.first_seed(arrays["dissipation/w_eigenvalues"])[-1]
        lam = lam[lam > lam[0] * 1e-12]
        axs.semilogy(range(1, len(lam) + 1), lam, color=color, label=label)
        m = metrics[opt]
        ch, res = m["probe/dissipation/g_channel"], m["probe/dissipation/g_reservoir"]
        share = ch / (ch + res)
        ok = np.isfinite(share[:, 0]) & (m["step"] > 0)
        err = m["probe/dissipation/identity_rel_err"][ok][-1, 0]
        axe.plot(
            m["step"][ok],
            share[ok, 0],
            "o-",
            color=color,
            label=f"{label} (identity err {err:.2f})",
        )
    axs.set(xlabel="eigenvalue index", ylabel="λ(W_S)", title="W_S spectrum, last probe step")
    axs.legend(framealpha=0.9)
    axe.set_xscale("log")
    axe.set(xlabel="optimizer step (log scale)", ylabel="‖Π_channel g(t)‖² / ‖g(t)‖²")
    axe.set_ylim(-0.02, 1.02)
    axe.legend(fontsize=7, framealpha=0.9)


if __name__ == "__main__":
    raise SystemExit(runs.script(NAME, EXPERIMENT, draw))
