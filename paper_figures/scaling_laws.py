"""Scaling laws: loss vs data size D and model size N, fitted laws, CIs, held-out extrapolation.

Reads a ``dyntheory run scaling_laws`` directory: ``results.json`` (per task, the one-variable
blocks ``data`` and ``model`` with ``x``, ``loss_mean``, ``loss_per_seed``, the fit
``E + A x^{−α}`` with seed-bootstrap intervals, the fit without the largest sizes and its error
on them, and the ``joint`` block ``E + A/N^α + B/D^β``) and ``config.json`` (the Huber δ).

Rows: the exact teacher-student task (theory exponents drawn beside the fits) and the MLP
classification task. Columns: loss vs D, loss vs N (points: mean over seeds with min–max bars;
line: the fit with its 95 % pointwise seed-bootstrap band, recomputed here with the run's own
bootstrap settings; dashed: the fit without the held-out largest sizes, extended to them; open
squares: the held-out points), and the joint law on the (N, D) grid (held-out points open).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dyntheory import scaling
from paper_figures import runs, style

NAME = "scaling_laws"
EXPERIMENT = "scaling_laws"
TASKS = {"teacher_student": "teacher-student (exact)", "classification": "MLP classification"}
AXES = {"data": "data size D, examples", "model": "model size N, features or width"}


def _band(x_dense, per_seed, x, fit: dict, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile band of the law over the seed bootstrap (the run's settings)."""
    cache: dict[bytes, scaling.Fit] = {}

    def fit_fn(L):  # identical resamples give identical means: fit each once
        key = np.round(np.log(np.asarray(L, float)), 10).tobytes()
        if key not in cache:
            cache[key] = scaling.fit_power_law(x, L, delta=delta)
        return cache[key]

    boot = scaling.bootstrap_seeds(
        fit_fn, per_seed, n_boot=int(fit["n_boot"]), level=float(fit["level"])
    )
    s = boot.samples
    curves = s["E"][:, None] + s["A"][:, None] * x_dense[None, :] ** (-s["alpha"][:, None])
    q = 100 * (1 - boot.level) / 2
    return np.percentile(curves, q, axis=0), np.percentile(curves, 100 - q, axis=0)


def _law(params: dict, x: np.ndarray) -> np.ndarray:
    return params["E"] + params["A"] * x ** (-params["alpha"])


def _one_var(ax, block: dict, kind: str, delta: float, theory: float | None) -> None:
    x = np.asarray(block["x"], float)
    per_seed = np.asarray(block["loss_per_seed"], float)
    mean = np.asarray(block["loss_mean"], float)
    ext = block.get("extrapolation")
    held = np.zeros(x.shape, bool)
    if ext:
        held = np.isin(x, [h["x"] for h in ext["heldout"]])
    err = np.stack([mean - per_seed.min(axis=0), per_seed.max(axis=0) - mean])
    color = style.PALETTE["blue"]
    ax.errorbar(
        x[~held],
        mean[~held],
        yerr=err[:, ~held],
        fmt="o",
        ms=4,
        color=color,
        capsize=2,
        label="mean over seeds (min–max)",
    )
    dense = np.geomspace(x.min(), x.max(), 200)
    fit = block.get("fit")
    if fit:
        p, ci = fit["params"], fit.get("ci", {})
        lo, hi = _band(dense, per_seed, x, fit, delta) if per_seed.shape[0] >= 2 else (None, None)
        if lo is not None:
            ax.fill_between(
                dense,
                lo,
                hi,
                color=color,
                alpha=0.2,
                lw=0,
                label=f"{100 * fit['level']:.0f}% seed-bootstrap band",
            )
        a_ci = ci.get("alpha")
        text = f"fit: α = {p['alpha']:.2f}" + (f" [{a_ci[0]:.2f}, {a_ci[1]:.2f}]" if a_ci else "")
        if theory is not None:
            text += f" (theory {theory:.2f})"
        ax.plot(dense, _law(p, dense), color=style.COLORS["fit"], lw=1.4, label=text)
    if ext:
        pe = ext["fit"]["params"]
        ax.plot(
            dense,
            _law(pe, dense),
            color=style.PALETTE["vermillion"],
            lw=1.2,
            ls="--",
            label=f"fit without the largest {int(held.sum())}: α = {pe['alpha']:.2f}",
        )
        ax.errorbar(
            x[held],
            mean[held],
            yerr=err[:, held],
            fmt="s",
            ms=6,
            mfc="white",
            color=style.PALETTE["vermillion"],
            capsize=2,
            label=f"held out: rel. error {100 * ext['mean_abs_rel_error']:.1f}%",
        )
    ax.set(xscale="log", yscale="log", xlabel=f"{AXES[kind]} (log scale)")
    ax.legend(loc="lower left", fontsize=6.5, framealpha=0.9)
    style.plain_log_ticks(ax)


def _joint(ax, block: dict) -> str:
    """Points and joint-law curves per N; returns the fit's summary text (for the title)."""
    Ns, Ds = np.asarray(block["N"], float), np.asarray(block["D"], float)
    loss = np.asarray(block["loss_mean"], float)  # (|N|, |D|)
    ext = block.get("extrapolation")
    held = {(h["N"], h["D"]) for h in ext["heldout"]} if ext else set()
    fit = block.get("fit")
    dense = np.geomspace(Ds.min(), Ds.max(), 100)
    for i, n in enumerate(Ns):
        color = style.CYCLE[i % len(style.CYCLE)]
        is_held = np.array([(n, d) in held for d in Ds])
        ax.plot(Ds[~is_held], loss[i][~is_held], "o", ms=3.5, color=color, label=f"N = {n:g}")
        ax.plot(Ds[is_held], loss[i][is_held], "s", ms=5.5, mfc="white", color=color)
        if fit:
            p = fit["params"]
            ax.plot(
                dense,
                p["E"] + p["A"] * n ** (-p["alpha"]) + p["B"] * dense ** (-p["beta"]),
                color=color,
                lw=1.0,
            )
    ax.set(xscale="log", yscale="log", xlabel="data size D (examples, log scale)")
    lines = []
    if fit:
        p, ci = fit["params"], fit.get("ci", {})
        fmt = lambda k: f"{p[k]:.2f}" + (f" [{ci[k][0]:.2f}, {ci[k][1]:.2f}]" if k in ci else "")
        lines.append(f"α = {fmt('alpha')}, β = {fmt('beta')}")
    if ext:
        lines.append(f"held out (open squares): rel. error {100 * ext['mean_abs_rel_error']:.1f}%")
    ax.legend(
        loc="best", fontsize=6.5, ncol=3, framealpha=0.9, handletextpad=0.2, columnspacing=0.8
    )
    style.plain_log_ticks(ax)
    return "\n".join(lines)


def draw(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Draw ``scaling_laws.png``/``.pdf`` into ``out_dir`` from a scaling-laws run."""
    run_dir = runs.require(
        run_dir, figure=NAME, experiment=EXPERIMENT, files=["config.json", "results.json"]
    )
    where = dict(figure=NAME, experiment=EXPERIMENT, run_dir=run_dir)
    res = runs.read_json(run_dir / "results.json")
    tasks = [t for t in TASKS if res.get(t)]
    if not tasks:
        runs.need(res, ["teacher_student"], where="results.json", **where)
    for t in tasks:
        runs.need(res[t], ["data", "model", "joint"], where=f"results.json['{t}']", **where)
    cfg = runs.read_json(run_dir / "config.json").get("config", {})
    delta = float(cfg.get("huber_delta", 1e-3))

    style.apply()
    fig, axes = style.plt.subplots(len(tasks), 3, figsize=(12.5, 3.9 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks, strict=True):
        r = res[task]
        theory = r.get("theory", {})
        if task == "teacher_student":
            fixed = {"data": "all features", "model": "infinite data"}
        else:
            fixed = {"data": f"width {max(r['widths'])}", "model": f"D = {max(r['data_sizes'])}"}
        for ax, kind in zip(row[:2], ("data", "model"), strict=True):
            _one_var(ax, r[kind], kind, delta, theory.get(f"{kind}_exponent"))
            ax.set_title(f"{TASKS[task]}: loss vs {'D' if kind == 'data' else 'N'} ({fixed[kind]})")
        text = _joint(row[2], r["joint"])
        row[2].set_title(f"{TASKS[task]}: joint fit E + A/N^α + B/D^β\n{text}", fontsize=8.5)
        ylabel = (
            "population risk (squared error)"
            if task == "teacher_student"
            else "test cross-entropy (nats)"
        )
        row[0].set_ylabel(f"{ylabel}, log scale")
    ts = res.get("teacher_student", {})
    setup = ts.get("setup", {})
    spec = ts.get("spectrum", {})
    title = "Scaling laws: fits by Huber loss on log residuals with seed-bootstrap intervals"
    if setup:
        title += (
            f"\nteacher-student: covariance $\\lambda_k \\propto k^{{-{setup.get('a')}}}$, "
            f"target power $\\propto k^{{-{setup.get('b')}}}$; data exponent predicted "
            f"from the Gram spectrum and labels: "
            f"{spec.get('predicted_data_exponent', float('nan')):.2f}"
        )
    fig.suptitle(title, fontsize=10)
    return style.save(fig, out_dir, NAME)


if __name__ == "__main__":
    raise SystemExit(runs.script(NAME, EXPERIMENT, draw))
