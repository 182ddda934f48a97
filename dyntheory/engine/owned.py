"""What a run directory owns: dyntheory deletes only what it wrote.

A directory becomes a run directory when dyntheory creates it or starts a run in it; it then
holds a marker, ``.dyntheory-run`` (JSON ``{"written": [names]}``), that lists every top-level
entry dyntheory wrote there (files, ``checkpoints/``, sub-run directories, figures). Run
directories written before the marker existed are recognised by what only dyntheory writes: a
``config.json`` naming an experiment, a sub-run's ``spec.json``, or an orbax checkpoint.

Everything else in a run directory is *foreign*: ``dyntheory run --force`` refuses to clear a
directory that holds anything foreign (naming the first such file), and a failed command removes
only the entries it created itself. Sub-run directories are checked the same way, recursively;
``checkpoints/`` and ``events/`` belong to orbax and TensorBoard as a whole.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from dyntheory.engine import faults

CONFIG, METRICS, ARRAYS, RESULTS, CHECKPOINTS, SPEC = (
    "config.json",
    "metrics.jsonl",
    "probes.npz",
    "results.json",
    "checkpoints",
    "spec.json",
)
EVENTS_DIR, LOCK, MARKER, LOG = "events", ".lock", ".dyntheory-run", "dyntheory.log"
# the names the engine itself writes in every run directory
ENGINE_NAMES = (CONFIG, METRICS, ARRAYS, RESULTS, CHECKPOINTS, SPEC, EVENTS_DIR, LOG)
# directories owned as a whole (their contents are another library's format)
OPAQUE = (CHECKPOINTS, EVENTS_DIR)
# the temporary files of an atomic write and of the writability check
TEMPORARY = re.compile(r"^\.[^/]+\.[0-9a-f]{8}\.tmp$|^\.write-test-[0-9a-f]{8}$")


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is recognisably a run directory (the module docstring says how)."""
    path = Path(path)
    if (path / MARKER).is_file() or (path / SPEC).is_file():
        return True
    try:
        config = json.loads((path / CONFIG).read_text())
        if isinstance(config, dict) and "experiment" in config and "config" in config:
            return True
    except (OSError, ValueError):
        pass
    ckpt = path / CHECKPOINTS
    return ckpt.is_dir() and any((p / "_CHECKPOINT_METADATA").is_file() for p in ckpt.iterdir())


def written(path: str | os.PathLike) -> set[str]:
    """The top-level names dyntheory wrote in ``path`` (empty if it is no run directory)."""
    path = Path(path)
    marker = path / MARKER
    if marker.is_file():
        try:
            names = set(json.loads(marker.read_text())["written"])
        except (OSError, ValueError, KeyError, TypeError):
            names = set()
    elif is_run_dir(path):  # an older run directory: infer what the engine writes
        names = {n for n in ENGINE_NAMES if (path / n).exists()}
        names |= {p.name for p in path.iterdir() if p.is_dir() and is_run_dir(p)}
    else:
        return set()
    return names | {LOCK, MARKER}


def _write_marker(path: Path, names: Iterable[str]) -> None:
    text = json.dumps({"written": sorted(set(names) - {LOCK, MARKER})}) + "\n"
    tmp = path / f".{MARKER}.{os.urandom(4).hex()}.tmp"
    tmp.write_text(text)
    faults.point(f"write:{MARKER}:before-rename")
    os.replace(tmp, path / MARKER)


def mark(path: str | os.PathLike) -> None:
    """Make ``path`` a run directory (write its marker; an older one keeps what it had)."""
    path = Path(path)
    if not (path / MARKER).is_file():
        _write_marker(path, written(path))


def claim(path: str | os.PathLike) -> None:
    """Record that dyntheory wrote ``path`` (a no-op unless its parent is a marked run dir)."""
    path = Path(path)
    parent = path.parent
    if not (parent / MARKER).is_file() or TEMPORARY.match(path.name):
        return
    names = written(parent)
    if path.name not in names:
        _write_marker(parent, names | {path.name})


def make_dirs(path: str | os.PathLike) -> None:
    """Create the directory ``path`` and its missing parents. Each one created inside a run
    directory is claimed by its parent and marked: a sub-run's grouping directory (an
    experiment's ``<out>/<signal>/<arm>``) is dyntheory's, so ``--force`` may clear it."""
    path = Path(path)
    missing = []
    while not path.is_dir() and path.parent != path:
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        claim(d)  # a no-op unless the parent is a run directory
        d.mkdir(exist_ok=True)
        if (d.parent / MARKER).is_file():
            mark(d)


def foreign(path: str | os.PathLike) -> Path | None:
    """The first entry under ``path`` that dyntheory did not write (sub-runs checked
    recursively), or ``None``."""
    path = Path(path)
    mine = written(path)
    for child in sorted(path.iterdir()):
        if child.name in (LOCK, MARKER):
            continue
        if child.name not in mine and not TEMPORARY.match(child.name):
            return child
        if child.name in OPAQUE or not child.is_dir() or child.is_symlink():
            continue
        if child.name in mine and is_run_dir(child):
            inner = foreign(child)
            if inner is not None:
                return inner
    return None


def collision(path: str | os.PathLike) -> Path | None:
    """The first file of a run's own names (``config.json``, ``metrics.jsonl``, ...) present in
    ``path`` that dyntheory did not write: a run there would overwrite it. ``None`` if none."""
    path = Path(path)
    mine = written(path)
    for name in ENGINE_NAMES:
        if name not in mine and (path / name).exists():
            return path / name
    return None


def remove(path: str | os.PathLike, names: Iterable[str]) -> None:
    """Remove the entries ``names`` of ``path`` (each must be one dyntheory wrote) and drop
    them from its marker."""
    path = Path(path)
    names = set(names) - {LOCK, MARKER}
    mine = written(path)
    assert names <= mine, f"refusing to remove {sorted(names - mine)}: not written by dyntheory"
    for name in sorted(names):
        child = path / name
        faults.point("clear:remove")
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        elif child.exists() or child.is_symlink():
            child.unlink()
    if (path / MARKER).is_file():
        _write_marker(path, mine - names)


def remove_leftovers(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files an interrupted atomic write left in ``path`` and its sub-runs
    (their names are dyntheory's own); returns what was deleted."""
    path = Path(path)
    gone = []
    for child in path.iterdir():
        if child.is_file() and TEMPORARY.match(child.name):
            child.unlink(missing_ok=True)
            gone.append(child)
        elif child.is_dir() and child.name not in OPAQUE and is_run_dir(child):
            gone += remove_leftovers(child)
    return gone
