"""Tables of a run's records: metrics lines as arrays, probe arrays stacked over time.

``metrics.jsonl`` holds one JSON object per logged step (``{"step": t, ["seed": s,] key: value}``);
``probes.npz`` holds ``"<probe>/<array>"`` of shape ``(T, ...)`` with ``"<probe>/step"`` (T,).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def metrics_table(lines: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Lines -> ``{"step": (T,), key: (T,) or (T, S)}``; missing values are NaN.

    ``T`` runs over the distinct logged steps in order; with a ``"seed"`` field the second axis
    runs over seeds.
    """
    lines = list(lines)
    steps = sorted({int(line["step"]) for line in lines})
    seeds = sorted({int(line.get("seed", 0)) for line in lines}) or [0]
    row = {s: i for i, s in enumerate(steps)}
    col = {s: i for i, s in enumerate(seeds)}
    keys = sorted({k for line in lines for k in line} - {"step", "seed"})
    out = {k: np.full((len(steps), len(seeds)), np.nan) for k in keys}
    for line in lines:
        r, c = row[int(line["step"])], col[int(line.get("seed", 0))]
        for k in keys:
            v = line.get(k)
            if isinstance(v, int | float) and not isinstance(v, bool):
                out[k][r, c] = v
    multi = any("seed" in line for line in lines)
    out = {k: v if multi else v[:, 0] for k, v in out.items()}
    out["step"] = np.asarray(steps, dtype=np.int64)
    return out


def stack_arrays(records: Mapping[str, list[tuple[int, dict[str, np.ndarray]]]]) -> dict:
    """``{probe: [(step, {name: array})]}`` -> ``{"probe/name": (T, ...), "probe/step": (T,)}``."""
    out = {}
    for probe, recs in records.items():
        if not recs:
            continue
        out[f"{probe}/step"] = np.asarray([s for s, _ in recs], dtype=np.int64)
        for name in recs[0][1]:
            out[f"{probe}/{name}"] = np.stack([np.asarray(a[name]) for _, a in recs])
    return out


def unstack_arrays(arrays: Mapping[str, np.ndarray], before_step: int) -> dict:
    """Inverse of :func:`stack_arrays`, keeping the records of steps ``< before_step``."""
    records: dict[str, list] = {}
    for key in arrays:
        if key.endswith("/step"):
            probe = key[: -len("/step")]
            names = [k[len(probe) + 1 :] for k in arrays if k.startswith(probe + "/") and k != key]
            steps = arrays[key]
            records[probe] = [
                (int(s), {n: arrays[f"{probe}/{n}"][i] for n in names})
                for i, s in enumerate(steps)
                if s < before_step
            ]
    return records


CLOCK_KEYS = ("time/train_s", "time/probe_s", "time/checkpoint_s", "time/compile_s")


def run_seconds(history: Mapping[str, np.ndarray]) -> float:
    """The seconds an engine run took, summed over every process that ran it (a run resumed
    twice counts all three): its last metrics line's cumulative clocks (``time/train_s`` is wall
    time less the others), the largest over seeds. 0 for an empty history."""
    total = 0.0
    for key in CLOCK_KEYS:
        v = np.asarray(history.get(key, []), dtype=float)
        if v.size:
            last = v[-1]
            total += float(np.nanmax(last)) if np.ndim(last) else float(last)
    return total
