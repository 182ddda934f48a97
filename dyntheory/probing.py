"""Probe infrastructure: schedules, the probe protocol and context, effective kernels.

The probes themselves, and the user-facing documentation, are in :mod:`dyntheory.probes`, which
re-exports everything here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dyntheory import batching, sharding

# ----------------------------------------------------------------------------- schedules


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When a probe runs: ``every`` N steps, ``log``-spaced, or ``at`` explicit steps.

    ``every(n)``: steps 0, n, 2n, ...; ``log(per_decade)``: 0 and ``round(10^(k/per_decade))``
    (1, 2, 3, 4, 6, 10, 18, 32, 56, 100, ... for 4 per decade; independent of the run length, so a
    resumed or extended run probes at the same steps); ``at(*steps)``. ``final`` adds the last step.
    ``Schedule.parse("every:100" | "log:4" | "at:0,10,100" | "never")`` reads the string form.
    """

    kind: str = "every"
    n: int = 100
    steps: tuple[int, ...] = ()
    final: bool = True

    @classmethod
    def every(cls, n: int, final: bool = True) -> Schedule:
        if n < 1:
            raise ValueError(f"Schedule.every needs n >= 1, got {n}.")
        return cls("every", n, (), final)

    @classmethod
    def log(cls, per_decade: int = 4, final: bool = True) -> Schedule:
        if per_decade < 1:
            raise ValueError(f"Schedule.log needs per_decade >= 1, got {per_decade}.")
        return cls("log", per_decade, (), final)

    @classmethod
    def at(cls, *steps: int, final: bool = False) -> Schedule:
        return cls("at", 0, tuple(sorted(set(int(s) for s in steps))), final)

    @classmethod
    def never(cls) -> Schedule:
        return cls("at", 0, (), False)

    @classmethod
    def parse(cls, text: str) -> Schedule:
        kind, _, arg = text.partition(":")
        try:
            if kind == "every":
                return cls.every(int(arg))
            if kind == "log":
                return cls.log(int(arg or 4))
            if kind == "at":
                return cls.at(*(int(s) for s in arg.split(",") if s.strip()))
            if kind == "never":
                return cls.never()
        except ValueError as e:
            raise ValueError(f"bad schedule {text!r}: {e}") from None
        raise ValueError(
            f"bad schedule {text!r}; use every:N, log:PER_DECADE, at:S1,S2,... or never."
        )

    def _log_step(self, k: int) -> int:
        return int(round(10 ** (k / self.n)))

    def _rule(self, t: int) -> bool:
        if self.kind == "every":
            return t % self.n == 0
        if self.kind == "log":
            if t == 0:
                return True
            k = round(self.n * math.log10(t))
            return any(self._log_step(j) == t for j in (k - 1, k, k + 1) if j >= 0)
        return t in self.steps

    def due(self, t: int, total: int) -> bool:
        """Whether the probe runs at step ``t`` of a run of ``total`` steps."""
        return 0 <= t <= total and ((t == total and self.final) or self._rule(t))

    def next(self, t: int, total: int) -> int:
        """The first step after ``t`` at which the probe runs (``total`` if none before)."""
        if self.kind == "every":
            return min((t // self.n + 1) * self.n, total)
        if self.kind == "log":
            k = max(int(self.n * math.log10(t + 1)) - 1, 0)
            while self._log_step(k) <= t:
                k += 1
            return min(self._log_step(k), total)
        return min([s for s in self.steps if s > t] + [total])


# ----------------------------------------------------------------------------- protocol


class ProbeContext(NamedTuple):
    """What a probe sees besides the params (built by the engine inside the jitted call)."""

    apply_fn: Callable  # (params, x) -> outputs
    loss_fn: Callable  # loss_fn(apply_fn, params, batch, key) -> (loss, aux)
    optimizer: optax.GradientTransformation
    train: dict  # fixed probe subset of the train data: "x", "y"[, "y_clean"]
    test: dict | None  # fixed probe subset of the first eval set (or None)
    batch: Callable[[], dict]  # the training batch of the current step
    key: jax.Array  # the current step's loss key (what the train step used)


@dataclasses.dataclass(frozen=True, eq=False)
class Probe:
    """Base class; see the module docstring."""

    schedule: Schedule = Schedule.every(100)
    name: str = "probe"

    def init(self, ctx: ProbeContext, params, opt_state) -> Any:
        return ()

    def __call__(self, ctx: ProbeContext, state, params, opt_state, step):
        raise TypeError(f"{type(self).__name__} must define __call__ (see dyntheory.probes).")


def path_name(path) -> str:
    """``('layers', 0, 'kernel')``-like key paths as ``layers/0/kernel``."""
    parts = []
    for p in path:
        for attr in ("key", "idx", "name"):
            if hasattr(p, attr):
                parts.append(str(getattr(p, attr)))
                break
    return "/".join(parts)


def _batch_grads(ctx: ProbeContext, params, batch=None):
    batch = ctx.batch() if batch is None else batch
    loss = lambda p: ctx.loss_fn(ctx.apply_fn, p, batch, ctx.key)[0]
    return jax.grad(loss)(params)


# ----------------------------------------------------------------------------- effective kernel


def find_state(opt_state, type_name: str):
    """The optimizer sub-state named ``type_name`` (e.g. ``"ScaleByAdamState"``)."""
    found = optax.tree.get(opt_state, type_name)
    if found is None:
        raise ValueError(f"the optimizer state has no {type_name}; is it the right optimizer?")
    return found


def _lr_at(lr, count):
    return lr(count) if callable(lr) else lr


def _bias_correction(beta, count):
    """``1 − β^t``, and 1 at ``t = 0`` (no statistics yet: the caller returns p = 0 there)."""
    c = 1 - beta ** count.astype(jnp.float32)
    return jnp.where(count > 0, c, 1.0)


def adam_preconditioner(lr, *, b2: float = 0.999, eps: float = 1e-8) -> Callable:
    r"""``p = η/(√v̂ + ε)`` from Adam's / AdamW's state (momentum and weight decay ignored).

    Before the first update (``count = 0``) there is no ``v̂`` and ``p = 0``: the effective kernel
    starts at the first probe after step 0.
    """

    def p(opt_state):
        st = find_state(opt_state, "ScaleByAdamState")
        c2 = _bias_correction(b2, st.count)
        eta = jnp.where(st.count > 0, _lr_at(lr, st.count), 0.0)
        return jax.tree.map(lambda v: (eta / (jnp.sqrt(v / c2) + eps)).astype(v.dtype), st.nu)

    return p


def prm_preconditioner(
    lr,
    *,
    b1=0.9,
    b2=0.999,
    rho=0.99,
    eps=1e-8,
    mask="snr",
    softness=1.0,
    alpha=1.0,
    reduction="per_parameter",
    warmup_steps=0,
) -> Callable:
    r"""``p = η q/(√v̂ + ε)`` from PRM's state, ``q`` the gate (same hyper-parameters as ``prm``;
    ``p = 0`` before the first update, as in :func:`adam_preconditioner`)."""
    from dyntheory.optim.masks import gate

    def p(opt_state):
        st = find_state(opt_state, "ScaleByPopulationRiskState")
        c1, c2, cr = (_bias_correction(b, st.count) for b in (b1, b2, rho))
        eta = jnp.where(st.count > 0, _lr_at(lr, st.count), 0.0)

        def one(m, v, s):
            q = gate(
                (m / c1) ** 2,
                s / cr,
                mask=mask,
                reduction=reduction,
                alpha=alpha,
                softness=softness,
                eps=eps,
            )
            q = jnp.where(st.count <= warmup_steps, 1.0, q)
            return (eta * q / (jnp.sqrt(v / c2) + eps)).astype(v.dtype)

        return jax.tree.map(one, st.mu, st.nu, st.s)

    return p


def effective_ntk(apply_fn, params, p, x1, x2=None, **ntk_kwargs) -> jax.Array:
    r"""``K_eff = J(x1) diag(p) J(x2)ᵀ``: the kernel that moves the outputs under a diagonal
    preconditioner ``p``.

    Computed as the plain NTK of ``δ ↦ f(w + √p ⊙ δ)`` at ``δ = 0`` (whose Jacobian is
    ``J diag(√p)``), so every :func:`dyntheory.ntk.empirical_ntk` implementation applies. Shape and
    ordering as ``empirical_ntk`` (example-major ``(n1*p_out, n2*p_out)``).
    """
    from dyntheory import ntk

    root = jax.tree.map(lambda q: jnp.sqrt(q).astype(jnp.result_type(q)), p)
    shifted = lambda d, x: apply_fn(
        jax.tree.map(lambda w, r, e: w + (r * e).astype(w.dtype), params, root, d), x
    )
    zeros = jax.tree.map(jnp.zeros_like, params)
    return ntk.empirical_ntk(shifted, zeros, x1, x2, **ntk_kwargs)


def _kernel(apply_fn, params, x1, x2=None, precond=None, **kw):
    from dyntheory import ntk

    if precond is None:
        return ntk.empirical_ntk(apply_fn, params, x1, x2, **kw)
    return effective_ntk(apply_fn, params, precond, x1, x2, **kw)


# ----------------------------------------------------------------------------- engine side


class ProbeRunner:
    """The engine's side of the probes of a :class:`~dyntheory.train.Trainer`: the fixed probe
    sets, and each probe's ``init`` and ``__call__`` jitted once (vmapped over seeds)."""

    def __init__(self, trainer, data, eval_sets, probe_data):
        self.trainer = tr = trainer
        self.probes = tr.probes
        self.sets = self._sets(data, eval_sets, probe_data)
        self.fns = {p.name: self._jit(p) for p in self.probes}

    def _sets(self, data, eval_sets, probe_data) -> dict[str, Any]:
        """``probe_data``, or the first ``probe_size`` examples of the data and first eval set."""
        tr = self.trainer
        if probe_data is not None:
            sets = dict(probe_data)
        else:
            m = tr.cfg.probe_size
            if callable(data):  # a sampler: one fixed draw
                sets = {"train": data(jax.random.fold_in(jax.random.key(tr.cfg.seed), 7), m)}
            else:
                sets = {"train": {k: np.asarray(v)[:m] for k, v in data.items()}}
            if eval_sets:
                first = next(iter(eval_sets.values()))
                sets["test"] = {k: np.asarray(v)[:m] for k, v in first.items()}
        return {k: sharding.put_tree(dict(v), tr._rep) for k, v in sets.items()}

    def _jit(self, probe):
        tr = self.trainer

        def ctx(key, step, data, sets):
            batch = lambda: jax.lax.with_sharding_constraint(
                tr.batcher.at(data, key, step), tr._batch_sh
            )
            return ProbeContext(
                tr.apply_fn,
                tr.loss_fn,
                tr.optimizer,
                sets["train"],
                sets.get("test"),
                batch,
                batching.step_key(key, step, 1),
            )

        def init_one(params, opt_state, key, data, sets):
            return probe.init(ctx(key, jnp.zeros((), jnp.int32), data, sets), params, opt_state)

        def call_one(pstate, params, opt_state, key, step, data, sets):
            return probe(ctx(key, step, data, sets), pstate, params, opt_state, step)

        axes = (0, 0, 0, None, None)
        return (
            jax.jit(tr._vmap(init_one, axes), out_shardings=tr._rep),
            jax.jit(tr._vmap(call_one, (0, 0, 0, 0, None, None, None)), out_shardings=tr._rep),
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
