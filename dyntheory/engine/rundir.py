"""Run directories: what a run writes, and how figures and resumes read it back.

Layout of ``RUN_DIR``::

    config.json     {"experiment", "preset", "overrides", "config": {...}} — the resolved config
    metrics.jsonl   one JSON object per logged step: {"step": t, ["seed": s,] "train/loss": ...}
    probes.npz      probe arrays over time: "<probe>/<array>" (T, ...) with "<probe>/step" (T,)
    checkpoints/    orbax checkpoints (dyntheory.engine.checkpoint)
    results.json    the run's headline numbers

Metric keys are ``/``-namespaced scalars: ``train/*``, ``<eval set>/*``, ``probe/<probe>/*``,
``time/*`` (cumulative seconds: ``time/train_s``, ``time/probe_s``, ``time/checkpoint_s``).
Multi-seed runs write one line per seed and step with a ``"seed"`` field; :func:`metrics_table`
turns either form into arrays of shape ``(T,)`` or ``(T, S)``. Non-finite values are written as
``NaN`` / ``Infinity`` (Python's ``json`` reads them).

Every whole-file write goes to a temporary file in the same directory and is renamed into place;
files are created with the process's umask (``0644`` under the usual ``022``). A crash in the
middle of an append can leave a partial last line in ``metrics.jsonl``: readers skip it and a
resume drops it. One process at a time writes a run directory (:meth:`RunDir.lock`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dyntheory.engine import config as config_lib
from dyntheory.engine import faults, owned, records, resume, sharding
from dyntheory.engine.checkpoint import Checkpointer
from dyntheory.engine.files import (  # re-exported: the run directory's file operations
    RunDirError,
    atomic_write,
    check_writable_dir,
    jsonable,
    parse_lines,
    read_json,
    write_bytes,
    write_json,
    write_npz,
)
from dyntheory.engine.owned import (  # re-exported: the names of a run directory's files
    ARRAYS,
    CHECKPOINTS,
    CONFIG,
    EVENTS_DIR,
    LOCK,
    LOG,
    MARKER,
    METRICS,
    RESULTS,
    SPEC,
)

__all__ = [
    "ARRAYS",
    "CHECKPOINTS",
    "CONFIG",
    "EVENTS_DIR",
    "LOCK",
    "LOG",
    "MARKER",
    "METRICS",
    "RESULTS",
    "SPEC",
    "RunDir",
    "RunDirError",
    "load_metrics",
    "read_json",
    "subrun_dir",
    "write_bytes",
    "write_json",
    "write_npz",
]


_LOCKS: dict[Path, tuple[int, int]] = {}  # run directory -> (fd of its lock file, depth)


class RunDir:
    """A run directory; creating one checks it is writable (before any compute), unless
    ``check=False`` (the CLI checks once it holds the lock). A directory this call creates is
    marked as a run directory (:mod:`dyntheory.engine.owned`), and so claimed by its parent if
    that is one (a sub-run)."""

    def __init__(self, path: str | os.PathLike, create: bool = True, check: bool = True):
        self.path = Path(path)
        if create and sharding.is_main_process():
            existed = self.path.is_dir()
            try:  # a sub-run, and any directory above it, claimed before it exists
                owned.make_dirs(self.path)
            except OSError as e:
                raise RunDirError(f"cannot write to the run directory {self.path}: {e}") from None
            if not existed:
                owned.mark(self.path)
            if check:
                self.check_writable()
        elif not self.path.is_dir() and (not create or sharding.is_main_process()):
            raise RunDirError(f"{self.path} is not a directory.")

    def check_writable(self) -> None:
        """:class:`RunDirError` unless the directory and what a run writes into below it
        (``checkpoints/``, sub-runs' ``checkpoints/``) accept new files: checked before compute."""
        if not self.path.is_dir():
            raise RunDirError(f"cannot write to the run directory {self.path}: not a directory.")
        found = [self.file(CHECKPOINTS), *self.path.glob(f"**/{CHECKPOINTS}")]
        for d in found:
            if d.exists() and not d.is_dir():
                raise RunDirError(
                    f"cannot write to the run directory {self.path}: {d} is not a directory."
                )
        dirs = [self.path, *(d for d in found if d.is_dir())]
        for d in dirs:
            try:
                check_writable_dir(d)
            except RunDirError as e:
                raise RunDirError(f"cannot write to the run directory {self.path}: {e}") from None

    @contextlib.contextmanager
    def lock(self):
        """Hold the run directory's exclusive lock (``.lock``, ``flock``) while writing to it.

        A second process gets :class:`RunDirError` naming the directory and the holder's PID at
        once; the kernel drops the lock when its holder dies, so a stale ``.lock`` never blocks.
        Re-entrant within a process. Only the main process of a multi-process run locks.
        """
        if not sharding.is_main_process():
            yield self
            return
        key = self.path.resolve()
        if key in _LOCKS:
            fd, depth = _LOCKS[key]
            _LOCKS[key] = (fd, depth + 1)
        else:
            fd = os.open(self.file(LOCK), os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise
                raise RunDirError(
                    f"{self.path} is in use by another dyntheory process (PID {holder}); "
                    "wait for it to finish or stop it."
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            _LOCKS[key] = (fd, 1)
        try:
            yield self
        finally:
            fd, depth = _LOCKS[key]
            if depth > 1:
                _LOCKS[key] = (fd, depth - 1)
            else:
                del _LOCKS[key]
                os.close(fd)  # releases the flock; the file stays (a stale one is harmless)

    def __fspath__(self) -> str:
        return str(self.path)

    def file(self, name: str) -> Path:
        return self.path / name

    # config / results
    def write_config(self, config: Mapping[str, Any]) -> None:
        write_json(self.file(CONFIG), config)

    def read_config(self) -> dict[str, Any]:
        """The saved ``config.json``; :class:`RunDirError` if missing or corrupt (naming it)."""
        if not self.file(CONFIG).exists():
            raise RunDirError(
                f"{self.path} is not a run directory (no {CONFIG}): nothing to resume; start a "
                f"run there with `dyntheory run EXPERIMENT --out {self.path}`."
            )
        return read_json(self.file(CONFIG))

    def write_results(self, results: Mapping[str, Any]) -> None:
        write_json(self.file(RESULTS), results)

    def read_results(self) -> dict[str, Any]:
        return read_json(self.file(RESULTS))

    # metrics
    def append_metrics(self, lines: Iterable[Mapping[str, Any]]) -> None:
        text = "".join(json.dumps(jsonable(line)) + "\n" for line in lines)
        if text:
            owned.claim(self.file(METRICS))  # before the file can exist unclaimed
            faults.point("append:metrics.jsonl:before")
            with open(self.file(METRICS), "a") as f:
                if faults.hit("append:metrics.jsonl:half"):  # killed in the middle of it
                    f.write(text[: len(text) // 2])
                    f.flush()
                    os._exit(faults.KILLED)
                f.write(text)
                f.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.file(METRICS)
        if not path.exists():
            return []
        return [d for _, d in parse_lines(path, path.read_text())]

    def truncate_metrics(self, before_step: int) -> None:
        """Keep only the lines of steps ``< before_step`` (a resume recomputes the rest) and drop
        a partial last line."""
        path = self.file(METRICS)
        if not path.exists():
            return
        keep = [line for line, d in parse_lines(path, path.read_text()) if d["step"] < before_step]
        atomic_write(path, lambda f: f.write("".join(keep).encode()))

    def foreign(self) -> Path | None:
        """The first file here (or in a sub-run) that dyntheory did not write, or ``None``."""
        return owned.foreign(self.path)

    def clear(self) -> None:
        """Remove everything dyntheory wrote here (``dyntheory run --force``, a sub-run whose
        spec changed); :class:`RunDirError` naming the first foreign file, before anything is
        removed, if the directory holds anything else."""
        bad = self.foreign()
        if bad is not None:
            raise RunDirError(
                f"refusing to clear {self.path}: {bad} was not written by dyntheory "
                "(move it away, or choose another --out)."
            )
        owned.remove(self.path, owned.written(self.path))

    def reset(self) -> None:
        """Remove what a previous run wrote (metrics, arrays, results, checkpoints, events):
        an explicit start over (``fit(..., resume=False)``)."""
        mine = owned.written(self.path)
        owned.remove(
            self.path,
            [n for n in (METRICS, ARRAYS, RESULTS, CHECKPOINTS, EVENTS_DIR) if n in mine],
        )

    # probe arrays
    def write_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        write_npz(self.file(ARRAYS), arrays)

    def read_arrays(self) -> dict[str, np.ndarray]:
        path = self.file(ARRAYS)
        if not path.exists():
            return {}
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def checkpointer(self, keep: int = 2):
        if sharding.is_main_process():
            owned.claim(self.file(CHECKPOINTS))  # before orbax creates it
        return Checkpointer(self.file(CHECKPOINTS), keep=keep)

    def has_run(self) -> bool:
        """Whether a run was started here: metrics (here or in a sub-run) or a checkpoint."""
        return (
            self.file(METRICS).exists()
            or any(self.path.glob(f"**/{METRICS}"))
            or self.has_checkpoint()
        )

    def checkpoint_steps(self) -> dict[str, list[int]]:
        """``{checkpoints dir relative to the run directory: its steps}``, sub-runs included."""
        dirs = [self.file(CHECKPOINTS), *self.path.glob(f"**/{CHECKPOINTS}")]
        return {
            str(d.relative_to(self.path)): sorted(
                int(p.name) for p in d.iterdir() if p.name.isdigit()
            )
            for d in sorted(set(dirs))
            if d.is_dir()
        }

    def has_checkpoint(self) -> bool:
        """Whether a checkpoint exists here or in a sub-run directory below (experiments that
        run one engine run per optimizer or grid point keep them there)."""
        dirs = [self.file(CHECKPOINTS), *self.path.glob(f"**/{CHECKPOINTS}")]
        return any(d.is_dir() and any(p.name.isdigit() for p in d.iterdir()) for d in dirs)


def subrun_dir(
    path: str | os.PathLike | None,
    spec: Mapping[str, Any],
    extendable: Iterable[str] = (),
    *,
    config: Any = None,
) -> RunDir | None:
    """The engine run directory at ``path`` for a sub-run described by ``spec``; the one
    convention by which experiments resume their sub-runs (one per optimizer, width, ...).

    ``spec.json`` records what the sub-run is. A matching one lets the engine resume it (a re-run
    or ``dyntheory resume`` after an interruption continues where it stopped); a different or
    missing one empties the directory first, so a changed config starts over. ``config`` (the
    experiment's config) is recorded as ``spec["config"]``, and its resumable keys
    (:func:`dyntheory.engine.resume.resumable_keys`: ``train.steps``, the optimizer's
    hyperparameters, ...) may change without starting over: a longer run continues the shorter
    one, a smaller ``lr`` continues from the last good checkpoint. ``extendable`` lists further
    dotted keys of ``spec`` of that kind. ``None`` passes through (no run directory).
    ``dyntheory run --force`` empties the whole run directory (:meth:`RunDir.clear`), sub-runs
    included.
    """
    if path is None:
        return None
    extendable = list(extendable)
    if config is not None:
        spec = {**spec, "config": config_lib.to_dict(config)}
        extendable += [f"config.{k}" for k in resume.resumable_keys(config)]
    rd = RunDir(path)
    spec = json.loads(json.dumps(jsonable(spec)))  # tuples → lists, as read back
    for key in extendable:
        parts = key.split(".")
        node = spec
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = None
    f = rd.file(SPEC)
    if not f.exists() or read_json(f) != spec:
        if sharding.is_main_process():
            rd.clear()  # refuses, naming it, if anything here is not dyntheory's
            owned.mark(rd.path)
            owned.claim(rd.path)
            write_json(f, spec)
    return rd


def load_metrics(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """:func:`dyntheory.engine.records.metrics_table` of a run directory's ``metrics.jsonl``;
    ``FileNotFoundError`` naming the directory if it has none (an empty file: an empty table)."""
    rd = RunDir(run_dir, create=False)
    if not rd.file(METRICS).is_file():
        raise FileNotFoundError(f"{rd.path} has no {METRICS}")
    return records.metrics_table(rd.read_metrics())
