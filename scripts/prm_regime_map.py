"""PRM's regime map on the grokking quick task: where, if anywhere, does PRM grok sooner than AdamW?

Runs ``dyntheory run grokking --preset quick`` once for AdamW per batch and once per PRM program
(mask × batch × gated weight decay: the choices compiled into the program), each PRM run a grid
over α (``--grid prm_alpha=1,b/(n-b)``: every α trains in that one program, each in its own
sub-run), probes off, and prints one Markdown table: steps to 99 % train and to 95 % test per seed
and median, the ratio AdamW / cell on the median steps to 95 % test (> 1: the cell groks sooner),
and PRM's mean gate q (median over the run, then over seeds).

    PYTHONPATH=. python scripts/prm_regime_map.py --out /tmp/prm-map              # the full map
    PYTHONPATH=. python scripts/prm_regime_map.py --out /tmp/prm-map --batches 512 --seeds 2

A run whose ``results.json`` already exists under ``--out`` is read, not rerun, and one that was
interrupted is resumed from its checkpoints, so an interrupted map continues where it stopped.
Full batch has no sampling noise, so α = b/(n − b) is undefined there and only α = 1 is run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from dyntheory.cli.experiments import resume_experiment, run_experiment
from dyntheory.optim import finite_dataset_alpha

MASKS = ("snr", "soft", "hard")
QUICK_N_TRAIN = round(0.5 * 59 * 58)  # the quick task: half of the 59 · 58 pairs of ÷ mod 59


def alpha_value(alpha: str, batch: str) -> float:
    """α as a number: ``b/(n-b)`` is the quick task's finite-dataset value for batch 512."""
    return finite_dataset_alpha(512, QUICK_N_TRAIN) if alpha == "b/(n-b)" else float(alpha)


def runs(batches, alphas, masks, gate_wd):
    """(label, overrides, {arm name: α label}) per run: AdamW per batch, then PRM per mask ×
    gated decay × batch with its αs as one grid."""
    out = []
    for batch in batches:
        b = [] if batch == "512" else ["batch_size=none"]
        out.append((f"adamw batch={batch}", ["optimizers=adamw", *b], {"adamw": None}))
        todo = [a for a in alphas if batch != "full" or a == "1"]  # b/(n − b) = ∞ at full batch
        if not todo:
            continue
        for mask, gwd in itertools.product(masks, gate_wd):
            values = [alpha_value(a, batch) for a in todo]
            g = ["prm_gate_weight_decay=true"] if gwd else []
            label = f"prm {mask} batch={batch}" + (" wd gated" if gwd else "")
            grid = ["--grid", "prm_alpha=" + ",".join(repr(v) for v in values)]
            names = {f"prm_prm_alpha{v:g}": a for v, a in zip(values, todo, strict=True)}
            out.append((label, ["optimizers=prm", f"prm_mask={mask}", *b, *g, *grid], names))
    return out


def fmt(x):
    return "—" if x is None else f"{x:,.0f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--batches", default="512,full", help="comma list of 512 and/or full")
    ap.add_argument("--alphas", default="1,b/(n-b)", help="comma list: numbers and/or b/(n-b)")
    ap.add_argument("--masks", default=",".join(MASKS))
    ap.add_argument(
        "--gate-wd",
        default="off,on",
        help="off and/or on: the weight decay ungated (Algorithm 1) and/or gated",
    )
    args = ap.parse_args(argv)
    common = [f"seeds={args.seeds}", f"steps={args.steps}", "probes_per_decade=0"]
    gate_wd = [g == "on" for g in args.gate_wd.split(",")]
    todo = runs(args.batches.split(","), args.alphas.split(","), args.masks.split(","), gate_wd)
    rows, base = [], {}
    for label, over, names in todo:
        path = Path(args.out) / label.replace(" ", "_").replace("/", "÷").replace("=", "-")
        t0 = time.perf_counter()
        sets = [x for x in over if x != "--grid"]  # --grid k=v1,v2 is --set k=v1,v2
        if (path / "results.json").exists():
            res = json.loads((path / "results.json").read_text())
        elif (path / "config.json").exists():  # an interrupted run continues from its checkpoints
            _, res = resume_experiment(path)
        else:
            _, res = run_experiment("grokking", "quick", [*common, *sets], out=path)
        batch = label.split("batch=")[1].split()[0]
        for arm, alpha in names.items():
            r = res["optimizers"][arm if len(names) > 1 or arm == "adamw" else "prm"]
            te = r["steps_to_test_target"]
            if arm == "adamw":
                base[batch] = te["median"]
            q = r.get("gate_mean_median_over_run")
            cell = label.replace(" batch", f" α={alpha} batch") if alpha else label
            rows.append(
                [
                    cell,
                    " / ".join(fmt(s) for s in r["steps_to_train_target"]["per_seed"]),
                    " / ".join(fmt(s) for s in te["per_seed"]),
                    fmt(te["median"]),
                    (batch, te["median"]),
                    "—" if not q else f"{np.median(q):.3f}",
                ]
            )
            print(f"{cell}: {rows[-1][1:4]}", flush=True)
        print(f"{label}: {time.perf_counter() - t0:.0f} s", flush=True)
    for row in rows:
        batch, med = row[4]
        ok = med is not None and base.get(batch) is not None
        row[4] = f"{base[batch] / med:.2f}" if ok else "—"
    cmd = "PYTHONPATH=. python scripts/prm_regime_map.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
    )
    print(f"\n`{cmd}` (quick task: ÷ mod 59, half the pairs, {args.steps} steps)\n")
    print("| run | 99 % train (per seed) | 95 % test (per seed) | median | AdamW / run | gate q |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
