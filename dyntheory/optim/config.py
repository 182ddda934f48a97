r"""The optimizer as data: one frozen config that builds the optax transformation and tells the
probes what step it takes.

:class:`OptimizerConfig` holds an optimizer's *family* (``adamw``, ``adam``, ``sgd``, ``prm``,
``grokfast``) and its static choices (PRM's mask, a warm-up length, ...) as Python values, and
its numbers (``lr, b1, b2, eps, weight_decay``, PRM's ``prm_rho, prm_softness, prm_alpha``,
Grokfast's ``grokfast_alpha, grokfast_lamb``) as leaves. :meth:`OptimizerConfig.build` wraps the
family's factory in :func:`optax.inject_hyperparams`, so the numbers live in the optimizer state
(``opt_state.hyperparams[name]``, under the config's field names) and are inputs of a compiled
step, not constants in it: a grid of settings trains in one program by giving each member of a
vmapped population its own values (:func:`dyntheory.optim.state.set_hyperparams`, used by
the engine's sweep axis).

The probes read the step back from the state: :class:`StatePreconditioner` is
``opt_state -> p`` with ``p = η_t/(√v̂ + ε)`` (times PRM's gate ``q``), every number taken from
``opt_state.hyperparams`` (THEORY.md §3, §10), and :meth:`OptimizerConfig.step_model` adds the
momentum, first moment and decoupled decay of the augmented identity, so a probe is wired with
``probes.Dissipation(schedule, **cfg.step_model(), ...)``.

Example:
  >>> import jax.numpy as jnp
  >>> cfg = OptimizerConfig(family="prm", lr=1e-3, prm_alpha=0.5)
  >>> state = cfg.build().init(jnp.zeros(3))
  >>> float(state.hyperparams["prm_alpha"])
  0.5
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

if TYPE_CHECKING:
    import optax

# optax and the transformations load JAX: they are imported where a method builds or reads an
# optimizer, so an experiment's config (and `dyntheory list`) reads without JAX.

FAMILIES = ("adamw", "adam", "sgd", "prm", "grokfast")
ADAPTIVE = ("adamw", "adam", "prm", "grokfast")  # the families with Adam's second moment

# the numbers each family reads (injected as hyperparameters under these names)
_COMMON = ("lr", "b1", "b2", "eps", "weight_decay")
# every number a grid may sweep (a tuple of values in the config)
SWEEPABLE = (
    *_COMMON,
    "prm_softness",
    "prm_rho",
    "prm_alpha",
    "grokfast_alpha",
    "grokfast_lamb",
)
NUMBERS: dict[str, tuple[str, ...]] = {
    "adamw": _COMMON,
    "adam": ("lr", "b1", "b2", "eps"),
    "sgd": ("lr", "b1", "weight_decay"),
    "prm": (*_COMMON, "prm_rho", "prm_softness", "prm_alpha"),
    "grokfast": (*_COMMON, "grokfast_alpha", "grokfast_lamb"),
}


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """An optimizer as data; experiment configs hold one as ``optim`` (``--set optim.lr=...``).

    Attributes:
      family: ``adamw`` (:func:`optax.adamw`), ``adam``, ``sgd`` (heavy-ball momentum ``b1``,
        decoupled decay), ``prm`` (:func:`dyntheory.optim.prm`, with gate statistics) or
        ``grokfast`` (:func:`dyntheory.optim.grokfast`). Static.
      lr, b1, b2, eps, weight_decay: the AdamW numbers (``b1`` is SGD's momentum; decoupled
        weight decay, multiplied by the lr as in optax).
      warmup_steps: linear lr warm-up from 0 over this many updates (0 = constant lr). Static.
      prm_mask, prm_softness, prm_rho, prm_alpha: PRM's gate (Algorithm 1); ``prm_alpha`` None =
        the experiment's default, given to :meth:`resolve` (e.g. ``b/(n − b)``).
      prm_gate_weight_decay: gate PRM's weight decay too (ours, not Algorithm 1). Static.
      grokfast_alpha, grokfast_lamb: Grokfast-EMA's rate and amplification (arXiv:2405.20233).
      grokfast_weight_decay: Grokfast's own weight decay; None = ``weight_decay``.
      grokfast_weight_decay_mode: ``decoupled`` (AdamW's) or ``l2`` (``torch.optim.Adam``'s L2
        term added after the filter, as Grokfast's reference code). Static.
    """

    family: Literal["adamw", "adam", "sgd", "prm", "grokfast"] = "adamw"
    lr: float | tuple[float, ...] = 1e-3
    b1: float | tuple[float, ...] = 0.9
    b2: float | tuple[float, ...] = 0.999
    eps: float | tuple[float, ...] = 1e-8
    weight_decay: float | tuple[float, ...] = 0.0
    warmup_steps: int = 0
    prm_mask: Literal["snr", "soft", "hard"] = "snr"
    prm_softness: float | tuple[float, ...] = 1.0
    prm_rho: float | tuple[float, ...] = 0.99
    prm_alpha: float | tuple[float, ...] | None = None
    prm_gate_weight_decay: bool = False
    grokfast_alpha: float | tuple[float, ...] = 0.98
    grokfast_lamb: float | tuple[float, ...] = 2.0
    grokfast_weight_decay: float | None = None
    grokfast_weight_decay_mode: Literal["decoupled", "l2"] = "decoupled"

    # an experiment's top-level names of these numbers before they moved into its ``optim`` block,
    # other than the field names themselves (a saved config.json with them names the new key)
    FORMER_KEYS: ClassVar[dict[str, str]] = {"lrs": "lr"}

    def __post_init__(self):
        for name in (*SWEEPABLE, "grokfast_weight_decay"):
            v = getattr(self, name)
            if isinstance(v, tuple | list):
                if not v or len(set(v)) != len(v):
                    raise ValueError(f"{name}: a grid needs distinct values, got {list(v)}.")
                v = tuple(_float(name, x) for x in v)
            elif v is not None:
                v = _float(name, v)
            object.__setattr__(self, name, v)
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}.")
        for name in ("lr", "eps", "prm_softness"):
            if not all(v > 0 for v in _values(self, name)):
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")
        for name in ("weight_decay", "prm_alpha", "grokfast_lamb", "grokfast_weight_decay"):
            if not all(v >= 0 for v in _values(self, name)):
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("b1", "b2", "prm_rho", "grokfast_alpha"):
            if not all(0.0 <= v < 1.0 for v in _values(self, name)):
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}.")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}.")

    # ------------------------------------------------------------------ what it is

    @property
    def grid_keys(self) -> tuple[str, ...]:
        """The numbers given as a tuple of values: the axes of a grid (cartesian product)."""
        return tuple(n for n in SWEEPABLE if isinstance(getattr(self, n), tuple))

    def cells(self, family: str | None = None) -> list[OptimizerConfig]:
        """One config per cell of the grid for ``family`` (default: this one's): the cartesian
        product of the tuple-valued numbers that family reads, in field order; ``[self]`` with
        ``family`` set when nothing is swept. Numbers the family does not read stay tuples."""
        family = family or self.family
        axes = [k for k in self.grid_keys if k in NUMBERS[family]]
        base = dataclasses.replace(self, family=family)
        values = itertools.product(*(getattr(self, k) for k in axes))
        return [dataclasses.replace(base, **dict(zip(axes, v, strict=True))) for v in values]

    def label(self, keys) -> str:
        """``"lr0.001_prm_alpha0.1"``: the values of ``keys`` (a cell's name in its sweep)."""
        return "_".join(f"{k}{getattr(self, k):g}" for k in keys)

    @property
    def numbers(self) -> tuple[str, ...]:
        """The fields this family injects as hyperparameters (a sweep may vary these)."""
        return NUMBERS[self.family]

    @property
    def decoupled_weight_decay(self) -> float:
        """``λ_wd`` of the decoupled decay: Grokfast's own when set; 0 in Grokfast's L2 mode,
        whose decay goes through Adam's normalization instead."""
        if self.family == "adam" or self.l2_mode:
            return 0.0
        return self.hyperparams()["weight_decay"] if "weight_decay" in self.numbers else 0.0

    @property
    def l2_mode(self) -> bool:
        return self.family == "grokfast" and self.grokfast_weight_decay_mode == "l2"

    def resolve(self, *, family: str | None = None, prm_alpha: float | None = None, **numbers):
        """A copy with ``family`` and ``numbers`` set, and ``prm_alpha`` filled in where it is
        None (the experiment's default α); PRM without any α is an error here."""
        cfg = dataclasses.replace(self, **({"family": family} if family else {}), **numbers)
        if cfg.prm_alpha is None and prm_alpha is not None:
            cfg = dataclasses.replace(cfg, prm_alpha=float(prm_alpha))
        if cfg.family == "prm" and cfg.prm_alpha is None:
            raise ValueError("PRM needs prm_alpha (set optim.prm_alpha=...).")
        return cfg

    def hyperparams(self) -> dict[str, float]:
        """``{name: value}`` of the injected numbers (Grokfast's own decay as its
        ``weight_decay``)."""
        swept = [k for k in self.grid_keys if k in self.numbers]
        if swept:
            raise ValueError(f"{', '.join(swept)} hold a grid; take one of cells() first.")
        out = {name: getattr(self, name) for name in self.numbers}
        if self.family == "grokfast" and self.grokfast_weight_decay is not None:
            out["weight_decay"] = self.grokfast_weight_decay
        if self.family == "prm" and out["prm_alpha"] is None:
            raise ValueError("PRM needs prm_alpha: call resolve(prm_alpha=...) first.")
        return {k: float(v) for k, v in out.items()}

    # ------------------------------------------------------------------ the transformation

    def build(self) -> optax.GradientTransformationExtraArgs:
        """The optax transformation, its numbers injected (``opt_state.hyperparams``)."""
        import optax

        factory = optax.inject_hyperparams(_factory, static_args=("static",))
        return factory(static=self.static_key(), **self.hyperparams())

    def static_key(self) -> tuple:
        """The choices compiled into the program (family, warm-up, mask, ...): configs with equal
        keys differ only in injected numbers."""
        return (
            self.family,
            self.warmup_steps,
            self.prm_mask,
            self.prm_gate_weight_decay,
            self.grokfast_weight_decay_mode,
        )

    # ------------------------------------------------------------------ the probes' view

    def preconditioner(self) -> StatePreconditioner | None:
        """``opt_state -> p``, the diagonal step as the probes model it (None for SGD: plain
        GD's step is the lr; Grokfast's amplification is not in ``p``, THEORY.md §10)."""
        if self.family not in ADAPTIVE:
            return None
        return StatePreconditioner(
            "prm" if self.family == "prm" else "adam", self.warmup_steps, self.prm_mask
        )

    def step_model(self) -> dict[str, Any]:
        """The keyword arguments of :class:`dyntheory.probes.Dissipation` that describe this
        step: ``preconditioner``, ``momentum`` (``b1``, Adam's EMA), ``first_moment`` and
        ``decay`` (``lr · λ_wd``, decoupled decay only; the probes do not model an L2 term inside
        Adam). SGD is plain GD for the probes (``lr``, no preconditioner); its heavy-ball
        momentum is not modelled, so ``b1`` must then be 0."""
        from dyntheory.optim import state as optim_state

        decay = self.lr * self.decoupled_weight_decay
        if self.family not in ADAPTIVE:
            if self.b1:
                raise ValueError(
                    f"the probes model SGD without momentum; got b1={self.b1} (set optim.b1=0)."
                )
            return {"preconditioner": None, "lr": self.lr, "momentum": 0.0, "decay": decay}
        return {
            "preconditioner": self.preconditioner(),
            "momentum": self.b1,
            "first_moment": optim_state.first_moment,
            "decay": decay,
        }

    def gate(self, opt_state: Any) -> Any:
        """PRM's gate ``q`` from ``opt_state`` (its numbers read from the state)."""
        from dyntheory.optim import state as optim_state

        hp = optim_state.hyperparams(opt_state)
        return optim_state.prm_gate(opt_state, mask=self.prm_mask, **_gate_numbers(hp))


class StatePreconditioner(NamedTuple):
    """``opt_state -> p`` with ``p = η_t/(√v̂ + ε)`` (``kind="adam"``) or ``η_t q/(√v̂ + ε)``
    (``"prm"``), every number read from the injected hyperparameters of ``opt_state``, so each
    member of a swept population is modelled with its own (:mod:`dyntheory.optim.state`).
    Equal for equal static choices: two cells of a sweep share their probes."""

    kind: str
    warmup_steps: int
    mask: str

    def __call__(self, opt_state: Any) -> Any:
        from dyntheory.optim import state as optim_state

        hp = optim_state.hyperparams(opt_state)
        lr = _lr(hp["lr"], self.warmup_steps)
        if self.kind == "adam":
            return optim_state.adam_preconditioner(lr, b2=hp["b2"], eps=hp["eps"])(opt_state)
        return optim_state.prm_preconditioner(lr, b2=hp["b2"], mask=self.mask, **_gate_numbers(hp))(
            opt_state
        )


def _float(name: str, v) -> float:
    """A real number as a Python float; NaN, ±Inf and non-numbers are errors naming ``name``."""
    if getattr(v, "shape", None) == ():
        v = v.item()
    if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}.")
    return float(v)


def _values(cfg, name: str) -> tuple:
    v = getattr(cfg, name)
    return () if v is None else v if isinstance(v, tuple) else (v,)


def _lr(lr, warmup_steps: int):
    import optax

    return optax.linear_schedule(0.0, lr, warmup_steps) if warmup_steps else lr


def _gate_numbers(hp: Mapping[str, Any]) -> dict[str, Any]:
    return dict(
        b1=hp["b1"],
        eps=hp["eps"],
        rho=hp["prm_rho"],
        softness=hp["prm_softness"],
        alpha=hp["prm_alpha"],
    )


def _factory(
    static: tuple,
    lr=None,
    b1=None,
    b2=None,
    eps=None,
    weight_decay=None,
    prm_rho=None,
    prm_softness=None,
    prm_alpha=None,
    grokfast_alpha=None,
    grokfast_lamb=None,
) -> optax.GradientTransformation:
    """The family's transformation from its (possibly traced) numbers; explicit parameters, as
    :func:`optax.inject_hyperparams` reads the signature (None: not this family's)."""
    hp = dict(locals())
    import optax

    from dyntheory.optim import amplify_slow_gradients, grokfast, prm

    family, warmup, mask, gate_wd, wd_mode = static
    lr = _lr(hp["lr"], warmup)
    if family == "adamw":
        return optax.adamw(
            lr, b1=hp["b1"], b2=hp["b2"], eps=hp["eps"], weight_decay=hp["weight_decay"]
        )
    if family == "adam":
        return optax.adam(lr, b1=hp["b1"], b2=hp["b2"], eps=hp["eps"])
    if family == "sgd":
        return optax.chain(
            optax.add_decayed_weights(hp["weight_decay"]),
            optax.sgd(lr, momentum=hp["b1"]),
        )
    if family == "grokfast":
        if (
            wd_mode == "l2"
        ):  # Grokfast's reference code: torch.optim.Adam's L2 decay after the filter
            return optax.chain(
                amplify_slow_gradients(hp["grokfast_alpha"], hp["grokfast_lamb"]),
                optax.add_decayed_weights(hp["weight_decay"]),
                optax.adam(lr, b1=hp["b1"], b2=hp["b2"], eps=hp["eps"]),
            )
        return grokfast(
            lr,
            alpha=hp["grokfast_alpha"],
            lamb=hp["grokfast_lamb"],
            b1=hp["b1"],
            b2=hp["b2"],
            eps=hp["eps"],
            weight_decay=hp["weight_decay"],
        )
    return prm(
        lr,
        b2=hp["b2"],
        weight_decay=hp["weight_decay"],
        mask=mask,
        gate_stats=True,
        gate_weight_decay=gate_wd,
        **_gate_numbers(hp),
    )


# what `dyntheory resume --set` may change in an experiment's ``optim`` block: its numbers (the way
# out of a divergence is to resume the last good checkpoint with a smaller lr)
RESUMABLE = tuple(f"optim.{k}" for k in (*SWEEPABLE, "grokfast_weight_decay"))


def check_families(families, choices) -> None:
    """``families`` is a non-empty subset of ``choices`` without repeats (``ValueError``)."""
    if not families or any(f not in choices for f in families):
        raise ValueError(
            f"optimizers must be a non-empty subset of {', '.join(choices)}; "
            f"got {','.join(families) or '(empty)'}."
        )
    if len(set(families)) != len(families):
        raise ValueError(f"optimizers repeats a name: {','.join(families)}.")


__all__ = [
    "FAMILIES",
    "NUMBERS",
    "RESUMABLE",
    "SWEEPABLE",
    "check_families",
    "OptimizerConfig",
    "StatePreconditioner",
]
