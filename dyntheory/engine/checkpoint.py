"""Orbax checkpoints of a run: train state, probe accumulators and host-side bookkeeping.

A checkpoint at step ``t`` is taken *before* any of step ``t``'s work (its probes, its metrics
line), so resuming from it recomputes step ``t`` exactly as the uninterrupted run did. Each step
is one orbax ``CheckpointManager`` step directory with two items: ``state`` (a pytree saved with
``StandardSave``: params, optimizer state, step, key data, probe states) and ``meta`` (JSON:
timings and anything else the host needs). Orbax writes into a temporary directory and renames
it when complete, so a run killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from dyntheory.engine.integrity import CheckpointError


class Checkpointer:
    """Save / restore numbered checkpoints under ``directory`` (keeps the ``keep`` newest)."""

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, tree: Any, meta: dict[str, Any]) -> None:
        args = ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta))
        self._manager.save(int(step), args=args, force=True)
        self._manager.wait_until_finished()

    def restore(self, step: int, abstract: Any) -> tuple[Any, dict[str, Any]]:
        """Restore onto ``abstract`` (a pytree of ``jax.ShapeDtypeStruct`` with shardings)."""
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        )
        out = self._manager.restore(int(step), args=args)
        return out.state, dict(out.meta)

    def restore_first(
        self, steps: Sequence[int], abstract: Any, log: str | os.PathLike
    ) -> tuple[int, Any, dict[str, Any]]:
        """Restore the first of ``steps`` that restores: ``(step, state, meta)``.

        A checkpoint that fails (corrupt or missing files) is named in one line on stderr, kept
        for inspection as ``checkpoints/<step>.corrupt`` (so the run can write that step anew),
        and the next is tried; orbax's and tensorstore's own output and the full error go to the
        file ``log``, never to the screen. :class:`CheckpointError` if none restores.
        """
        failed = []
        for i, step in enumerate(steps):
            try:
                with _output_to(log):
                    tree, meta = self.restore(step, abstract)
                return step, tree, meta
            except Exception as e:  # orbax raises many kinds; all mean "cannot use this one"
                with open(log, "a") as f:
                    f.write(f"checkpoint {step} of {self.directory} failed to restore:\n")
                    f.write("".join(traceback.format_exception(e)))
                failed.append(step)
                self._set_aside(step)
                after = f"; trying checkpoint {steps[i + 1]}" if i + 1 < len(steps) else ""
                print(
                    f"dyntheory: checkpoint {step} of {self.directory} failed to restore "
                    f"({type(e).__name__}; details in {log}){after}.",
                    file=sys.stderr,
                )
        raise CheckpointError(
            f"no checkpoint of {self.directory} restores (tried {', '.join(map(str, failed))}; "
            f"details in {log})."
        )

    def drop_after(self, step: int) -> list[int]:
        """Delete the checkpoints after ``step`` (a resume from ``step`` rewrites them: only
        under an explicit ``--truncate``); returns their steps."""
        later = [s for s in self.all_steps() if s > step]
        for s in later:
            self._manager.delete(s)
        return later

    def _set_aside(self, step: int) -> None:
        src = self.directory / str(step)
        dst = self.directory / f"{step}.corrupt"
        i = 1
        while dst.exists():
            i += 1
            dst = self.directory / f"{step}.corrupt{i}"
        if src.exists():
            os.replace(src, dst)
        self._manager.reload()

    def close(self) -> None:
        self._manager.close()


@contextlib.contextmanager
def _output_to(log: str | os.PathLike):
    """Send everything written to stderr (by Python, C++ or a background thread) and every
    unraisable exception (orbax's failed futures, collected later) to ``log``."""
    sys.stderr.flush()
    saved, hook = os.dup(2), sys.unraisablehook
    with open(log, "ab") as f:
        os.dup2(f.fileno(), 2)

        def to_log(u):
            f.write(f"unraisable: {u.exc_type.__name__}: {u.exc_value}\n".encode())
            f.write("".join(traceback.format_exception(u.exc_value)).encode())

        sys.unraisablehook = to_log
        try:
            yield
        except BaseException:
            # tensorstore's callbacks of a failed read report from their own threads, a moment
            # after the error: wait for them while their output still goes to the log
            for _ in range(10):
                gc.collect()
                time.sleep(0.05)
            raise
        finally:
            sys.stderr.flush()
            f.flush()
            sys.unraisablehook = hook
            os.dup2(saved, 2)
            os.close(saved)


def abstract_like(tree: Any) -> Any:
    """``ShapeDtypeStruct``s (with shardings) of a pytree of arrays, as a restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )
