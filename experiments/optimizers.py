"""AdamW vs PRM, shared by the experiments that compare them (grokking, PINN, INR).

The config checks every such experiment makes on its optimizer fields, the one way they build
the optimizers from a config with ``b1, b2, eps, weight_decay`` and PRM's ``prm_rho, prm_mask,
prm_softness``, and the probes' view of each optimizer's step (its diagonal preconditioner; the
stopping rules' probes).
"""

from __future__ import annotations

import math

import optax

from dyntheory import probes
from dyntheory.engine.config import ConfigError
from dyntheory.optim import amplify_slow_gradients, grokfast, prm
from dyntheory.optim import state as optim_state

OPTIMIZERS = ("adamw", "prm")  # the default comparison
CHOICES = (*OPTIMIZERS, "grokfast")
# the optimizer fields a `dyntheory resume --set` may change (one convention for every experiment
# that compares optimizers; each adds its own, e.g. its lr and targets)
RESUMABLE = (
    "b1",
    "b2",
    "eps",
    "weight_decay",
    "prm_softness",
    "prm_rho",
    "prm_alpha",
)  # grokfast: the positive control (Lee et al. 2024)


def check_optimizers(optimizers) -> None:
    """``optimizers`` is a non-empty subset of :data:`CHOICES` without repeats."""
    if not optimizers or any(o not in CHOICES for o in optimizers):
        raise ConfigError(
            f"optimizers must be a non-empty subset of {', '.join(CHOICES)}; "
            f"got {','.join(optimizers) or '(empty)'}."
        )
    if len(set(optimizers)) != len(optimizers):
        raise ConfigError(f"optimizers repeats a name: {','.join(optimizers)}.")


def check_sweep_fields(cfg) -> None:
    """The learning-rate grid ``lrs``, the EMA rates and ``prm_alpha`` of a swept comparison."""
    if not cfg.lrs or any(not (lr > 0 and math.isfinite(lr)) for lr in cfg.lrs):
        raise ConfigError(f"lrs must be a non-empty list of positive numbers, got {cfg.lrs}.")
    if len(set(cfg.lrs)) != len(cfg.lrs):
        raise ConfigError(f"lrs repeats a value: {cfg.lrs}.")
    for name in ("b1", "b2", "prm_rho"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ConfigError(f"{name} must lie in [0, 1), got {getattr(cfg, name)}.")
    if cfg.prm_alpha is not None and not cfg.prm_alpha >= 0:
        raise ConfigError(f"prm_alpha must be >= 0 or none, got {cfg.prm_alpha}.")


def weight_decay(cfg, name: str) -> float:
    """The weight decay coefficient of optimizer ``name``: Grokfast's own
    (``grokfast_weight_decay``) when the config sets one, else ``weight_decay``."""
    own = getattr(cfg, "grokfast_weight_decay", None) if name == "grokfast" else None
    return cfg.weight_decay if own is None else own


def decoupled_weight_decay(cfg, name: str) -> float:
    """The decoupled (AdamW-style) weight decay of optimizer ``name``: 0 for Grokfast's L2 mode,
    whose decay goes through Adam's normalization instead."""
    return 0.0 if _l2_mode(cfg, name) else weight_decay(cfg, name)


def _l2_mode(cfg, name: str) -> bool:
    return name == "grokfast" and getattr(cfg, "grokfast_weight_decay_mode", "decoupled") == "l2"


def make_optimizer(
    cfg, name: str, lr: optax.ScalarOrSchedule, alpha: float | None
) -> optax.GradientTransformation:
    """``optax.adamw``, ``prm`` (with gate statistics, for the GateStats probe) or Grokfast from
    ``cfg``; ``lr`` a float or an optax schedule."""
    common = dict(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if name == "adamw":
        return optax.adamw(lr, **common)
    if name == "grokfast":  # Grokfast-EMA in front of the same AdamW (its paper: α 0.98, λ 2)
        if _l2_mode(cfg, name):
            # Grokfast's reference code: torch.optim.Adam's L2 decay, added after the filter
            return optax.chain(
                amplify_slow_gradients(cfg.grokfast_alpha, cfg.grokfast_lamb),
                optax.add_decayed_weights(weight_decay(cfg, name)),
                optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
            )
        return grokfast(
            lr,
            alpha=getattr(cfg, "grokfast_alpha", 0.98),
            lamb=getattr(cfg, "grokfast_lamb", 2.0),
            **(common | {"weight_decay": weight_decay(cfg, name)}),
        )
    return prm(
        lr,
        gate_stats=True,
        gate_weight_decay=getattr(cfg, "prm_gate_weight_decay", False),
        weight_decay=cfg.weight_decay,
        b2=cfg.b2,
        **prm_gate_kwargs(cfg, alpha),
    )


def prm_gate_kwargs(cfg, alpha: float | None) -> dict:
    """PRM's gate knobs from ``cfg`` (``b1, eps, prm_rho, prm_mask, prm_softness``) and ``alpha``,
    as :func:`dyntheory.optim.prm`, its preconditioner and ``optim.state.prm_gate`` take them."""
    return dict(
        b1=cfg.b1,
        eps=cfg.eps,
        rho=cfg.prm_rho,
        mask=cfg.prm_mask,
        softness=cfg.prm_softness,
        alpha=alpha,
    )


def preconditioner(cfg, name: str, lr: float, alpha: float | None):
    """``opt_state -> p``, the diagonal step of optimizer ``name`` as the probes model it
    (:mod:`dyntheory.optim.state`); Grokfast's amplification is not in ``p`` (THEORY.md §10)."""
    if name in ("adamw", "grokfast"):
        return optim_state.adam_preconditioner(lr, b2=cfg.b2, eps=cfg.eps)
    return optim_state.prm_preconditioner(lr, b2=cfg.b2, **prm_gate_kwargs(cfg, alpha))


def stopping_probes(cfg, name: str, lr: float, alpha: float | None, every: int, start: int = 10):
    """The probes of the training-set-only stopping rules (:func:`dyntheory.probes.stopping_rules`)
    for a squared-loss run whose probe set is the whole training set: the LOO
    :class:`~dyntheory.probes.PopulationRisk` every step, and a dense
    :class:`~dyntheory.probes.Dissipation` every ``every`` steps from ``start`` on (the W_S split
    at half the loss dissipated, with the augmented identity of the step as taken as its
    validity check, THEORY.md §10)."""
    precond = preconditioner(cfg, name, lr, alpha)
    return [
        probes.PopulationRisk(probes.Schedule.every(1), preconditioner=precond),
        probes.Dissipation(
            probes.Schedule.every(every),
            preconditioner=precond,
            loss="squared",
            query=False,
            threshold=0.5,
            mode="dissipated_fraction",
            start=start,
            momentum=cfg.b1,
            first_moment=optim_state.first_moment,
            decay=lr * decoupled_weight_decay(cfg, name),
        ),
    ]
