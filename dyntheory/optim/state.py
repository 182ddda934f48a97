r"""Decoding optimizer state: the diagonal step ``p`` an optimizer takes, and PRM's gate ``q``.

The theory instruments need to know how an adaptive optimizer moves the outputs: one step moves
them by ``Δu ≈ −K_eff g`` with ``K_eff = J diag(p) Jᵀ`` (THEORY.md §3, §10), where ``p`` is the
optimizer's per-coordinate step size. This module is the one place that reads it out of an optax
state:

- :func:`find_state`: the sub-state of a given type anywhere in a (chained) optax state;
- :func:`prm_gate`: PRM's gate ``q = mask(m̂², ŝ)`` recomputed from its state (Algorithm 1);
- :func:`adam_preconditioner` / :func:`prm_preconditioner`: ``opt_state -> p`` with
  ``p = η/(√v̂ + ε)`` (times ``q`` for PRM). Momentum and weight decay are ignored here;
- :func:`first_moment`: ``opt_state -> m``, the (uncorrected) momentum of Adam / AdamW / PRM,
  for the augmented loss identity (:mod:`dyntheory.momentum`);
- :func:`hyperparams` / :func:`set_hyperparams`: the numbers an optimizer built with
  :func:`optax.inject_hyperparams` keeps in its state (read, and set per member of a sweep).

Before the first update (``count = 0``) there are no statistics and ``p = 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dyntheory.optim.masks import gate


def find_state(opt_state: Any, type_name: str) -> Any:
    """The optimizer sub-state named ``type_name`` (e.g. ``"ScaleByAdamState"``), or an error."""
    found = optax.tree.get(opt_state, type_name)
    if found is None:
        raise ValueError(f"the optimizer state has no {type_name}; is it the right optimizer?")
    return found


def _first_of(opt_state: Any, type_names: tuple[str, ...]) -> Any:
    """The first optimizer sub-state named in ``type_names`` that ``opt_state`` has, or None."""
    for name in type_names:
        found = optax.tree.get(opt_state, name)
        if found is not None:
            return found
    return None


def _lr_at(lr, count):
    return lr(count) if callable(lr) else lr


def bias_correction(beta, count: jax.Array) -> jax.Array:
    """``1 − β^t``, and 1 at ``t = 0`` (no statistics yet: callers return p = 0 there)."""
    c = 1 - beta ** count.astype(jnp.float32)
    return jnp.where(count > 0, c, 1.0)


def prm_gate(
    opt_state: Any,
    *,
    b1: float = 0.9,
    rho: float = 0.99,
    eps: float = 1e-8,
    mask: str = "snr",
    softness: float = 1.0,
    alpha: float = 1.0,
    reduction: str = "per_parameter",
    warmup_steps: int = 0,
) -> Any:
    r"""PRM's gate ``q = mask(m̂², ŝ)`` from its state (paper Algorithm 1), a pytree like the params.

    ``m̂ = m/(1 − β1ᵗ)``, ``ŝ = s/(1 − ρᵗ)``; ``q = 1`` while ``t ≤ warmup_steps``. The
    hyper-parameters must be those the optimizer was built with. With several seeds (leading
    seed axis on every leaf) call it under ``jax.vmap``.
    """
    st = find_state(opt_state, "ScaleByPopulationRiskState")
    c1, cr = bias_correction(b1, st.count), bias_correction(rho, st.count)

    def one(m, s):
        q = gate(
            (m / c1) ** 2,
            s / cr,
            mask=mask,
            reduction=reduction,
            alpha=alpha,
            softness=softness,
            eps=eps,
        )
        return jnp.where(st.count <= warmup_steps, 1.0, q)

    return jax.tree.map(one, st.mu, st.s)


def first_moment(opt_state: Any) -> Any:
    """``m`` (a pytree like the params, not bias-corrected) of Adam's / AdamW's or PRM's state."""
    found = _first_of(opt_state, ("ScaleByAdamState", "ScaleByPopulationRiskState"))
    if found is not None:
        return found.mu
    raise ValueError(
        "the optimizer state has neither ScaleByAdamState nor ScaleByPopulationRiskState; "
        "first_moment reads Adam's, AdamW's or PRM's momentum."
    )


def adam_preconditioner(lr, *, b2: float = 0.999, eps: float = 1e-8) -> Callable:
    r"""``opt_state -> p`` with ``p = η/(√v̂ + ε)`` from Adam's / AdamW's state.

    Momentum and weight decay are ignored. Before the first update ``p = 0``.
    """

    def p(opt_state):
        st = find_state(opt_state, "ScaleByAdamState")
        c2 = bias_correction(b2, st.count)
        eta = jnp.where(st.count > 0, _lr_at(lr, st.count), 0.0)
        return jax.tree.map(lambda v: (eta / (jnp.sqrt(v / c2) + eps)).astype(v.dtype), st.nu)

    return p


def prm_preconditioner(
    lr,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    rho: float = 0.99,
    eps: float = 1e-8,
    mask: str = "snr",
    softness: float = 1.0,
    alpha: float = 1.0,
    reduction: str = "per_parameter",
    warmup_steps: int = 0,
) -> Callable:
    r"""``opt_state -> p`` with ``p = η q/(√v̂ + ε)``, ``q`` from :func:`prm_gate` (same
    hyper-parameters as :func:`dyntheory.optim.prm`; ``p = 0`` before the first update)."""

    def p(opt_state):
        st = find_state(opt_state, "ScaleByPopulationRiskState")
        q = prm_gate(
            opt_state,
            b1=b1,
            rho=rho,
            eps=eps,
            mask=mask,
            softness=softness,
            alpha=alpha,
            reduction=reduction,
            warmup_steps=warmup_steps,
        )
        c2 = bias_correction(b2, st.count)
        eta = jnp.where(st.count > 0, _lr_at(lr, st.count), 0.0)
        return jax.tree.map(
            lambda v, g: (eta * g / (jnp.sqrt(v / c2) + eps)).astype(v.dtype), st.nu, q
        )

    return p


def hyperparams(opt_state: Any) -> Mapping[str, Any]:
    """The injected numbers of an :meth:`OptimizerConfig.build` state (``{name: array}``)."""
    found = _first_of(opt_state, ("InjectStatefulHyperparamsState", "InjectHyperparamsState"))
    if found is not None:
        return found.hyperparams
    raise ValueError(
        "the optimizer state has no injected hyperparameters; build it with "
        "dyntheory.optim.config.OptimizerConfig.build()."
    )


def set_hyperparams(opt_state: Any, values: Mapping[str, Any]) -> Any:
    """``opt_state`` with the injected numbers ``values`` (``{name: value}``) replaced; unknown
    names are an error naming the ones the state has."""
    hp = dict(opt_state.hyperparams) if hasattr(opt_state, "hyperparams") else None
    if hp is None:
        raise ValueError(
            "a sweep needs an optimizer built with optax.inject_hyperparams at the top level "
            "(dyntheory.optim.config.OptimizerConfig.build()); this state has no hyperparams."
        )
    unknown = sorted(set(values) - set(hp))
    if unknown:
        raise ValueError(
            f"the optimizer has no hyperparameter {', '.join(unknown)}; it has {', '.join(hp)}."
        )
    for k, v in values.items():
        hp[k] = jnp.asarray(v, hp[k].dtype)
    return opt_state._replace(hyperparams=hp)


__all__ = [
    "adam_preconditioner",
    "hyperparams",
    "set_hyperparams",
    "bias_correction",
    "find_state",
    "first_moment",
    "prm_gate",
    "prm_preconditioner",
]
