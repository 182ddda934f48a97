"""Before a resume writes anything: do the run files agree with the checkpoint it resumes from?

A checkpoint at step ``t`` records in its ``meta`` how many ``metrics.jsonl`` lines and how many
records of each probe the run had written before step ``t`` (``meta["records"]``). A resume keeps
exactly those and recomputes the rest, so a file that holds fewer (deleted, cut short, replaced)
would silently lose steps. :func:`plan` compares, and decides by the policy in force:

- ``"strict"`` (the default): refuse with :class:`IntegrityError`, naming each missing or short
  file and the steps a resume would lose;
- ``"rebuild"``: resume from the latest checkpoint all the same; the named files are rebuilt from
  that step on, and the steps before it stay missing from them (said on stderr);
- ``"truncate"``: resume from the newest checkpoint that every file covers (possibly step 0, a
  start over), recomputing what follows it.

The policy is chosen explicitly, by ``dyntheory resume --rebuild / --truncate`` or
``with integrity.policy("rebuild"):`` around library code. A run directory with run files but no
checkpoint at all is refused under ``"strict"`` too: resuming it would start over at step 0.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import NamedTuple

from dyntheory.engine import owned, records

POLICIES = ("strict", "rebuild", "truncate")
_POLICY = contextvars.ContextVar("dyntheory_resume_policy", default="strict")


class IntegrityError(OSError):
    """The run files and the checkpoints disagree; the message names the files and the loss.
    ``no_checkpoint``: the run has files but no checkpoint at all."""

    def __init__(self, message: str, no_checkpoint: bool = False):
        super().__init__(message)
        self.no_checkpoint = no_checkpoint


class CheckpointError(OSError):
    """No checkpoint of a run could be restored; the message names them and the log file."""


@contextlib.contextmanager
def policy(name: str):
    """Resume under ``name`` (one of :data:`POLICIES`) inside the ``with`` block."""
    if name not in POLICIES:
        raise ValueError(f"unknown resume policy {name!r}; one of {', '.join(POLICIES)}.")
    token = _POLICY.set(name)
    try:
        yield
    finally:
        _POLICY.reset(token)


def current_policy() -> str:
    return _POLICY.get()


class Plan(NamedTuple):
    start: int | None  # the checkpoint step to restore (None: step 0, a fresh state)
    candidates: tuple[int, ...]  # older checkpoints to try if ``start`` fails to restore
    notes: tuple[str, ...]  # what the chosen policy does, to print


def checkpoint_meta(path: str | os.PathLike, step: int) -> dict:
    """The ``meta`` item of checkpoint ``step`` in ``path/checkpoints`` ({} if unreadable)."""
    f = Path(path) / owned.CHECKPOINTS / str(step) / "meta" / "metadata"
    try:
        return dict(json.loads(f.read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def checkpoint_steps(path: str | os.PathLike) -> list[int]:
    d = Path(path) / owned.CHECKPOINTS
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _metrics_steps(path: Path) -> list[int] | None:
    f = path / owned.METRICS
    if not f.is_file():
        return None
    out = []
    for line in f.read_text().split("\n"):
        try:
            out.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError, TypeError):
            continue  # a partial or corrupt line: the reader names a corrupt one
    return out


def _probe_counts(path: Path, before: int) -> dict[str, int] | str | None:
    f = path / owned.ARRAYS
    if not f.is_file():
        return None
    try:
        import numpy as np

        with np.load(f) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        return f"{f} is corrupt ({e})"
    return {k: len(v) for k, v in records.unstack_arrays(arrays, before).items()}


def problems(path: str | os.PathLike, step: int) -> list[str]:
    """What the run files of ``path`` lack for a resume from checkpoint ``step`` (empty: none)."""
    path = Path(path)
    want = checkpoint_meta(path, step).get("records")
    out = []
    steps = _metrics_steps(path)
    if step > 0 and steps is None:
        lost = f"would lose the metrics of steps 0-{step - 1}"
        out.append(f"{path / owned.METRICS} is missing: a resume from step {step} {lost}")
    elif want is not None and steps is not None:
        have = sum(s < step for s in steps)
        if have < want["metrics_lines"]:
            last = max((s for s in steps if s < step), default=None)
            kept = f"ends at step {last}" if last is not None else "has no line before it"
            out.append(
                f"{path / owned.METRICS} is short: it {kept}, and holds {have} of the "
                f"{want['metrics_lines']} lines the checkpoint at step {step} was written after"
            )
    expected = (want or {}).get("probes", {})
    if any(expected.values()):
        counts = _probe_counts(path, step)
        if counts is None:
            lost = f"would lose the probe arrays of steps 0-{step - 1}"
            out.append(f"{path / owned.ARRAYS} is missing: a resume from step {step} {lost}")
        elif isinstance(counts, str):
            out.append(counts)
        else:
            for name, n in expected.items():
                have = counts.get(name, 0)
                if have < n:
                    out.append(
                        f"{path / owned.ARRAYS} is short: probe {name!r} has {have} of the {n} "
                        f"records before step {step}"
                    )
    return out


def has_run_files(path: str | os.PathLike) -> list[str]:
    """The run files (metrics, probe arrays, results) present in ``path``."""
    path = Path(path)
    return [n for n in (owned.METRICS, owned.ARRAYS, owned.RESULTS) if (path / n).is_file()]


def plan(path: str | os.PathLike, policy_name: str | None = None) -> Plan:
    """Where a resume of the engine run directory ``path`` starts, under the policy in force;
    :class:`IntegrityError` if it may not (the module docstring lists the policies)."""
    path = Path(path)
    name = policy_name or current_policy()
    steps = checkpoint_steps(path)
    if not steps:
        files = has_run_files(path)
        if files and name != "truncate":
            ckpt = path / owned.CHECKPOINTS
            state = "is empty" if ckpt.is_dir() else "is missing"
            raise IntegrityError(
                f"{path} has {', '.join(files)} but no checkpoint to resume from ({ckpt} "
                f"{state}): resuming would start over at step 0 and replace them",
                no_checkpoint=True,
            )
        notes = (f"{path}: no checkpoint; starting over at step 0",) if files else ()
        return Plan(None, (), notes)
    latest = steps[-1]
    found = problems(path, latest)
    if not found or name == "rebuild":
        notes = tuple(f"{p}; rebuilding it from step {latest} on" for p in found)
        return Plan(latest, tuple(reversed(steps[:-1])), notes)
    if name == "truncate":
        good = [s for s in reversed(steps) if not problems(path, s)]
        if good:
            note = f"{found[0]}; resuming {path} from its checkpoint at step {good[0]}"
            return Plan(good[0], tuple(good[1:]), (note,))
        return Plan(None, (), (f"{found[0]}; no checkpoint of {path} is covered: starting over",))
    raise IntegrityError("; ".join(found))


_SAID: set[str] = set()


def say(notes) -> None:
    """Print each note once per process (the CLI's pre-check and the engine both plan)."""
    for note in notes:
        if note not in _SAID:
            _SAID.add(note)
            print(f"note: {note}.", file=sys.stderr)
