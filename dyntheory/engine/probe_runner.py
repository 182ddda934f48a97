"""The engine's side of the probes: fixed probe sets, and each probe jitted once over seeds."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dyntheory.engine import batching, sharding
from dyntheory.probes.base import ProbeContext


class ProbeRunner:
    """The engine's side of the probes of a :class:`~dyntheory.engine.Trainer`: the fixed probe
    sets, and each probe's ``init`` and ``__call__`` jitted once (vmapped over seeds).

    It uses the trainer's public surface only: ``cfg``, ``probes``, ``apply_fn``, ``loss_fn``,
    ``optimizer``, ``batcher``, ``data``, ``replicated``, ``batch_sharding``, ``vmap_seeds``.
    """

    def __init__(self, trainer, data, eval_sets, probe_data):
        self.trainer = tr = trainer
        self.probes = tr.probes
        self.sets = self._sets(data, eval_sets, probe_data)
        self.train_is_data = self._is_data(data, probe_data)
        self.fns = {p.name: self._jit(p) for p in self.probes}

    def _sets(self, data, eval_sets, probe_data) -> dict[str, Any]:
        """``probe_data``; else the whole data and first eval set, or with ``cfg.probe_size`` set
        (a subset asked for by name) their first ``probe_size`` examples."""
        tr = self.trainer
        if probe_data is not None:
            sets = dict(probe_data)
        elif not any(p.needs_probe_set for p in self.probes):
            sets = {}
        else:
            m = tr.cfg.probe_size
            if callable(data) and m is None:
                raise ValueError(
                    "the probes need a fixed probe set, and the data is a sampler (no whole "
                    "training set): pass probe_data= or set probe_size (one fixed draw)."
                )
            if callable(data):  # a sampler: one fixed draw
                sets = {"train": data(jax.random.fold_in(jax.random.key(tr.cfg.seed), 7), m)}
            else:
                sets = {"train": {k: np.asarray(v)[:m] for k, v in data.items()}}
            if eval_sets:
                first = next(iter(eval_sets.values()))
                sets["test"] = {k: np.asarray(v)[:m] for k, v in first.items()}
        return {k: sharding.put_tree(dict(v), tr.replicated) for k, v in sets.items()}

    def _is_data(self, data, probe_data) -> bool:
        """Whether the probe set ``"train"`` is the training dataset itself, row for row (then
        the probes can weight its rows as the step's batch does: ``ctx.batch_weights``)."""
        if callable(data) or "train" not in self.sets:
            return False
        if probe_data is None:
            m = self.trainer.cfg.probe_size
            return m is None or m >= batching.dataset_size(data)
        train = probe_data["train"]
        return set(train) == set(data) and all(
            train[k] is data[k] or np.array_equal(np.asarray(train[k]), np.asarray(data[k]))
            for k in data
        )

    def context(self, key, step, data, sets) -> ProbeContext:
        """The :class:`ProbeContext` of one seed at ``step`` (inside a jitted function)."""
        tr = self.trainer
        batch = lambda: jax.lax.with_sharding_constraint(
            tr.batcher.at(data, key, step), tr.batch_sharding
        )
        n = batching.dataset_size(data) if self.train_is_data else 0
        weights = (lambda: tr.batcher.weights(key, step, n)) if self.train_is_data else None
        return ProbeContext(
            tr.apply_fn,
            tr.loss_fn,
            tr.optimizer,
            sets.get("train"),
            sets.get("test"),
            batch,
            batching.step_key(key, step, 1),
            weights,
        )

    def _jit(self, probe):
        tr = self.trainer
        ctx = self.context

        def init_one(params, opt_state, key, data, sets):
            return probe.init(ctx(key, jnp.zeros((), jnp.int32), data, sets), params, opt_state)

        def call_one(pstate, params, opt_state, key, step, data, sets):
            return probe(ctx(key, step, data, sets), pstate, params, opt_state, step)

        axes = (0, 0, 0, None, None)
        return (
            jax.jit(tr.vmap_seeds(init_one, axes), out_shardings=tr.replicated),
            jax.jit(
                tr.vmap_seeds(call_one, (0, 0, 0, 0, None, None, None)), out_shardings=tr.replicated
            ),
        )

    def init(self, state) -> tuple:
        """Every probe's initial state, from the initial train state."""
        tr = self.trainer
        return tuple(
            self.fns[p.name][0](state.params, state.opt_state, state.key, tr.data, self.sets)
            for p in self.probes
        )

    def abstract(self, state) -> tuple:
        """``ShapeDtypeStruct``s of the probe states (a restore target), from an abstract state."""
        tr = self.trainer
        return tuple(
            jax.eval_shape(
                self.fns[p.name][0], state.params, state.opt_state, state.key, tr.data, self.sets
            )
            for p in self.probes
        )

    def __call__(self, probe, pstate, state, step: int):
        """``(pstate, scalars, arrays)`` of ``probe`` at ``step`` (device arrays)."""
        return self.fns[probe.name][1](
            pstate,
            state.params,
            state.opt_state,
            state.key,
            jnp.int32(step),
            self.trainer.data,
            self.sets,
        )

    def compile(self, state, pstates) -> None:
        for probe, pstate in zip(self.probes, pstates, strict=True):
            self.fns[probe.name][1].lower(
                pstate,
                state.params,
                state.opt_state,
                state.key,
                jnp.int32(0),
                self.trainer.data,
                self.sets,
            ).compile()
