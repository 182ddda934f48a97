"""INR on noisy samples: clean-signal PSNR and memorized noise vs iteration, per optimizer.

Reads a ``dyntheory run inr`` directory: ``results.json`` (per signal: ``curves`` with the median
over seeds of every (optimizer, lr) arm's ``psnr`` and ``noise_coef``, ``best``, ``noisy_psnr``)
and, for the band, the best arms' ``<signal>/<optimizer>_lr<lr>/metrics.jsonl``.

One column per signal. Top: PSNR of the fit against the clean signal on the whole grid (the
dotted line is the noisy targets' own PSNR). Bottom: memorized noise
``⟨f − s, ε⟩/‖ε‖²`` (0: none of the noise in the fit, 1: all of it). Best lr of each optimizer
bold with a min–max band over seeds, other lrs thin.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from paper_figures import runs, style
from paper_figures.pinn import arm_name

NAME = "inr"
EXPERIMENT = "inr"


def draw(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Draw ``inr.png``/``.pdf`` into ``out_dir`` from an INR run directory."""
    run_dir = runs.require(run_dir, figure=NAME, experiment=EXPERIMENT, files=["results.json"])
    where = dict(figure=NAME, experiment=EXPERIMENT, run_dir=run_dir)
    res = runs.read_json(run_dir / "results.json")
    runs.need(res, ["signals"], where="results.json", **where)
    sigs = res["signals"]
    if not sigs:
        runs.need({}, ["signals"], where="results.json (no signal)", **where)
    for name, sig in sigs.items():
        runs.need(
            sig,
            ["curves", "best", "arms", "noisy_psnr"],
            where=f"results.json['signals'][{name!r}]",
            **where,
        )
        runs.require(
            run_dir,
            figure=NAME,
            experiment=EXPERIMENT,
            files=[f"{name}/{arm_name(o, b['lr'])}/metrics.jsonl" for o, b in sig["best"].items()],
        )

    style.apply()
    fig, axes = style.plt.subplots(
        2, len(sigs), figsize=(4.6 * len(sigs) + 0.6, 6.4), squeeze=False, sharex="col"
    )
    for j, (name, sig) in enumerate(sigs.items()):
        top, bottom = axes[0, j], axes[1, j]
        steps = np.asarray(sig["curves"]["step"], float)
        pos = steps > 0
        best_text = []
        for opt, by_lr in sig["arms"].items():
            color, label = style.COLORS.get(opt), style.LABELS.get(opt, opt)
            for key, arm in sorted(by_lr.items(), key=lambda kv: kv[1]["lr"]):
                stem = arm_name(opt, arm["lr"])
                if arm["lr"] == sig["best"][opt]["lr"]:
                    m = runs.metrics(run_dir / name / stem)
                    keys = ["grid/psnr", "grid/noise_coef"]
                    runs.need(m, keys, where=f"{name}/{stem}/metrics.jsonl", **where)
                    ok = m["step"] > 0
                    for ax, k in zip((top, bottom), keys, strict=True):
                        style.band(ax, m["step"], m[k], color, None, lw=2.0, where=ok)
                    best_text.append(
                        f"{label} {key}: final {arm['median_final_psnr']:.1f} dB, "
                        f"memorized noise {arm['median_final_noise_coef']:.2f}"
                    )
                else:
                    curves = sig["curves"]
                    runs.need(
                        curves,
                        [f"{stem}/psnr", f"{stem}/noise_coef"],
                        where=f"results.json curves of {name}",
                        **where,
                    )
                    thin = dict(color=color, lw=0.8, alpha=0.5)
                    top.plot(steps[pos], np.asarray(curves[f"{stem}/psnr"])[pos], **thin)
                    bottom.plot(steps[pos], np.asarray(curves[f"{stem}/noise_coef"])[pos], **thin)
        top.axhline(sig["noisy_psnr"], color=style.COLORS["fit"], ls=":", lw=0.9)
        top.set_title(
            f"{name}: {sig.get('n_train')} noisy samples, batch {sig.get('batch_size')}\n"
            + "\n".join(f"best lr (bold) {t}" for t in best_text),
            fontsize=8,
        )
        top.set_ylabel("PSNR vs clean signal (dB)")
        bottom.axhline(0.0, color="0.4", lw=0.6)
        bottom.axhline(1.0, color="0.4", lw=0.6, ls=":")
        bottom.set_ylabel(r"memorized noise $\langle f-s,\varepsilon\rangle/\|\varepsilon\|^2$")
        bottom.set_xlabel("iteration (log scale)")
        bottom.set_xscale("log")
    line = style.plt.Line2D
    handles = [
        *(
            line([], [], color=style.COLORS[o], lw=2.0, label=style.LABELS[o])
            for o in ("adamw", "prm")
        ),
        line([], [], color="0.3", lw=2.0, label="best lr: median, min–max band over seeds"),
        line([], [], color="0.3", lw=0.8, alpha=0.6, label="other lrs: median"),
        line([], [], color=style.COLORS["fit"], ls=":", lw=0.9, label="noisy targets' own PSNR"),
    ]
    axes[1, -1].legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.9)
    fig.suptitle(
        "INR: fitting a signal from noisy samples, AdamW vs PRM at 3 learning rates", fontsize=10
    )
    return style.save(fig, out_dir, NAME)


if __name__ == "__main__":
    raise SystemExit(runs.script(NAME, EXPERIMENT, draw))
