"""Training batches as pure functions of (root key, step): reproducible and resumable at any step.

Regimes (chosen by :func:`make_batcher` from the data and
:class:`~dyntheory.engine.config.TrainConfig`):

- full batch: ``data`` is a dict of arrays and ``batch_size=None``; every step sees all of it.
- fixed dataset, ``sampling="epoch"``: a fresh permutation per epoch from
  ``fold_in(data_key, epoch)``, batches are consecutive slices of it (the remainder is dropped).
- fixed dataset, ``sampling="replacement"``: i.i.d. indices from ``fold_in(key, step)``.
- fresh batches: ``data`` is a sampler ``(key, batch_size) -> batch`` (teacher-student, PINN
  collocation), called with ``fold_in(key, step)``.

A batch is a dict of arrays with the examples on axis 0 (``"x"``, ``"y"`` for the built-in
losses). The epoch permutation is carried through the fused ``lax.scan`` and recomputed from the
step at the start of every dispatch, so nothing but (key, step) is needed to resume.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

Batch = dict[str, jax.Array]
Sampler = Callable[[jax.Array, int], Batch]

# fold_in tags for keys that are not per-step (steps are fold_in(key, step), step < 2**32 - 4).
DATA_TAG = 0xFFFFFFFF
EVAL_TAG = 0xFFFFFFFE


def step_key(key: jax.Array, step: jax.Array, stream: int) -> jax.Array:
    """Key of ``stream`` (0: batch, 1: loss/model randomness) at ``step``: fold_in(key, step)."""
    return jax.random.fold_in(jax.random.fold_in(key, step), stream)


def dataset_size(data: Mapping[str, Any]) -> int:
    sizes = {k: jnp.shape(v)[0] if jnp.ndim(v) else None for k, v in data.items()}
    if not sizes or None in sizes.values() or len(set(sizes.values())) != 1:
        shapes = {k: jnp.shape(v) for k, v in data.items()}
        raise ValueError(
            f"a dataset is a dict of arrays sharing their leading (example) axis; got {shapes}."
        )
    return next(iter(sizes.values()))


class Batcher(NamedTuple):
    """``start(key, step) -> carry`` and ``get(data, key, step, carry) -> (batch, carry)``;
    ``indices(key, step)``: the dataset rows of the step's batch (``None``: every row, or fresh
    batches that are not rows of a dataset)."""

    start: Callable[[jax.Array, jax.Array], Any]
    get: Callable[[Any, jax.Array, jax.Array, Any], tuple[Batch, Any]]
    kind: str
    batch_size: int
    indices: Callable[[jax.Array, jax.Array], jax.Array] | None = None

    def at(self, data: Any, key: jax.Array, step: jax.Array) -> Batch:
        """The batch of ``step`` (what the train step sees), without a carry."""
        return self.get(data, key, step, self.start(key, step))[0]

    def weights(self, key: jax.Array, step: jax.Array, n: int) -> jax.Array | None:
        """``(n,)`` weights ``c_i · n / b`` of the dataset's rows in the mean loss of ``step``'s
        batch (``c_i``: how often row ``i`` is drawn): ``∇L_batch = Jᵀ (weights ⊙ g)`` with ``g``
        the gradient of the whole set's mean loss. Ones for a full batch; ``None`` for fresh
        batches (no dataset rows)."""
        if self.kind == "fresh":
            return None
        if self.kind == "full":
            return jnp.ones((n,))
        counts = jnp.zeros((n,)).at[self.indices(key, step)].add(1.0)
        return counts * (n / self.batch_size)


def make_batcher(
    data: Mapping[str, Any] | Sampler, batch_size: int | None, sampling: str
) -> Batcher:
    """The batch function for ``data`` (a dataset dict or a sampler); see the module docstring."""
    if callable(data):
        if batch_size is None:
            raise ValueError(
                "a sampler (fresh batches) needs batch_size; full batch needs a dataset."
            )
        get = lambda _, key, step, carry: (data(step_key(key, step, 0), batch_size), carry)
        return Batcher(lambda key, step: (), get, "fresh", batch_size)
    n = dataset_size(data)
    if batch_size is None:
        return Batcher(lambda key, step: (), lambda d, key, step, c: (dict(d), c), "full", n)
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} exceeds the dataset's {n} examples.")
    take = lambda d, idx: {k: jnp.take(v, idx, axis=0) for k, v in d.items()}
    if sampling == "replacement":
        idx = lambda key, step: jax.random.randint(step_key(key, step, 0), (batch_size,), 0, n)
        get = lambda d, key, step, carry: (take(d, idx(key, step)), carry)
        return Batcher(lambda key, step: (), get, "replacement", batch_size, idx)
    if sampling != "epoch":
        raise ValueError(f"sampling must be 'epoch' or 'replacement', got {sampling!r}.")
    per_epoch = n // batch_size
    perm = lambda key, epoch: jax.random.permutation(
        jax.random.fold_in(jax.random.fold_in(key, DATA_TAG), epoch), n
    )

    def get(d, key, step, carry):
        epoch, j = jnp.divmod(step, per_epoch)
        carry = lax.cond(j == 0, lambda: perm(key, epoch), lambda: carry)
        return take(d, lax.dynamic_slice_in_dim(carry, j * batch_size, batch_size)), carry

    def idx(key, step):
        epoch, j = jnp.divmod(step, per_epoch)
        return lax.dynamic_slice_in_dim(perm(key, epoch), j * batch_size, batch_size)

    return Batcher(lambda key, step: perm(key, step // per_epoch), get, "epoch", batch_size, idx)
