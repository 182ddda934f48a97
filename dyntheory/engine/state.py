"""The engine's value types: the training state, the result of a run, the non-finite stop; and the
small tree functions of the fused step."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Params = Any


class TrainState(NamedTuple):
    """The whole training state; with ``seeds > 1`` every field but ``step`` has a seed axis."""

    params: Params  # the model's params pytree ((S, ...) leaves with seeds)
    opt_state: Any  # the optimizer's state, laid out like the params
    step: jax.Array  # int32 (): optimizer updates applied so far (shared by all seeds)
    key: jax.Array  # typed PRNG key () or (S,): the root of the per-step keys fold_in(key, step)


class NonFiniteError(FloatingPointError):
    """The loss or the params became NaN/Inf; ``.step``, ``.quantity`` and ``.member`` (the first
    member of a population that did, its grid cell's settings and seed) say where."""

    def __init__(self, step: int, quantity: str, checkpoint: int | None, member: str | None = None):
        self.step, self.quantity, self.checkpoint = step, quantity, checkpoint
        self.member = member  # which member of a population: "seed 1", "cell lr=0.01, seed 1"
        where = f" ({member})" if member is not None else ""
        last = (
            f"the last good checkpoint is step {checkpoint}"
            if checkpoint is not None
            else ("no checkpoint was written")
        )
        super().__init__(
            f"non-finite {quantity} at step {step}{where}; the run stopped and {last}."
        )


class FitResult(NamedTuple):
    """What :func:`fit` returns."""

    state: TrainState  # the final state (on the mesh)
    final: dict[str, np.ndarray]  # the last metrics line (arrays of shape (S,) with seeds)
    history: dict[str, np.ndarray]  # every logged line of the run (``records.metrics_table``)
    arrays: dict[str, np.ndarray]  # probe arrays over time (what probes.npz holds)
    probe_states: dict[str, Any]  # each probe's final state (e.g. the dissipation accumulator)
    run_dir: Any  # the run directory's Path, or None


def all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


# fresh buffers with the same layout (jitted: also for arrays of other processes)
copy_tree = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))


def when(pred: jax.Array, fn, otherwise):
    """``fn()`` where ``pred``, else ``otherwise(shapes)`` with ``shapes`` the
    ``ShapeDtypeStruct`` tree of ``fn()``'s result. ``lax.switch`` traces its branches in order,
    so ``otherwise`` takes the shapes from ``fn``'s own trace: ``fn`` is traced once, where
    ``jax.eval_shape`` would trace it a second time."""
    seen = {}

    def first():
        out = fn()
        seen["shapes"] = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), out)
        return out

    return lax.switch(jnp.where(pred, 0, 1), [first, lambda: otherwise(seen["shapes"])])
