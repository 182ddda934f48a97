"""``dyntheory metrics``: a run's logged metrics at chosen steps, as a Markdown table.

    dyntheory metrics RUN_DIR [RUN_DIR ...] --keys test/acc,probe/norms/param/global
        [--steps 0,500,1000 | --every 500] [--per-seed]

Each ``RUN_DIR`` is an engine run directory (the one holding ``metrics.jsonl``; for an
experiment that trains several optimizers, ``RUN/<optimizer>``). ``--keys`` are metric names or
shell-style patterns (``probe/norms/param/*``). A cell is the median over seeds of the key's
last finite value at or before the step, or with ``--per-seed`` the seeds' values joined by
``" / "``. It only reads: nothing under the run directories changes.
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


def cell(history: dict, key: str, step: int, per_seed: bool) -> str:
    """One table cell: the median over seeds, or every seed's value."""
    from dyntheory.probes.history import seed_columns, value_at  # loads JAX

    n = seed_columns(history[key]).shape[1]
    vals = [value_at(history, key, step, s) for s in range(n)]
    fmt = lambda v: "—" if v is None else f"{v:.4g}"
    if per_seed:
        return " / ".join(fmt(v) for v in vals)
    ok = [v for v in vals if v is not None]
    return fmt(float(np.median(ok)) if ok else None)


def table(run_dirs: list[str], patterns: list[str], steps=None, every=None, per_seed=False) -> str:
    """The Markdown table of ``dyntheory metrics`` (rows: steps; columns: run × key)."""
    from dyntheory.engine import rundir

    if not patterns:
        raise MetricsError("--keys is empty: name at least one metric")
    histories, columns = [], []
    for path in run_dirs:
        try:
            history = rundir.load_metrics(path)
        except FileNotFoundError as e:
            raise MetricsError(
                f"{e}: pass an engine run directory (for an experiment with several optimizers, "
                "RUN/<optimizer>)"
            ) from None
        if not len(history["step"]):
            raise MetricsError(f"{path}/{rundir.METRICS} is empty: the run has logged no step yet")
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
        out.append(f"| {s:,} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def add_arguments(p) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories to read")
    p.add_argument("--keys", required=True, help="comma list of metric names or patterns")
    p.add_argument("--steps", help="comma list of steps (default: every logged step)")
    p.add_argument("--every", type=int, help="every N steps from 0 to the last logged step")
    p.add_argument("--per-seed", action="store_true", help="every seed's value, not the median")


def handler(args) -> int:
    keys = [k.strip() for k in args.keys.split(",") if k.strip()]
    print(table(args.run_dirs, keys, args.steps, args.every, args.per_seed))
    return 0
