"""The grokking figure, drawn from a run directory alone (no training, no experiment imports).

``draw(run_dir)`` writes ``grokking.png`` and ``grokking.pdf`` into ``run_dir``:

- top: train (dashed) and test (solid) accuracy against the step on a log axis, one colour per
  optimizer, the median over seeds with a min–max band, and a dotted vertical line at each
  optimizer's median step to the test target;
- bottom: PRM's gate over the same steps — fraction of coordinates with q > ½ (solid) and mean
  gate (dotted), median and min–max band over seeds.

It reads ``config.json`` (task, for the title), ``results.json`` (the target crossings) and
``<optimizer>/metrics.jsonl`` for each optimizer the run trained. Self-contained on purpose, so it
can move to ``paper_figures/`` unchanged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {"adamw": "tab:blue", "prm": "tab:orange"}
LABELS = {"adamw": "AdamW", "prm": "PRM"}
OP_SYMBOLS = {"add": "+", "sub": "−", "mul": "×", "div": "÷"}


def _read_json(path: Path):
    with open(path) as f:
        return json.load(f)


def _metrics(path: Path) -> dict[str, np.ndarray]:
    """``metrics.jsonl`` -> ``{"step": (T,), key: (T, S)}`` (NaN where a line lacks the key)."""
    lines = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    steps = sorted({int(r["step"]) for r in lines})
    seeds = sorted({int(r.get("seed", 0)) for r in lines})
    row = {s: i for i, s in enumerate(steps)}
    col = {s: i for i, s in enumerate(seeds)}
    out: dict[str, np.ndarray] = {}
    for r in lines:
        for k, v in r.items():
            if k in ("step", "seed") or not isinstance(v, int | float) or isinstance(v, bool):
                continue
            arr = out.setdefault(k, np.full((len(steps), len(seeds)), np.nan))
            arr[row[int(r["step"])], col[int(r.get("seed", 0))]] = v
    out["step"] = np.asarray(steps, dtype=float)
    return out


def _band(ax, steps, values, color, style, label):
    """Median line and min–max band over seeds of the rows of ``values`` that are measured."""
    ok = np.isfinite(values).all(axis=1) & (steps > 0)
    if not ok.any():
        return
    s, v = steps[ok], values[ok]
    ax.plot(s, np.median(v, axis=1), style, color=color, lw=1.6, label=label)
    if v.shape[1] > 1:
        ax.fill_between(s, v.min(axis=1), v.max(axis=1), color=color, alpha=0.18, lw=0)


def _title(config: dict) -> str:
    c = config.get("config", config)
    model = (
        f"{c.get('depth')}-layer transformer, width {c.get('width')}, {c.get('heads')} heads"
        if c.get("model") == "transformer"
        else f"embedding MLP 2×{c.get('width')} → {c.get('hidden')} ReLU"
    )
    batch = "full batch" if c.get("batch_size") is None else f"batch {c.get('batch_size')}"
    sym = OP_SYMBOLS.get(c.get("op"), c.get("op"))
    frac = 100 * float(c.get("train_fraction", float("nan")))
    return (
        f"Grokking a {sym} b mod {c.get('p')}, {frac:.0f}% of pairs for training\n"
        f"{model}, {batch}; median and min–max over {c.get('seeds')} seed(s)"
    )


def draw(run_dir: str | os.PathLike) -> list[Path]:
    """Draw the grokking figure of ``run_dir``; returns the written PNG and PDF paths."""
    run_dir = Path(run_dir)
    config = _read_json(run_dir / "config.json") if (run_dir / "config.json").exists() else {}
    results = _read_json(run_dir / "results.json") if (run_dir / "results.json").exists() else {}
    c = config.get("config", config)
    opts = [
        o for o in c.get("optimizers", ["adamw", "prm"]) if (run_dir / o / "metrics.jsonl").exists()
    ]
    if not opts:
        raise FileNotFoundError(f"{run_dir} holds no <optimizer>/metrics.jsonl to draw.")
    train_t, test_t = c.get("train_target", 0.99), c.get("test_target", 0.95)

    fig, (ax, axg) = plt.subplots(
        2, 1, figsize=(7.0, 6.2), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]}
    )
    for opt in opts:
        m = _metrics(run_dir / opt / "metrics.jsonl")
        color, name = COLORS.get(opt, None), LABELS.get(opt, opt)
        if "trainset/acc" in m:
            _band(ax, m["step"], m["trainset/acc"], color, "--", f"{name} train")
        if "test/acc" in m:
            _band(ax, m["step"], m["test/acc"], color, "-", f"{name} test")
        med = results.get("optimizers", {}).get(opt, {}).get("steps_to_test_target", {})
        if med.get("median") is not None:
            ax.axvline(med["median"], color=color, ls=":", lw=1)
        if opt == "prm" and "probe/gate/gate_open_fraction" in m:
            _band(
                axg,
                m["step"],
                m["probe/gate/gate_open_fraction"],
                color,
                "-",
                "PRM: fraction q > ½",
            )
            _band(axg, m["step"], m["probe/gate/gate_mean"], color, ":", "PRM: mean gate q")
    if "adamw" in opts:
        axg.axhline(1.0, color=COLORS["adamw"], lw=1, ls="-", label="AdamW (q ≡ 1)")
    for y in (train_t, test_t):
        ax.axhline(y, color="0.6", lw=0.8, ls=(0, (1, 3)))
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy")
    ax.legend(loc="center left", fontsize=8, ncol=2, frameon=False)
    ax.set_title(_title(config), fontsize=10)
    axg.set_ylim(-0.02, 1.05)
    axg.set_ylabel("PRM gate")
    axg.set_xlabel("optimizer step (log scale)")
    axg.legend(loc="center left", fontsize=8, frameon=False)
    ratio = results.get("ratio_adamw_over_prm")
    if ratio is not None:
        axg.text(
            0.99,
            0.88,
            f"steps to {test_t:.0%} test, AdamW / PRM: {ratio:.2f}× (medians)",
            transform=axg.transAxes,
            ha="right",
            va="top",
            fontsize=8,
        )
    fig.tight_layout()
    paths = [run_dir / "grokking.png", run_dir / "grokking.pdf"]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths
