"""``dyntheory metrics``: a run's logged metrics at chosen steps, as a Markdown table.

    dyntheory metrics RUN_DIR [RUN_DIR ...] --keys test/acc,probe/norms/param/global
        [--steps 0,500,1000 | --every 500] [--per-seed]
    dyntheory metrics RUN_DIR [RUN_DIR ...] --list

Each ``RUN_DIR`` is an engine run directory (the one holding ``metrics.jsonl``; for an
experiment that trains several optimizers, ``RUN/<optimizer>``). ``--list`` shows the keys a run
logged, with how many steps logged each and the first and last of them. ``--keys`` are metric
names or shell-style patterns (``probe/norms/param/*``). A cell is the median over seeds of the
key's value logged *at* that step, or with ``--per-seed`` the seeds' values joined by ``" / "``;
a step at which a key (or a seed) has no finite value is blank, never filled from an earlier step.
With ``--every``, steps at which no column has a value are dropped. It only reads: nothing under
the run directories changes.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np

# dyntheory.engine.rundir and dyntheory.probes load JAX: imported where the table is made, so
# that building the command line's parser does not.


class MetricsError(ValueError):
    """A bad argument of ``dyntheory metrics`` (exit status 2, one line)."""


def select_keys(history: dict, patterns: list[str]) -> list[str]:
    """The metric names of ``history`` that match ``patterns``, in the patterns' order."""
    names = sorted(k for k in history if k != "step")
    out: list[str] = []
    for pat in patterns:
        out += [k for k in names if fnmatch.fnmatchcase(k, pat) and k not in out]
    return out


def steps_of(history: dict, steps: str | None, every: int | None) -> list[int]:
    """The steps to show: ``steps`` (comma list), else every ``every``-th logged step up to the
    last, else every logged step."""
    logged = [int(s) for s in history["step"]]
    if steps:
        try:
            return [int(s) for s in steps.split(",") if s.strip()]
        except ValueError:
            raise MetricsError(
                f"--steps takes integers separated by commas, got {steps!r}"
            ) from None
    if every is not None:
        if every < 1:
            raise MetricsError(f"--every must be >= 1, got {every}")
        return list(range(0, logged[-1] + 1, every))
    return logged


def values_at(history: dict, key: str, step: int) -> list[float | None]:
    """Each seed's finite value of ``key`` logged at exactly ``step`` (``None``: none there)."""
    from dyntheory.probes.history import seed_columns  # loads JAX

    cols = seed_columns(history[key])
    rows = np.flatnonzero(np.asarray(history["step"]) == step)
    out: list[float | None] = []
    for s in range(cols.shape[1]):
        vals = [float(cols[r, s]) for r in rows if np.isfinite(cols[r, s])]
        out.append(vals[-1] if vals else None)
    return out


def cell(history: dict, key: str, step: int, per_seed: bool) -> str:
    """One table cell: the median over seeds, or every seed's value; blank where none."""
    vals = values_at(history, key, step)
    fmt = lambda v: "" if v is None else f"{v:.4g}"
    if per_seed:
        return " / ".join(fmt(v) for v in vals) if any(v is not None for v in vals) else ""
    ok = [v for v in vals if v is not None]
    return fmt(float(np.median(ok)) if ok else None)


def key_list(run_dirs: list[str]) -> str:
    """The metric keys of each run, with the number of steps that logged each and their range."""
    from dyntheory.probes.history import seed_columns  # loads JAX

    out = []
    for path in run_dirs:
        history = _load(path)
        steps = np.asarray(history["step"])
        out.append(f"{path}: {len(set(steps.tolist()))} logged steps, {steps[0]}..{steps[-1]}")
        for key in sorted(k for k in history if k != "step"):
            logged = np.isfinite(seed_columns(history[key])).any(axis=1)
            at = sorted(set(steps[logged].tolist()))
            span = f"steps {at[0]}..{at[-1]}" if at else "no finite value"
            out.append(f"  {key}  ({len(at)} steps, {span})")
    return "\n".join(out)


def _load(path: str) -> dict:
    from dyntheory.engine import rundir  # loads JAX

    try:
        history = rundir.load_metrics(path)
    except FileNotFoundError as e:
        raise MetricsError(
            f"{e}: pass an engine run directory (for an experiment with several optimizers, "
            "RUN/<optimizer>)"
        ) from None
    if not len(history["step"]):
        raise MetricsError(f"{path}/{rundir.METRICS} is empty: the run has logged no step yet")
    return history


def table(run_dirs: list[str], patterns: list[str], steps=None, every=None, per_seed=False) -> str:
    """The Markdown table of ``dyntheory metrics`` (rows: steps; columns: run × key)."""

    if not patterns:
        raise MetricsError("--keys is empty: name at least one metric")
    histories, columns = [], []
    for path in run_dirs:
        history = _load(path)
        histories.append(history)
        columns += [(len(histories) - 1, path, k) for k in select_keys(history, patterns)]
    for pat in patterns:  # a pattern must match in some run
        if not any(fnmatch.fnmatchcase(k, pat) for _, _, k in columns):
            names = sorted({k for h in histories for k in h} - {"step"})
            near = [k for k in names if pat.split("*")[0].rstrip("/") in k][:8] or names[:8]
            raise MetricsError(f"no run has a metric matching {pat!r}; some they have: {near}")
    rows = steps_of(histories[0], steps, every)
    names = [Path(p).name for p in run_dirs]
    if len(set(names)) < len(names):  # e.g. two RUN/prm: name them by RUN/prm
        names = [str(Path(Path(p).parent.name) / Path(p).name) for p in run_dirs]
    head = [f"{names[i]}: {k}" if len(run_dirs) > 1 else k for i, _, k in columns]
    out = ["| step | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for s in rows:
        cells = [cell(histories[i], k, s, per_seed) for i, _, k in columns]
        if every is not None and not steps and not any(cells):
            continue  # a generated step that no column logged
        out.append(f"| {s:,} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def add_arguments(p) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories to read")
    p.add_argument("--keys", help="comma list of metric names or patterns")
    p.add_argument("--list", action="store_true", help="list the keys each run logged, and exit")
    p.add_argument("--steps", help="comma list of steps (default: every logged step)")
    p.add_argument("--every", type=int, help="every N steps from 0 to the last logged step")
    p.add_argument("--per-seed", action="store_true", help="every seed's value, not the median")


def handler(args) -> int:
    if args.list:
        print(key_list(args.run_dirs))
        return 0
    if not args.keys:
        raise MetricsError("name the metrics with --keys K1,K2 (see them with --list)")
    keys = [k.strip() for k in args.keys.split(",") if k.strip()]
    print(table(args.run_dirs, keys, args.steps, args.every, args.per_seed))
    return 0
