"""Orbax checkpoints of a run: train state, probe accumulators and host-side bookkeeping.

A checkpoint at step ``t`` is taken *before* any of step ``t``'s work (its probes, its metrics
line), so resuming from it recomputes step ``t`` exactly as the uninterrupted run did. Each step
is one orbax ``CheckpointManager`` step directory with two items: ``state`` (a pytree saved with
``StandardSave``: params, optimizer state, step, key data, probe states) and ``meta`` (JSON:
timings and anything else the host needs). Orbax writes into a temporary directory and renames
it when complete, so a run killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


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

    def close(self) -> None:
        self._manager.close()


def abstract_like(tree: Any) -> Any:
    """``ShapeDtypeStruct``s (with shardings) of a pytree of arrays, as a restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )
