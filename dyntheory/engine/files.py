"""Whole-file writes and reads of a run directory: atomic, claimed, fault-injectable.

Every whole-file write goes to a temporary file in the same directory and is renamed into place
(its name claimed in the run directory's marker first, :mod:`dyntheory.engine.owned`); files are
created with the process's umask. Only the main process of a multi-process run writes.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dyntheory.engine import faults, owned, sharding


class RunDirError(OSError):
    """The run directory cannot be used (not writable, not a run directory, ...)."""


def atomic_write(path: Path, write) -> None:
    """Replace ``path`` atomically; a no-op on every process but the main one of a
    multi-process run (one writer per run, whichever experiment code calls it)."""
    if not sharding.is_main_process():
        return
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    # os.open's mode goes through the umask, as open() does (mkstemp would give 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        owned.claim(path)  # first: a kill after the rename must not leave it unclaimed
        faults.point(f"write:{path.name}:before-rename")
        os.replace(tmp, path)
        faults.point(f"write:{path.name}:after-rename")
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_writable_dir(directory: Path) -> None:
    tmp = directory / f".write-test-{secrets.token_hex(4)}"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(tmp)
    except OSError as e:
        raise RunDirError(f"cannot write to {directory}: {e.strerror or e}.") from None


def jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray | np.generic):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "__array__"):
        return np.asarray(x).tolist()
    return x


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically."""
    atomic_write(Path(path), lambda f: f.write(data))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    text = json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n"
    atomic_write(Path(path), lambda f: f.write(text.encode()))


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Replace ``path`` by an ``.npz`` of ``arrays`` atomically (main process only)."""
    atomic_write(Path(path), lambda f: np.savez(f, **arrays))


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``; :class:`RunDirError` naming the file if it is not valid JSON."""
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path} is corrupt (not valid JSON: {e}).") from None


def parse_lines(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    """``(line, parsed)`` of a metrics file; a partial last line (a crash in the middle of an
    append) is skipped, a corrupt line elsewhere raises :class:`RunDirError` naming it."""
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append((line + "\n", json.loads(line)))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:  # no newline after it: the append never completed
                break
            raise RunDirError(f"{path}, line {i + 1}, is corrupt: {e}.") from None
    return out
