"""DPO with swapped preference pairs: reward accuracy, drift from the reference, gate; AdamW vs PRM.

Reads a ``dyntheory run dpo`` directory: ``results.json`` (``best``: each optimizer's selected lr
and final numbers; ``claims``: the paper's numbers, ours and the verdict) and the selected arms'
``<optimizer>_lr<lr>/metrics.jsonl`` (``eval/test_acc``, ``eval/test_true_acc``,
``eval/test_drift``, ``eval/train_flip_fit`` per seed; PRM's ``probe/gate/gate_mean`` and
``gate_open_fraction``).

Four panels against the DPO step, median over seeds with a min–max band, one colour per optimizer
(the lr each got by validation accuracy): (a) clean held-out reward accuracy by the implicit
reward (solid) and accuracy against the hidden true reward (dashed); (b) mean ``|β (log π −
log π_ref)|`` on held-out responses; (c) fraction of swapped train pairs whose swapped label the
policy has fitted; (d) PRM's gate.
"""

from __future__ import annotations

import os
from pathlib import Path

from paper_figures import runs, style

NAME = "dpo"
EXPERIMENT = "dpo"
CURVES = ("eval/test_acc", "eval/test_true_acc", "eval/test_drift", "eval/train_flip_fit")


def _arm(opt: str, lr: float) -> str:
    return f"{opt}_lr{lr:g}"


def draw(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Draw ``dpo.png``/``.pdf`` into ``out_dir`` from a DPO run directory."""
    run_dir = runs.require(run_dir, figure=NAME, experiment=EXPERIMENT, files=["results.json"])
    where = dict(figure=NAME, experiment=EXPERIMENT, run_dir=run_dir)
    res = runs.read_json(run_dir / "results.json")
    runs.need(res, ["best", "claims", "task", "beta"], where="results.json", **where)
    best = res["best"]
    runs.require(
        run_dir,
        figure=NAME,
        experiment=EXPERIMENT,
        files=[f"{_arm(o, b['lr'])}/metrics.jsonl" for o, b in best.items()],
    )

    style.apply()
    fig, axes = style.plt.subplots(2, 2, figsize=(style.WIDTH_TWO + 1.0, 6.6), sharex=True)
    (acc, drift), (flip, gate) = axes
    for opt, b in best.items():
        m = runs.metrics(run_dir / _arm(opt, b["lr"]))
        runs.need(m, CURVES, where=f"{_arm(opt, b['lr'])}/metrics.jsonl", **where)
        color, label = style.COLORS.get(opt), f"{style.LABELS.get(opt, opt)} (lr {b['lr']:g})"
        steps = m["step"]
        style.band(acc, steps, m["eval/test_acc"], color, f"{label}: labels")
        style.band(acc, steps, m["eval/test_true_acc"], color, f"{label}: true reward", "--")
        style.band(drift, steps, m["eval/test_drift"], color, label)
        style.band(flip, steps, m["eval/train_flip_fit"], color, label)
        if "probe/gate/gate_mean" in m:
            style.band(gate, steps, m["probe/gate/gate_mean"], color, f"{label}: mean q")
            style.band(
                gate, steps, m["probe/gate/gate_open_fraction"], color, f"{label}: q > ½", ":"
            )
    if "adamw" in best:
        gate.axhline(1.0, color=style.COLORS["adamw"], lw=1.2, label="AdamW (no gate, q ≡ 1)")
    agree = res["task"].get("label_true_agreement_test")
    if agree is not None:
        acc.axhline(agree, color="0.5", lw=0.8, ls=":", label="held-out labels vs true reward")
    acc.axhline(0.5, color="0.7", lw=0.6)
    acc.set_ylabel("held-out reward accuracy")
    acc.legend(loc="lower right", fontsize=7, framealpha=0.9)
    claims = res["claims"]
    if claims:
        ours, paper = claims["ours"], claims["paper"]
        ratio = ours.get("drift_ratio_adamw_over_prm")
        style.note(
            drift,
            f"AdamW/PRM drift: ours {ratio:.2f}×, paper {paper['drift_ratio_adamw_over_prm']}×"
            if ratio is not None
            else "drift ratio undefined",
            "upper left",
        )
        style.note(
            acc,
            f"clean acc. ours {ours['adamw_acc']:.3f} → {ours['prm_acc']:.3f}\n"
            f"paper {paper['adamw_acc']} → {paper['prm_acc']}; {claims['verdict']}",
            "upper left",
        )
    drift.set_ylabel(r"mean $|\beta(\log\pi - \log\pi_{\rm ref})|$, held out")
    drift.legend(loc="lower right", fontsize=7)
    flip.set_ylabel("swapped train pairs fitted")
    flip.set_xlabel("DPO step")
    flip.legend(loc="lower right", fontsize=7)
    gate.set_ylabel("gate (fraction)")
    gate.set_ylim(-0.02, 1.08)
    gate.set_xlabel("DPO step")
    gate.legend(loc="center right", fontsize=7)
    t = res["task"]
    fig.suptitle(
        f"DPO on a known-reward task, {t['flip']:.0%} of {t['n_train']} train pairs swapped, "
        f"β = {res['beta']:g}; median of {len(res.get('seeds', [])) or '?'} seeds, min–max band",
        fontsize=10,
    )
    return style.save(fig, out_dir, NAME)


if __name__ == "__main__":
    raise SystemExit(runs.script(NAME, EXPERIMENT, draw))
