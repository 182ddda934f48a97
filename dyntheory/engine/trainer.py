r"""The training engine: jit-compiled, scan-fused, mesh-sharded, probed and resumable runs.

One call trains a model and (optionally) writes a run directory::

    import optax
    from dyntheory import probes
    from dyntheory.engine.config import TrainConfig
    from dyntheory.engine import fit

    cfg = TrainConfig(steps=2000, batch_size=64, eval_every=100, checkpoint_every=500, seeds=3)
    result = fit(
        cfg,
        apply_fn=apply_fn,                      # (params, x) -> outputs (n, p)
        init_params=lambda key: init(key),      # key -> params (or params: every seed starts there)
        optimizer=optax.adam(1e-3),
        data={"x": x_train, "y": y_train},      # a dataset dict, or a sampler (key, b) -> batch
        loss="squared",                         # "squared", "softmax_ce", or a loss_fn (below)
        eval_sets={"test": {"x": x_test, "y": y_test}},
        probes=[probes.NTKSpectrum(probes.Schedule.log(4))],
        run_dir="runs/my-run",                  # None: nothing written, nothing resumed
    )
    result.final["test/loss"], result.history["train/loss"], result.state.params

``Trainer(cfg, **same_arguments)`` compiles once and ``.run(run_dir, steps=...)`` can be called
repeatedly (other run dirs, longer runs); :func:`fit` is ``Trainer(...).run(...)``. The result is
a :class:`FitResult`: ``state`` (on the mesh), ``final`` (the last metrics line), ``history``
(``{"step": (T,), key: (T,) or (T, S)}`` of every logged line), ``arrays`` (probe arrays over
time), ``probe_states`` (e.g. the final dissipation accumulator) and ``run_dir``.

**What a step is.** ``TrainState(params, opt_state, step, key)``; ``step`` counts the updates
done. Step ``t`` draws its batch with ``fold_in(key, t)`` (see :mod:`dyntheory.engine.batching` for
the
full-batch / epoch / with-replacement / fresh-sampler regimes), evaluates the loss at the current
params ``w_t``, and applies one optimizer update. The metrics line of step ``t`` holds quantities
at ``w_t``: ``train/loss`` (the batch loss), the loss's aux metrics (``train/acc``),
``train/grad_norm``, held-out ``<set>/loss`` / ``<set>/acc`` on eval steps, and probe scalars on
probe steps; a last line at ``t = steps`` measures the final params.

**Losses.** ``"squared"`` is ``‖u − y‖²/(2n)`` and ``"softmax_ce"`` the mean cross-entropy with
integer labels (adds ``acc``), both from :mod:`dyntheory.losses`. A custom loss is any
``loss_fn(apply_fn, params, batch, key) -> (loss, aux_metrics)``: ``batch`` is the dict the data
gives (any keys), ``key`` a per-step key for dropout-like randomness, ``aux_metrics`` a dict of
scalars logged as ``train/<name>`` (and ``<set>/<name>`` on eval sets). A PINN residual is one.

**Speed and scale.** ``cfg.fuse`` (K) steps run in one dispatch with ``lax.scan``; the host reads
the metrics of dispatch ``c − 1`` after dispatching ``c``. Batches are sharded over a 1-D
``("data",)`` mesh of ``cfg.devices`` devices; params and optimizer state are replicated
(``layout="replicated"``) or sharded (``layout="fsdp"``), created already sharded by a jitted init.
``cfg.seeds = S > 1`` trains S seeds at once by ``vmap``: every state leaf gets a leading ``(S,)``
axis and seed ``s`` is exactly the single-seed run with ``seed + s``.

**Sweeps.** ``grid=[{"lr": 1e-3}, {"lr": 3e-3}, ...]`` (C cells of hyperparameter values) trains
every cell on every seed in the same compiled program: the seed axis becomes a *member* axis of
``C × S`` members (member ``m = c·S + s`` is cell ``c`` with seed ``seed + s``), and each member's
optimizer state holds its cell's values in ``opt_state.hyperparams`` (an optimizer built with
:func:`optax.inject_hyperparams`, e.g. :meth:`dyntheory.optim.config.OptimizerConfig.build`), so
the update step is the same program for every cell. The run's own metrics lines carry
``"seed": m`` (the member); :mod:`dyntheory.engine.sweep` splits a result into its cells, each
equal to a separate run of that setting.

**Run directory** (:mod:`dyntheory.engine.rundir`): ``config.json``, ``metrics.jsonl`` (one line per
logged
step, plus ``"seed"`` in multi-seed runs), ``probes.npz``, ``checkpoints/`` (orbax, every
``cfg.checkpoint_every`` steps and at the end), ``results.json`` (written by the caller, e.g. the
CLI). Calling :func:`fit` again on a directory with a checkpoint resumes from the latest one:
lines after it are dropped and recomputed, so the run continues exactly (``resume=False`` starts
over). NaN/Inf in the loss or the params stops the run with :class:`NonFiniteError` naming the
step and the quantity; the last good checkpoint stays.

**Probes** (:mod:`dyntheory.probes`) run on their own schedules on fixed probe sets: the whole
training set and first eval set by default, their first ``cfg.probe_size`` examples when a subset
is asked for by name, or ``probe_data=``, outside the fused
loop, each jitted once. Their scalars land in the metrics as ``probe/<name>/...``, their arrays in
``probes.npz``; their cost is timed separately: ``time/train_s``, ``time/probe_s`` (and
``time/probe/<name>_s``), ``time/checkpoint_s`` and ``time/compile_s`` (ahead-of-time compilation
at the start of a run), all cumulative over resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from dyntheory import losses
from dyntheory.engine import batching, sharding
from dyntheory.engine.config import TrainConfig
from dyntheory.engine.initializer import initializer
from dyntheory.engine.loop import run_loop
from dyntheory.engine.probe_runner import ProbeRunner
from dyntheory.engine.state import FitResult, TrainState, all_finite, copy_tree, when
from dyntheory.optim import state as optim_state
from dyntheory.probes.base import InScanProbe

Params = Any
Batch = dict[str, jax.Array]
LossFn = losses.LossFn


class Trainer:
    """Builds the jitted functions of a run once; :meth:`run` trains (see the module docstring)."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        apply_fn: Callable,
        init_params: Callable[[jax.Array], Params] | Params,
        optimizer: optax.GradientTransformation,
        data: Mapping[str, Any] | batching.Sampler,
        loss: str | LossFn = "squared",
        eval_sets: Mapping[str, Mapping[str, Any]] | None = None,
        probes: Sequence[Any] = (),
        probe_data: Mapping[str, Mapping[str, Any]] | None = None,
        mesh: jax.sharding.Mesh | None = None,
        grid: Sequence[Mapping[str, float]] | None = None,
    ):
        self.cfg, self.apply_fn, self.optimizer = cfg, apply_fn, optimizer
        self.grid = [dict(c) for c in grid] if grid is not None else None
        if self.grid is not None and (
            not self.grid or any(c.keys() != self.grid[0].keys() for c in self.grid)
        ):
            raise ValueError("grid must be a non-empty list of cells with the same keys.")
        self.cells = len(self.grid) if self.grid is not None else 1
        self.members = self.cells * cfg.seeds  # the vmapped axis: cells × seeds
        self.loss_fn = losses.loss_fn(loss)
        self.probes = tuple(probes)
        names = [p.name for p in self.probes]
        if len(set(names)) != len(names) or any("/" in n for n in names):
            raise ValueError(f"probe names must be unique and free of '/', got {names}.")
        self.mesh = mesh if mesh is not None else sharding.make_mesh(cfg.devices)
        if sharding.AXIS not in self.mesh.axis_names:
            raise ValueError(
                f"the mesh needs an axis {sharding.AXIS!r}, got {self.mesh.axis_names}."
            )
        ndev = sharding.mesh_size(self.mesh)
        self.seeded = self.members > 1
        self.batcher = batching.make_batcher(data, cfg.batch_size, cfg.sampling)
        if self.batcher.batch_size % ndev:
            what = "the full dataset" if self.batcher.kind == "full" else "batch_size"
            raise ValueError(
                f"{what} ({self.batcher.batch_size} examples) is not divisible by the {ndev} "
                f"devices of the mesh; choose a multiple of {ndev} or set devices=... ."
            )
        self.init_params = init_params
        rep, data_sh = sharding.replicated(self.mesh), sharding.batch_sharding(self.mesh)
        self.replicated = rep
        self.batch_sharding = data_sh
        full = self.batcher.kind == "full"
        self.data = (
            None if callable(data) else sharding.put_tree(dict(data), data_sh if full else rep)
        )
        self.eval_sets = {
            name: sharding.put_tree(
                dict(s), data_sh if batching.dataset_size(s) % ndev == 0 else rep
            )
            for name, s in (eval_sets or {}).items()
        }
        # in-scan probes (e.g. probes.StepwiseDissipation) advance inside the fused scan
        self.inscan = tuple(i for i, p in enumerate(self.probes) if isinstance(p, InScanProbe))
        self._build()
        self.prober = ProbeRunner(self, data, eval_sets or {}, probe_data)

    # ------------------------------------------------------------------ set-up

    def vmap_seeds(self, fn, in_axes):
        """``jax.vmap(fn, in_axes)`` over the member (seed) axis when it has several members."""
        return jax.vmap(fn, in_axes=in_axes) if self.seeded else fn

    def _seed_keys(self):
        seeds = [self.cfg.seed + m % self.cfg.seeds for m in range(self.members)]
        keys = (
            jnp.stack([jax.random.key(s) for s in seeds])
            if self.seeded
            else jax.random.key(seeds[0])
        )
        return keys

    def _member_hyperparams(self):
        """``{name: (M,)}``: each member's cell values (cell ``m // S``), in float64 until the
        optimizer state takes them in its own dtype, as a separate run's does (float64 under x64:
        a cell's ``lr=1e-3`` is not rounded to float32's 1.0000000475e-3)."""
        s = self.cfg.seeds
        values = {
            k: np.asarray([self.grid[m // s][k] for m in range(self.members)], np.float64)
            for k in self.grid[0]
        }
        return values if self.seeded else {k: v[0] for k, v in values.items()}

    def _init_one(self, key, params, hyperparams=None):
        """One member's state from its initial ``params`` (made from the first half of ``key``,
        :func:`dyntheory.engine.initializer.initializer`): the optimizer's state, and the second
        half of ``key``."""
        k_train = jax.random.split(key)[1]
        opt_state = self.optimizer.init(params)
        if hyperparams is not None:
            opt_state = optim_state.set_hyperparams(opt_state, hyperparams)
        return params, opt_state, k_train

    def _build(self):
        cfg = self.cfg
        # Abstract state -> shardings (layout), then init jitted with out_shardings. The params
        # of an init_params function are their own program: it is the same program for every
        # optimizer of a comparison, so only the first compiles it (engine.initializer keeps
        # it; the persistent cache across processes) and the rest compile the optimizer's init.
        keys = self._seed_keys()
        hp = (self._member_hyperparams(),) if self.grid is not None else ()
        if callable(self.init_params):
            init = self.vmap_seeds(self._init_one, 0)
            args = (keys, jax.eval_shape(initializer(self.init_params, self.seeded), keys), *hp)
        else:  # every member starts from these params, an input of the program (not constants)
            init = self.vmap_seeds(self._init_one, (0, None, 0)[: 2 + len(hp)])
            args = (keys, self.init_params, *hp)

        def init_state(*a):
            params, opt_state, key = init(*a)
            return TrainState(params, opt_state, jnp.zeros((), jnp.int32), key)

        abstract = jax.eval_shape(init_state, *args)
        sh = sharding.state_shardings(abstract, self.mesh, cfg.layout, seed_axis=self.seeded)
        self.state_shardings = sh._replace(step=self.replicated, key=self.replicated)
        self.abstract_state = abstract
        self._init = jax.jit(init_state, out_shardings=self.state_shardings)
        if callable(self.init_params):
            made = initializer(self.init_params, self.seeded, self.state_shardings.params)
            self._init_args = lambda: (keys, made(keys), *hp)
        else:
            self._init_args = lambda: args

        data_sh = jax.tree.map(lambda x: x.sharding, self.data)
        eval_sh = jax.tree.map(lambda x: x.sharding, self.eval_sets)
        rep = self.replicated
        self.chunk = jax.jit(
            self._chunk_fn,
            in_shardings=(self.state_shardings, data_sh, eval_sh, rep, rep, rep, rep),
            out_shardings=(self.state_shardings, rep, rep),
            donate_argnums=(0, 5),
        )

    # ------------------------------------------------------------------ pure functions

    def _loss_grad(self, params, key, step, carry, data):
        batch, carry = self.batcher.get(data, key, step, carry)
        batch = jax.lax.with_sharding_constraint(batch, self.batch_sharding)
        loss_key = batching.step_key(key, step, 1)
        (loss, aux), grads = jax.value_and_grad(self.loss_fn, argnums=1, has_aux=True)(
            self.apply_fn, params, batch, loss_key
        )
        metrics = {"train/loss": loss, **{f"train/{k}": v for k, v in aux.items()}}
        metrics["train/grad_norm"] = optax.tree.norm(grads)
        return grads, carry, metrics

    def _train_one(self, params, opt_state, key, step, carry, data):
        grads, carry, metrics = self._loss_grad(params, key, step, carry, data)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics["_params_finite"] = all_finite(params)
        return params, opt_state, carry, metrics

    def _eval_one(self, params, key, eval_sets):
        out = {}
        for name, batch in eval_sets.items():
            ekey = jax.random.fold_in(key, batching.EVAL_TAG)
            loss, aux = self.loss_fn(self.apply_fn, params, batch, ekey)
            out[f"{name}/loss"] = loss
            out.update({f"{name}/{k}": v for k, v in aux.items()})
        return out

    def _inscan_one(self, pstates, before, after, key, step, data, sets):
        """Advance every in-scan probe of one seed over the step ``before → after``."""
        ctx = self.prober.context(key, step, data, sets)
        return tuple(
            self.probes[i].step(ctx, ps, before, after, step)
            for i, ps in zip(self.inscan, pstates, strict=True)
        )

    def _chunk_fn(self, state: TrainState, data, eval_sets, n_active, measure, istates, sets):
        """``cfg.fuse`` scan iterations: the first ``n_active`` are train steps, the rest no-ops.
        With ``measure``, iteration ``n_active`` is a train step too, one that evaluates every
        eval set: its metrics (the batch loss and gradient, and every eval set, at the params it
        starts from) are the final metrics line, and :meth:`advance` drops the state it leaves.
        ``istates``: the in-scan probes' states, advanced after every train step (on ``sets``,
        the probe sets).

        The program so holds the model's forward and backward pass once. A measuring branch of
        its own was a second copy for XLA to compile, and an update in a branch apart from the
        gradient trains slower (docs/results/compile.md)."""
        train = self.vmap_seeds(self._train_one, (0, 0, 0, None, 0, None))
        inscan = self.vmap_seeds(self._inscan_one, (0, 0, 0, 0, None, None, None))
        evaluate = self.vmap_seeds(self._eval_one, (0, 0, None))
        every = self.cfg.eval_every

        def evals(st, due):
            if not self.eval_sets:
                return {}
            run = lambda: evaluate(st.params, st.key, eval_sets)
            nan = lambda s: jnp.full(s.shape, jnp.nan, s.dtype)
            return when(due, run, lambda shapes: jax.tree.map(nan, shapes))

        def train_step(carry, force_eval):
            st, bcarry, ist = carry
            params, opt_state, bcarry, m = train(
                st.params, st.opt_state, st.key, st.step, bcarry, data
            )
            due = (st.step % every == 0) if every else jnp.array(False)
            m.update(evals(st, due | force_eval))
            if ist:
                before, after = (st.params, st.opt_state), (params, opt_state)
                ist = inscan(ist, before, after, st.key, st.step, data, sets)
            return (TrainState(params, opt_state, st.step + 1, st.key), bcarry, ist), m

        def body(carry, i):
            # an idle iteration returns zeros shaped like the train step's metrics
            measuring = (i == n_active) & measure
            zeros = lambda s: jnp.zeros(s.shape, s.dtype)
            return when(
                (i < n_active) | measuring,
                lambda: train_step(carry, measuring),
                lambda shapes: (carry, jax.tree.map(zeros, shapes[1])),
            )

        start = self.vmap_seeds(self.batcher.start, (0, None))(state.key, state.step)
        carry = (state, start, tuple(istates))
        (state, _, istates), metrics = lax.scan(body, carry, jnp.arange(self.cfg.fuse))
        return state, istates, metrics

    # ------------------------------------------------------------------ host side

    def init_state(self) -> TrainState:
        """The initial state, created already laid out on the mesh."""
        return self._init(*self._init_args())

    def with_current_hyperparams(self, state: TrainState) -> TrainState:
        """``state`` with the optimizer's injected numbers (``opt_state.hyperparams``) those this
        Trainer was built with: a restored checkpoint carries the numbers it was trained with,
        and a resume with ``--set lr=...`` continues with the new ones."""
        if not hasattr(state.opt_state, "hyperparams"):
            return state
        fresh = self.init_state().opt_state.hyperparams
        return state._replace(opt_state=state.opt_state._replace(hyperparams=fresh))

    def advance(self, state: TrainState, pstates: tuple, n: int, measure: bool = False):
        """One dispatch: ``n`` fused train steps (the in-scan probes advancing with them):
        ``(state, pstates, metrics)``. With ``measure`` (and ``n = 0``), the final measurement:
        one train step on a copy of the state and the in-scan probes' states (the fused step
        donates its inputs), whose metrics come back with ``state`` and ``pstates`` unchanged."""
        ist = tuple(pstates[i] for i in self.inscan)
        args = (self.data, self.eval_sets, np.int32(n), np.bool_(measure))
        if measure:
            if n:
                raise ValueError(f"the measurement takes no train steps, got n={n}.")
            _, _, metrics = self.chunk(copy_tree(state), *args, copy_tree(ist), self.prober.sets)
            return state, pstates, metrics
        state, ist, metrics = self.chunk(state, *args, ist, self.prober.sets)
        pstates = list(pstates)
        for i, ps in zip(self.inscan, ist, strict=True):
            pstates[i] = ps
        return state, tuple(pstates), metrics

    def compile(self, state: TrainState, pstates: tuple) -> None:
        """Compile the fused step and the probes ahead of time (``jit`` then reuses them)."""
        n, flag = np.int32(0), np.bool_(False)
        ist = tuple(pstates[i] for i in self.inscan)
        self.chunk.lower(state, self.data, self.eval_sets, n, flag, ist, self.prober.sets).compile()
        self.prober.compile(state, pstates)

    def run(
        self,
        run_dir=None,
        *,
        steps: int | None = None,
        resume: bool = True,
        progress: bool | None = None,
    ) -> FitResult:
        """Train to ``steps`` (default ``cfg.steps``), resuming from ``run_dir``'s latest
        checkpoint if there is one and ``resume``; ``progress`` None: a bar on terminals only.

        A Trainer can run several times (other run dirs, more steps) without recompiling.
        """
        return run_loop(self, run_dir, steps=steps, resume=resume, progress=progress)


def fit(
    cfg: TrainConfig, *, run_dir=None, resume: bool = True, progress: bool | None = None, **kwargs
):
    """``Trainer(cfg, **kwargs).run(run_dir)``: train and return a :class:`FitResult`."""
    return Trainer(cfg, **kwargs).run(run_dir, resume=resume, progress=progress)
