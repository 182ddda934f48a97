r"""The probe protocol: :class:`Schedule`, :class:`Probe` and the :class:`ProbeContext` it sees.

A probe is a frozen dataclass with a ``schedule`` and a ``name`` that implements
``init(ctx, params, opt_state) -> state`` and ``__call__(ctx, state, params, opt_state, step) ->
(state, scalars, arrays)``, pure and jit-able (``step`` is a traced int32). The engine
(:mod:`dyntheory.engine.probe_runner`) builds the context, jits both once, vmaps them over seeds
and checkpoints the state with the run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import optax

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
    # () -> (n,) weights of the probe set's rows in the current step's batch loss
    # (batching.Batcher.weights), or None when the probe set is not the training set itself
    batch_weights: Callable[[], jax.Array | None] | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Probe:
    """Base class; see the module docstring."""

    schedule: Schedule = Schedule.every(100)
    name: str = "probe"
    # whether the probe reads the fixed probe sets ctx.train / ctx.test
    needs_probe_set: ClassVar[bool] = True

    def init(self, ctx: ProbeContext, params, opt_state) -> Any:
        return ()

    def __call__(self, ctx: ProbeContext, state, params, opt_state, step):
        raise TypeError(f"{type(self).__name__} must define __call__ (see dyntheory.probes).")


@dataclasses.dataclass(frozen=True, eq=False)
class InScanProbe(Probe):
    """A probe whose state rides in the fused training scan and advances at every step.

    Besides :class:`Probe`'s ``init`` and ``__call__`` (which reports, on the probe's schedule,
    from the state as the steps left it), it implements ``step(ctx, state, before, after, t) ->
    state``: called inside the engine's ``lax.scan`` after training step ``t`` (``t`` updates
    done before it, a traced int32 shared by the seeds), with ``before = (params, opt_state)``
    at ``w_t`` and ``after`` those of ``w_{t+1}``. Pure and jit-able; the state keeps its shapes
    and dtypes (it is checkpointed with the run and vmapped over seeds like any probe state).
    """

    def step(self, ctx: ProbeContext, state, before, after, t):
        raise TypeError(f"{type(self).__name__} must define step (see dyntheory.probes.base).")


def path_name(path) -> str:
    """``('layers', 0, 'kernel')``-like key paths as ``layers/0/kernel``."""
    parts = []
    for p in path:
        for attr in ("key", "idx", "name"):
            if hasattr(p, attr):
                parts.append(str(getattr(p, attr)))
                break
    return "/".join(parts)


def batch_grads(ctx: ProbeContext, params, batch=None):
    """The gradient of the loss on ``batch`` (default: the current step's training batch)."""
    batch = ctx.batch() if batch is None else batch
    loss = lambda p: ctx.loss_fn(ctx.apply_fn, p, batch, ctx.key)[0]
    return jax.grad(loss)(params)


def f64():
    """float64 when ``jax_enable_x64`` is on, else float32 (spectra and accumulators)."""
    return jax.dtypes.canonicalize_dtype(jax.numpy.float64)
