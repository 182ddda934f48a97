"""The command line's persistent compilation cache: a second run of the same shapes skips XLA.

A run compiles its fused step and each probe before the first step; on a CPU that is most of a
small run's wall time. ``dyntheory run`` / ``resume`` / ``diagnose`` keep the compiled programs in
JAX's persistent compilation cache (``jax_compilation_cache_dir``), so a later run of the same
programs (same model, batch, probes, device count, JAX version and flags) loads them from disk.

- Directory: ``$DYNTHEORY_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/dyntheory/jax``, else
  ``~/.cache/dyntheory/jax``. Entries are a few hundred kB to a few MB each and are never
  evicted; deleting the directory is always safe (the next run compiles again).
- Off: ``dyntheory --no-compile-cache COMMAND ...``, or ``DYNTHEORY_COMPILE_CACHE=0``.
- JAX's own setting wins: with ``JAX_COMPILATION_CACHE_DIR`` set (or
  ``jax_compilation_cache_dir`` set by the caller), that cache is used as configured.
- The library (:func:`dyntheory.engine.fit`, :class:`~dyntheory.engine.Trainer`) leaves JAX's
  settings alone; a Python caller turns the cache on with :func:`enable`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

ENV_DIR = "DYNTHEORY_CACHE_DIR"
ENV_SWITCH = "DYNTHEORY_COMPILE_CACHE"
OFF_VALUES = ("0", "false", "no", "off")


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$DYNTHEORY_CACHE_DIR``, else ``$XDG_CACHE_HOME/dyntheory/jax``, else
    ``~/.cache/dyntheory/jax``."""
    env = os.environ if env is None else env
    if env.get(ENV_DIR):
        return Path(env[ENV_DIR]).expanduser()
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base.expanduser() / "dyntheory" / "jax"


def wanted(flag: bool = True, env: Mapping[str, str] | None = None) -> bool:
    """Whether to use the cache: ``flag`` (False for ``--no-compile-cache``) and
    ``$DYNTHEORY_COMPILE_CACHE`` not one of ``0 false no off``."""
    env = os.environ if env is None else env
    return flag and env.get(ENV_SWITCH, "1").strip().lower() not in OFF_VALUES


def quiet_hits() -> None:
    """Every cache hit logs a C++ warning ("Assume version compatibility"), one per program: with
    the cache on, XLA's C++ log shows errors only, unless the user set its level. Takes effect
    only before JAX is first imported."""
    if "jax" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def enable(path: str | Path | None = None) -> Path | None:
    """Point JAX's persistent compilation cache at ``path`` (default :func:`cache_dir`) and cache
    every compiled program, whatever its compile time. Call it before the first compilation.
    A cache directory JAX already has (``JAX_COMPILATION_CACHE_DIR``) is kept, with its settings.

    Returns the directory in use, or None (with a one-line note on stderr) when it cannot be
    created: the run then goes on without a cache.
    """
    quiet_hits()
    import jax

    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    path = Path(path) if path is not None else cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        note = f"dyntheory: note: compilation cache off: cannot create {path} ({e})"
        print(note, file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
