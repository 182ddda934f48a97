"""Named write points of a run, where the fault-injection tests kill the process.

Every place where the engine or the CLI changes a file of a run directory calls :func:`point`
with a name (``"write:metrics.jsonl:before-rename"``, ``"checkpoint:after-save"``, ...). Two
environment variables drive it, both unset in normal use (then a call is one dictionary look-up):

- ``DYNTHEORY_FAULT_TRACE=FILE``: append each point's name, one per line, to ``FILE`` (how the
  tests enumerate the points a run passes);
- ``DYNTHEORY_FAULT=NAME:K``: at the ``K``-th time (1-based) the process passes ``NAME``, it dies
  at once with ``os._exit(137)``, as under ``kill -9``: no ``finally``, no ``atexit``, no flush.
"""

from __future__ import annotations

import os

KILLED = 137  # the exit status of the injected death (128 + SIGKILL)
_hits: dict[str, int] = {}


def point(name: str) -> None:
    """Pass the write point ``name``: die here if it is the targeted hit (module docstring)."""
    if hit(name):
        os._exit(KILLED)


def hit(name: str) -> bool:
    """Count a pass of ``name`` (and trace it); ``True`` at the targeted hit, for a point that
    does part of its work before dying (a half-written append)."""
    trace = os.environ.get("DYNTHEORY_FAULT_TRACE")
    if trace:
        with open(trace, "a") as f:
            f.write(name + "\n")
    target = os.environ.get("DYNTHEORY_FAULT")
    if not target:
        return False
    want, _, k = target.rpartition(":")
    if want != name:
        return False
    _hits[name] = _hits.get(name, 0) + 1
    return _hits[name] == int(k or 1)
