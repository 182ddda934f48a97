"""Terminal tables and the comparison figure of trainability reports.

Reads the JSON-ready dicts of :func:`dyntheory.diagnostics.report.diagnose` only.

- :func:`format_report`: one report as a table (one row per parameter group, depth order).
- :func:`format_comparison`: one line of headline scalars (:func:`summary_row`) per report.
- :func:`draw_comparison`: per-layer relative gradients and output sensitivities, the NTK
  spectrum and the overfit curve of several reports, in one PNG.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["draw_comparison", "format_comparison", "format_report", "layer_table", "summary_row"]


def _g(v, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def layer_table(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per parameter group (depth order), joining every per-layer measure."""
    jac = report["jacobian"]
    fwd = {r["layer"]: r for r in jac["input_to_layer"]}
    bwd = {r["layer"]: r for r in jac["layer_to_output"]}
    nl = report["nonlinearity"] or {"blocks": [], "activation": []}
    blocks = {b["from"]: b["nonlinearity"] for b in nl["blocks"]}
    acts = {a["layer"]: a["nonlinearity"] for a in nl["activation"]}
    return [
        {
            **row,
            "input_to_layer": fwd.get(row["name"], {}).get("spectral"),
            "layer_to_output": bwd.get(row["name"], {}).get("spectral"),
            "block_nonlinearity": blocks.get(row["name"]),
            "act_nonlinearity": acts.get(row["name"]),
        }
        for row in report["gradients"]["layers"]
    ]


def format_report(report: dict[str, Any], title: str = "") -> str:
    """The report as a terminal table."""
    k, g = report["ntk"], report["gradients"]
    lines = [
        f"{title + ': ' if title else ''}{report['num_params']:,} params, batch n={report['n']},"
        f" p={report['p']}, loss {report['loss']} (initial {report['initial_loss']:.4g}),"
        f" output rms {report['output_rms']:.3g}"
    ]
    lines.append(
        f"NTK: lambda_max {k['lambda_max']:.4g}  lambda_min {k['lambda_min']:.3g}  "
        f"cond {k['condition_number']:.3g}  eff.rank {k['effective_rank_participation']:.3g}"
        f"  KTA {k['kernel_target_alignment']:.3g}  suggested max lr "
        f"{k['suggested_max_lr']:.4g}"
    )
    e2e = report["jacobian"]["end_to_end"]
    if e2e is not None:
        lines.append(
            f"input-output Jacobian: frobenius {e2e['frobenius']:.3g}  spectral "
            f"{e2e['spectral']:.3g} (max {e2e['spectral_max']:.3g})"
        )
    head = (
        "layer",
        "|theta|",
        "|grad|",
        "|grad|/|theta|",
        "|dA/dx|_2",
        "|df/dZ|_2",
        "nonlin block",
        "nonlin act",
    )
    rows = [head] + [
        (
            r["name"],
            _g(r["param_norm"]),
            _g(r["grad_norm"]),
            _g(r["relative_grad"]),
            _g(r["input_to_layer"]),
            _g(r["layer_to_output"]),
            _g(r["block_nonlinearity"], ".3f"),
            _g(r["act_nonlinearity"], ".3f"),
        )
        for r in layer_table(report)
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    lines.append(
        f"relative-gradient ratio first/last hidden: {_g(g['grad_ratio'])}  "
        f"(spread max/min {_g(g['grad_spread'])})"
    )
    lin, fit = report["linearized"], report["overfit"]
    if lin is not None:
        lines.append(
            f"linearized GD (lr {lin['lr']:.3g}, {lin['steps']} steps): loss ratio "
            f"{lin['loss_ratio']:.3g}"
        )
    if fit is not None:
        what = (
            f"fit in {fit['steps_to_fit']} steps"
            if fit["status"] == "fit"
            else f"{fit['status']} (final ratio {_g(fit['final_ratio'])})"
        )
        lines.append(
            f"overfit test ({fit['optimizer']}, lr {fit['lr']:.3g}, {fit['steps']} steps, "
            f"tol {fit['tol']:g}): {what}"
        )
    warns = report["warnings"]
    lines.append("warnings: " + ("none" if not warns else ""))
    lines += [f"  ! {w['name']}: {w['message']}" for w in warns]
    return "\n".join(lines)


def summary_row(report: dict[str, Any]) -> dict[str, Any]:
    """The headline scalars of a report (one row of :func:`format_comparison`)."""
    k, fit = report["ntk"], report["overfit"]
    e2e = report["jacobian"]["end_to_end"]
    nl = report["nonlinearity"]
    blocks = [b["nonlinearity"] for b in nl["blocks"]] if nl else []
    return {
        "lambda_max": k["lambda_max"],
        "condition_number": k["condition_number"],
        "effective_rank": k["effective_rank_participation"],
        "kta": k["kernel_target_alignment"],
        "suggested_max_lr": k["suggested_max_lr"],
        "grad_ratio": report["gradients"]["grad_ratio"],
        "jacobian_spectral": None if e2e is None else e2e["spectral"],
        "mean_block_nonlinearity": float(np.mean(blocks)) if blocks else None,
        "overfit": None if fit is None else fit["status"],
        "steps_to_fit": None if fit is None else fit["steps_to_fit"],
        "warnings": [w["name"] for w in report["warnings"]],
    }


def format_comparison(reports: dict[str, dict[str, Any]]) -> str:
    """One line per labelled report: the :func:`summary_row` scalars."""
    head = (
        "run",
        "lambda_max",
        "cond",
        "eff.rank",
        "KTA",
        "max lr",
        "grad ratio",
        "|J|_2",
        "nonlin",
        "overfit",
        "warnings",
    )
    rows = [head]
    for label, rep in reports.items():
        s = summary_row(rep)
        fit = (
            "-"
            if s["overfit"] is None
            else (f"fit@{s['steps_to_fit']}" if s["overfit"] == "fit" else s["overfit"])
        )
        rows.append(
            (
                label,
                _g(s["lambda_max"]),
                _g(s["condition_number"], ".2g"),
                _g(s["effective_rank"]),
                _g(s["kta"]),
                _g(s["suggested_max_lr"]),
                _g(s["grad_ratio"], ".2g"),
                _g(s["jacobian_spectral"]),
                _g(s["mean_block_nonlinearity"], ".3f"),
                fit,
                ",".join(s["warnings"]) or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i in (0, len(head) - 1) else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    )


def draw_comparison(reports: dict[str, dict], path) -> None:
    """Four panels per compared run: relative gradients and output sensitivities per layer,
    the NTK spectrum (normalized), and the overfit test's loss curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    (ag, aj), (ak, ao) = axes
    for label, rep in reports.items():
        g = rep["gradients"]
        rho = {r["name"]: r["relative_grad"] for r in g["layers"]}
        ag.plot([rho[k] if rho[k] else np.nan for k in g["depth_layers"]], ".-", label=label)
        sens = [r["spectral"] for r in rep["jacobian"]["layer_to_output"]]
        if sens:
            aj.plot(sens, ".-", label=label)
        lam = np.clip(np.asarray(rep["ntk"]["eigenvalues"]), 1e-300, None)
        ak.plot(np.arange(1, lam.size + 1), lam / lam[0], label=label)
        if rep["overfit"] is not None:
            v = np.asarray([np.nan if u is None else u for u in rep["overfit"]["losses"]])
            ao.plot(v / v[0], label=label)
    ag.set(
        yscale="log",
        xlabel="layer (depth order)",
        ylabel="|grad| / |theta|",
        title="relative gradient per layer",
    )
    aj.set(
        yscale="log",
        xlabel="dense layer (call order)",
        ylabel="mean sigma_max(df/dZ)",
        title="output sensitivity per layer",
    )
    ak.set(
        xscale="log",
        yscale="log",
        xlabel="rank",
        ylabel="lambda / lambda_max",
        title="NTK spectrum at init",
    )
    ao.set(yscale="log", xlabel="step", ylabel="loss / initial", title="one-batch overfit test")
    for a in axes.ravel():
        if a.lines:
            a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
