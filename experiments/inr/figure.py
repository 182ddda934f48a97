"""The INR figure, drawn from a run directory alone (no training, no experiment imports).

``draw(run_dir)`` writes ``inr.png`` and ``inr.pdf`` into ``run_dir``: one column per signal; top,
the clean-signal PSNR on the whole grid vs iteration (log x), with a dotted line at the noisy
targets' own PSNR; bottom, the memorized noise fraction ``noise_coef = ⟨f − s, ε⟩/‖ε‖²`` (0: none
of the noise is in the fit, 1: all of it). One colour per optimizer, each at its best lr (bold)
and the other lrs thin; medians over seeds. Reads ``results.json`` only, so it can move to
``paper_figures/`` unchanged.
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
    """Draw ``inr.png`` / ``inr.pdf`` into ``run_dir``; returns their paths."""
    run_dir = Path(run_dir)
    res = json.loads((run_dir / "results.json").read_text())
    sigs = res["signals"]
    fig, axes = plt.subplots(
        2, len(sigs), figsize=(4.6 * len(sigs), 5.6), squeeze=False, sharex="col"
    )
    for j, (name, sig) in enumerate(sigs.items()):
        steps = np.maximum(np.asarray(sig["curves"]["step"]), 1)
        top, bottom = axes[0, j], axes[1, j]
        for opt, by_lr in sig["arms"].items():
            for key, arm in by_lr.items():
                stem = f"{opt}_lr{arm['lr']:.0e}"
                is_best = sig["best"][opt]["lr"] == arm["lr"]
                style = dict(
                    color=COLORS.get(opt),
                    lw=1.8 if is_best else 0.7,
                    alpha=1.0 if is_best else 0.45,
                )
                label = f"{LABELS.get(opt, opt)} lr {key}" + (
                    f" (final {arm['median_final_psnr']:.1f} dB)" if is_best else ""
                )
                top.plot(steps, sig["curves"][f"{stem}/psnr"], label=label, **style)
                bottom.plot(steps, sig["curves"][f"{stem}/noise_coef"], **style)
        top.axhline(sig["noisy_psnr"], color="k", ls=":", lw=0.8, label="noisy targets")
        top.set_title(
            f"{name}: n_train={sig['n_train']}, batch {sig['batch_size']}, α={sig['alpha']:.2f}",
            fontsize=9,
        )
        top.set_ylabel("clean PSNR, whole grid (dB)")
        bottom.set_ylabel("memorized noise ⟨f − s, ε⟩/‖ε‖²")
        bottom.set_xlabel("iteration")
        bottom.set_xscale("log")
        bottom.axhline(0.0, color="k", lw=0.5)
        bottom.axhline(1.0, color="k", lw=0.5, ls=":")
        top.legend(fontsize=6.5)
    fig.tight_layout()
    paths = [run_dir / "inr.png", run_dir / "inr.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths
