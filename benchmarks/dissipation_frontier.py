"""W_S integrators on grokking quick: the largest loss-identity error over the whole run against
the probes' cost, side by side (THEORY.md §10: "The refresh schedule is an integrator").

    .venv/bin/python benchmarks/dissipation_frontier.py --out runs/frontier            # all
    .venv/bin/python benchmarks/dissipation_frontier.py --out runs/frontier --only stepwise-r0
    .venv/bin/python benchmarks/dissipation_frontier.py --out runs/frontier-1k --set steps=1000 \
        --only stepwise-r0 refresh-2/decade refresh-2/decade-warm adaptive-8/decade-tol0.1
    .venv/bin/python benchmarks/dissipation_frontier.py --out runs/frontier-paper --preset paper \
        --only stepwise-r0 refresh-2/decade-warm adaptive-8/decade-tol0.1     # on a GPU

Each integrator is one run of ``dyntheory run grokking --preset quick --set seeds=1 --set
optimizers=<opt>`` (5,000 steps, ÷ mod 59, W_S over all 1,711 training examples from step 10;
``--preset paper``: the paper's transformer on ÷ mod 97, 40,000 steps, W_S over its whole training
split, hours on a GPU; nothing here needs one) with the ``--set`` overrides of :data:`INTEGRATORS`
and the command line's ``--set``, plus a baseline without probes; an existing run directory is read,
not rerun (the warm start and the adaptive schedule's tolerance, THEORY.md §10 "Warm starts and
error control", are the config's ``dissipation_warm_start`` and ``dissipation_refresh_tol``).
Printed per integrator: the largest identity error over the probe steps from the start to the end
(and where it is), the largest before memorization (99 % train), between memorization and grokking
(95 % test) and after, and the cost: probe time over the baseline's training time, over the whole
run and from the start ``s = 10`` on (before it every probe step of a refresh integrator restarts
W_S with a cold refresh). An in-scan integrator's work is inside the fused training steps, so its
cost is ``(train_s + probe_s − baseline train_s) / baseline train_s``. Timings are wall time on a
shared machine: compare rows of one invocation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from dyntheory.engine.rundir import load_metrics

SEEDS = ["--set", "seeds=1"]
REFRESH_KEY = "probe/dissipation/identity_rel_err_augmented"
STEPWISE_KEY = "probe/stepwise/identity_rel_err"
# name -> (--set overrides, metrics key of the identity error that integrator reports)
SW = ["dissipation_integrator=stepwise", "ntk_spectrum=false"]
RF = ["dissipation_integrator=refresh", "ntk_spectrum=false"]
INTEGRATORS = {
    "baseline": (["probes_per_decade=0"], None),
    "stepwise-r0": (["probes_per_decade=4", *SW, "stepwise_rule=left"], STEPWISE_KEY),
    "stepwise-midpoint": (["probes_per_decade=4", *SW, "stepwise_rule=midpoint"], STEPWISE_KEY),
    "stepwise-full-gradient": (
        ["probes_per_decade=4", *SW, "stepwise_rule=left", "stepwise_gradient=full"],
        STEPWISE_KEY,
    ),
    "stepwise-r4": (
        ["probes_per_decade=4", *SW, "stepwise_rule=midpoint", "stepwise_rank=4"],
        STEPWISE_KEY,
    ),
    "refresh-1/decade": (["probes_per_decade=1", *RF], REFRESH_KEY),
    "refresh-2/decade": (["probes_per_decade=2", *RF], REFRESH_KEY),
    "refresh-4/decade": (["probes_per_decade=4", *RF], REFRESH_KEY),
    # the refresh seeded with the last one's Ritz vectors (block Krylov, depth 2)
    "refresh-2/decade-warm": (
        ["probes_per_decade=2", *RF, "dissipation_warm_start=true"],
        REFRESH_KEY,
    ),
    # a monitor at 8 probe steps a decade; the kernel refreshed (warm) where it passes the tolerance
    **{
        f"adaptive-8/decade-tol{tol}": (
            ["probes_per_decade=8", *RF, "dissipation_warm_start=true"]
            + [f"dissipation_refresh_tol={tol}"],
            REFRESH_KEY,
        )
        for tol in (0.1, 0.3, 1.0)
    },
}


def run(out: Path, name: str, optimizer: str, extra: list[str] = (), preset: str = "quick") -> Path:
    where = out / f"{name.replace('/', '-')}-{optimizer}"
    if not (where / optimizer / "metrics.jsonl").exists():
        sets = [a for s in [*INTEGRATORS[name][0], *extra] for a in ("--set", s)]
        args = ["run", "grokking", "--preset", preset, *SEEDS, "--set", f"optimizers={optimizer}"]
        args += sets
        args += ["--out", str(where), "--force"]
        cmd = [sys.executable, "-m", "dyntheory.cli.app", *args]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return where


def summary(where: Path, optimizer: str, key: str | None, base_train: float | None) -> dict:
    h = load_metrics(where / optimizer)
    res = json.loads((where / "results.json").read_text())["optimizers"][optimizer]
    mem = res["steps_to_train_target"]["median"]
    grok = res["steps_to_test_target"]["median"]
    train_s, probe_s = float(h["time/train_s"][-1]), float(h["time/probe_s"][-1])
    out = {"train_s": train_s, "probe_s": probe_s, "memorized": mem, "grokked": grok}
    if base_train is not None:
        out["cost"] = (train_s + probe_s - base_train) / base_train
        # the probes' time after the start s = 10 only (before it, each probe step restarts W_S)
        at = np.flatnonzero(np.asarray(h["step"]) >= 10)
        probe_at_s = float(np.asarray(h["time/probe_s"], float).ravel()[at[0]]) if at.size else 0.0
        out["cost_from_s"] = (train_s + probe_s - probe_at_s - base_train) / base_train
    if key is None or key not in h:
        return out
    if key.startswith("probe/dissipation/"):  # refreshes on [s, T]: every probe step's, or counted
        counted = h.get("probe/dissipation/refreshes")
        drop = np.asarray(h["probe/dissipation/loss_drop"], float).ravel()
        rows = np.isfinite(drop) & (np.asarray(h["step"]) >= 10)  # the one at s included
        out["refreshes"] = int(np.nanmax(counted)) if counted is not None else int(rows.sum())
    steps, err = np.asarray(h["step"]), np.asarray(h[key], float).ravel()
    ok = np.isfinite(err) & (steps >= 10)
    steps, err = steps[ok], err[ok]
    i = int(np.argmax(err))
    out.update(max_err=float(err[i]), at=int(steps[i]), probes=int(ok.sum()))
    edges = [10, mem or 10**9, grok or 10**9, 10**9]
    phases = ("before_mem", "mem_to_grok", "after_grok")
    for label, lo, hi in zip(phases, edges, edges[1:], strict=False):
        sel = (steps >= lo) & (steps < hi)
        out[label] = float(err[sel].max()) if sel.any() else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder of the run directories")
    ap.add_argument("--optimizer", default="adamw", choices=("adamw", "prm"))
    ap.add_argument("--only", nargs="*", default=None, help="integrators to run (and baseline)")
    ap.add_argument("--set", action="append", default=[], help="a config override for every run")
    ap.add_argument("--preset", default="quick", help="grokking preset (paper: a GPU's job)")
    args = ap.parse_args()
    names = [n for n in INTEGRATORS if args.only is None or n in args.only or n == "baseline"]
    where = {n: run(args.out, n, args.optimizer, args.set, args.preset) for n in names}
    rows = {"baseline": summary(where["baseline"], args.optimizer, None, None)}
    base = rows["baseline"]["train_s"]
    for n in names[1:]:
        rows[n] = summary(where[n], args.optimizer, INTEGRATORS[n][1], base)
    fmt = lambda v, f: "—" if v is None else format(v, f)
    sets = "".join(f", {s}" for s in args.set)
    print(
        f"\ngrokking {args.preset}{sets}, {args.optimizer}, 1 seed; baseline training {base:.0f} s"
    )
    head = "| integrator | max identity error (step) | before 99 % train | to 95 % test | after |"
    print(head + " refreshes | probe time / train time | from s on |")
    print("|---|---|---|---|---|---|---|---|")
    for n in names[1:]:
        r = rows[n]
        err = f"{fmt(r.get('max_err'), '.3g')} ({r.get('at', '—')})"
        cells = [fmt(r.get(k), ".3g") for k in ("before_mem", "mem_to_grok", "after_grok")]
        cells.append(str(r.get("refreshes", "—")))
        cost = f"{fmt(r.get('cost'), '.2f')} | {fmt(r.get('cost_from_s'), '.2f')}"
        print(f"| {n} | {err} | {' | '.join(cells)} | {cost} |")


if __name__ == "__main__":
    main()
