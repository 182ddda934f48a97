"""W_S along the whole grokking run, from the per-step reference: identity, spectrum and split.

Reads a ``dyntheory run grokking`` directory whose W_S is integrated every step
(``dissipation_integrator=stepwise``, the default): ``results.json`` (the steps to the train and
test targets) and, per optimizer, ``metrics.jsonl`` (``probe/stepwise/*``) and ``probes.npz``
(``stepwise/w_eigenvalues``); first seed. Every panel is against the step ``T`` of ``W_S(s, T)``
(log scale), through memorization (dashed vertical line: train target) and grokking (dotted:
test target), one colour per optimizer:

- the loss identity's relative error ``|g(s)ᵀ W g(s) − (Φ(s) − Φ(T))| / (Φ(s) − Φ(T))`` (the
  validity check of everything else; grey line: 10 %), and the propagated over the realized
  residual ``‖z_g(T)‖/‖g(T)‖``;
- with tracked directions (``stepwise_rank``): the Ritz values of the same Gramian, the signal
  channel's dimension, the share of ``‖g(s)‖²`` in the channel, and the output block's
  quadratic form ``g(s)ᵀ W_gg g(s)`` split into channel and reservoir (``Σ λ_i c_i²`` over each
  part, ``c = Vᵀ Qᵀ g(s)``) next to the realized drop. The identity checks the whole form
  ``z(s)ᵀ W z(s)`` with ``z(s) = (g(s), m_s, w_s)``; the output block is one of its terms, and the
  difference is what the momentum and the weights (the decoupled decay) carry (THEORY.md §10).
  Grokking's labels are clean, so there is no label-noise part to split.

Points whose identity error exceeds 10 % are drawn hollow in every panel: their numbers come
from a Gramian whose check failed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from paper_figures import runs, style

NAME = "ws_whole_run"
EXPERIMENT = "grokking"
PRE = "probe/stepwise/"
VALID = 0.1


def _optimizers(run_dir: Path) -> list[str]:
    cfg = runs.read_json(run_dir / "config.json")
    return list(cfg.get("config", cfg).get("optimizers", ["adamw", "prm"]))


def _events(results: dict, opt: str) -> list[tuple[float, str]]:
    """The first seed's steps to the train (memorization) and test (grokking) targets."""
    r = results.get("optimizers", {}).get(opt, {})
    out = []
    for key, ls in (("steps_to_train_target", "--"), ("steps_to_test_target", ":")):
        per_seed = (r.get(key) or {}).get("per_seed") or [None]
        if per_seed[0] is not None:
            out.append((float(per_seed[0]), ls))
    return out


def _series(m: dict, key: str, rows: np.ndarray) -> np.ndarray:
    return m[PRE + key][:, 0][rows] if PRE + key in m else np.full(rows.sum(), np.nan)


def draw(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Draw ``ws_whole_run.png``/``.pdf`` into ``out_dir`` from a grokking run directory."""
    run_dir = Path(run_dir)
    runs.require(run_dir, figure=NAME, experiment=EXPERIMENT, files=["config.json"])
    opts = _optimizers(run_dir)
    files = ["results.json", *(f"{o}/metrics.jsonl" for o in opts)]
    run_dir = runs.require(run_dir, figure=NAME, experiment=EXPERIMENT, files=files)
    where = dict(figure=NAME, experiment=EXPERIMENT, run_dir=run_dir)
    results = runs.read_json(run_dir / "results.json")
    metrics = {o: runs.metrics(run_dir / o) for o in opts}
    for o in opts:
        keys = [PRE + k for k in ("identity_rel_err", "norm_ratio", "loss_drop")]
        runs.need(metrics[o], keys, where=f"{o}/metrics.jsonl", **where)

    style.apply()
    fig, axes = style.plt.subplots(2, 3, figsize=(style.WIDTH_TWO + 4.0, 6.6), sharex=True)
    (a_err, a_lam, a_dim), (a_ratio, a_share, a_diss) = axes
    tracked = False
    for opt in opts:
        m, color = metrics[opt], style.COLORS.get(opt)
        label = style.LABELS.get(opt, opt)
        err_all = m[PRE + "identity_rel_err"][:, 0]  # metrics are (T, seeds)
        rows = np.isfinite(err_all) & (m["step"] > 0)
        steps, err = m["step"][rows], err_all[rows]
        ok = err <= VALID

        def plot(ax, y, steps=steps, ok=ok, color=color, **kw):
            ax.plot(steps, y, "-", color=color, lw=1.0, **kw)
            ax.plot(steps[ok], y[ok], "o", color=color, ms=3.5)
            ax.plot(steps[~ok], y[~ok], "o", mfc="none", color=color, ms=3.5)

        plot(a_err, err, label=f"{label} (max {np.max(err):.2g})")
        plot(a_ratio, _series(m, "norm_ratio", rows))
        if PRE + "channel_dim" in m:
            tracked = True
            a = runs.arrays(run_dir / opt)
            lam = runs.first_seed(a["stepwise/w_eigenvalues"])
            lam_steps = a["stepwise/step"]
            keep = np.isin(lam_steps, steps)
            for i in range(lam.shape[-1]):
                a_lam.plot(
                    lam_steps[keep],
                    lam[keep, i],
                    ".-",
                    color=color,
                    lw=1.0,
                    alpha=1 - i / (lam.shape[-1] + 1),
                )
            plot(a_dim, _series(m, "channel_dim", rows))
            ch, res = _series(m, "g0_channel", rows), _series(m, "g0_reservoir", rows)
            plot(a_share, ch / (ch + res))
            plot(a_diss, _series(m, "dissipated_channel", rows), label=f"{label}: channel")
            for key, ls, what in (
                ("dissipated_reservoir", "--", "reservoir"),
                ("loss_drop", ":", "Φ(s) − Φ(T)"),
            ):
                y = _series(m, key, rows)
                a_diss.plot(steps, y, ls, color=color, lw=1.2, label=f"{label}: {what}")
        for ax in axes.flat:
            for step, ls in _events(results, opt):
                ax.axvline(step, color=color, ls=ls, lw=0.8, alpha=0.7)
    a_err.axhline(VALID, color="0.5", lw=0.8)
    a_err.set(yscale="log", ylabel="identity rel. error", title="loss identity (validity check)")
    a_err.legend(fontsize=7, framealpha=0.9)
    a_ratio.set(yscale="log", ylabel="‖propagated g‖ / ‖realized g‖", title="residual ratio")
    a_lam.set(yscale="log", ylabel="Ritz values of W", title="W_S spectrum (tracked directions)")
    a_dim.set(ylabel="channel dimension", title="signal channel")
    a_share.set(ylabel="‖Π_channel g(s)‖² / ‖g(s)‖²", title="share of g(s) in the channel")
    a_share.set_ylim(-0.02, 1.02)
    a_diss.set(
        yscale="symlog",
        ylabel="loss",
        title="g(s)ᵀ W_gg g(s) by part, and Φ(s) − Φ(T)",
    )
    a_diss.set_ylim(bottom=0)
    if tracked:
        a_diss.legend(fontsize=6, framealpha=0.9)
    else:
        for ax in (a_lam, a_dim, a_share, a_diss):
            style.note(ax, "stepwise_rank=0: identity only", "center")
    for ax in axes[1]:
        ax.set_xlabel("step T of W_S(s, T) (log scale)")
    for ax in axes.flat:
        ax.set_xscale("log")
    fig.suptitle(
        "W_S along the whole run (per-step reference; hollow: identity error > 10 %; "
        "dashed: train target, dotted: test target)",
        fontsize=9,
    )
    return style.save(fig, out_dir, NAME)


if __name__ == "__main__":
    raise SystemExit(runs.script(NAME, EXPERIMENT, draw))
