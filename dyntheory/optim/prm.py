r"""PRM, the population-risk gated AdamW, as an optax transformation (paper Algorithm 1).

Adam moves every coordinate along :math:`\hat m / (\sqrt{\hat v} + \varepsilon)`. PRM also keeps an
EMA :math:`s` of the gradient's variance around its running mean and multiplies Adam's direction by
a gate :math:`q \in [0, 1]` that stays open where the coherent part :math:`\hat m^2` of the gradient
dominates the sampling noise :math:`\alpha \hat s` (a first-order estimate of whether the step
lowers the *population* risk, paper Thm 6.5), so updates that only memorise the sample are held
back without a validation set. With :math:`q \equiv 1` it is exactly :func:`optax.adamw`.

Here: :func:`prm` (the full optimizer, a drop-in for :func:`optax.adamw`) and
:func:`finite_dataset_alpha`. The gated direction :func:`scale_by_population_risk` and its state
are in :mod:`dyntheory.optim.transform`, the gates in :mod:`dyntheory.optim.masks`.

References:
  E. Litman and G. Guo, "A Theory of Generalization in Deep Learning", arXiv:2605.01172 (2026),
  Sec. 6, Algorithm 1, Thm 6.5 and App. F; reference package ``popriskmin`` (PyTorch ``PRM``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import jax
import optax

from dyntheory.optim._checks import check_scalar_or_schedule
from dyntheory.optim.transform import scale_by_population_risk


def prm(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    rho: jax.typing.ArrayLike = 0.99,
    eps: jax.typing.ArrayLike = 1e-8,
    weight_decay: optax.ScalarOrSchedule = 0.01,
    mask: str = "snr",
    softness: jax.typing.ArrayLike = 1.0,
    alpha: jax.typing.ArrayLike = 1.0,
    reduction: str = "per_parameter",
    warmup_steps: jax.typing.ArrayLike = 0,
    variance: str = "ema",
    gate_stats: bool = False,
    weight_decay_mask: Any | Callable[[optax.Params], Any] | None = None,
    gate_weight_decay: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""PRM: the population-risk gated AdamW of paper Algorithm 1, a drop-in for ``optax.adamw``.

    .. math::

      w_{t+1} = w_t - \eta_t \left( q_t \odot \frac{\hat m_t}{\sqrt{\hat v_t} + \varepsilon}
        + \lambda_{wd}\, w_t \right)

    with :math:`q_t` the gate of :func:`scale_by_population_risk` (see there for the statistics and
    masks). Built as ``optax.chain(scale_by_population_risk(...), optax.add_decayed_weights(
    weight_decay, weight_decay_mask), optax.scale_by_learning_rate(learning_rate))``, the chain of
    :func:`optax.adamw`: weight decay is decoupled and *not* gated (paper Algorithm 1; see
    ``gate_weight_decay`` below), and is multiplied by the learning rate as in optax and PyTorch.
    With the gate held open (``mask="hard", alpha=0``, or ``warmup_steps`` covering the run) it
    equals ``optax.adamw`` with the same ``learning_rate, b1, b2, eps, weight_decay``. The defaults
    are the reference package's (note ``weight_decay=0.01`` where ``optax.adamw`` defaults to 1e-4).

    With ``gate_weight_decay=True`` [ours, not Algorithm 1] the weight decay is gated too:

    .. math::

      w_{t+1} = w_t - \eta_t \left( q_t \odot \frac{\hat m_t}{\sqrt{\hat v_t} + \varepsilon}
        + \lambda_{wd}\, q_t \odot w_t \right),

    so a coordinate the gate holds back is neither moved by the gradient nor shrunk. It is built as
    ``optax.chain(scale_by_population_risk(..., gated_weight_decay=weight_decay,
    weight_decay_mask=weight_decay_mask), optax.scale_by_learning_rate(learning_rate))``: the
    decay is added to Adam's direction before the gate multiplies it, in the same per-coordinate
    expression, so it costs no extra pass over memory; with the gate held open it is again
    ``optax.adamw``. The default path (``False``) is unchanged.

    Args:
      learning_rate: A float or an optax schedule.
      b1, b2, rho, eps, mask, softness, alpha, reduction, warmup_steps, variance, gate_stats: As in
        :func:`scale_by_population_risk`.
      weight_decay: Decoupled weight decay λ_wd (a float or a schedule).
      gate_weight_decay: Multiply the weight decay by the gate as well (see above). Default
        ``False``: Algorithm 1, weight decay applied to every coordinate whatever the gate.
      weight_decay_mask: ``optax.adamw``'s ``mask``, renamed because ``mask`` is the gate here: a
        pytree of booleans like the params (or a prefix, or a callable returning one), ``True``
        where weight decay applies. The gate always applies to every parameter. Under
        ``optax.inject_hyperparams`` pass a callable mask through ``static_args``.

    Raises:
      ValueError: As :func:`scale_by_population_risk`, and for a concrete ``learning_rate`` or
        ``weight_decay`` that is negative, NaN or infinite (schedules are not checked).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs ``params``.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from dyntheory.optim import prm
      >>> f = lambda w: jnp.sum((w - jnp.array([1.0, -1.0, 1.0])) ** 2)
      >>> opt = prm(learning_rate=0.1, weight_decay=0.0)
      >>> w = jnp.array([-1.0, 10.0, 1.0])
      >>> state = opt.init(w)
      >>> @jax.jit
      ... def step(w, state):
      ...     updates, state = opt.update(jax.grad(f)(w), state, w)
      ...     return optax.apply_updates(w, updates), state
      >>> for _ in range(500):
      ...     w, state = step(w, state)
      >>> print(bool(f(w) < 0.05))
      True

    References:
      Litman and Guo, arXiv:2605.01172, Algorithm 1, Thm 6.5, App. F.
      Loshchilov and Hutter, "Decoupled Weight Decay Regularization", arXiv:1711.05101.
    """
    check_scalar_or_schedule("learning_rate", learning_rate)
    check_scalar_or_schedule("weight_decay", weight_decay)
    gate_kwargs = dict(
        b1=b1,
        b2=b2,
        rho=rho,
        eps=eps,
        mask=mask,
        softness=softness,
        alpha=alpha,
        reduction=reduction,
        warmup_steps=warmup_steps,
        variance=variance,
        gate_stats=gate_stats,
    )
    if gate_weight_decay:
        return optax.chain(
            scale_by_population_risk(
                **gate_kwargs, gated_weight_decay=weight_decay, weight_decay_mask=weight_decay_mask
            ),
            optax.scale_by_learning_rate(learning_rate),
        )
    return optax.chain(
        scale_by_population_risk(**gate_kwargs),
        optax.add_decayed_weights(weight_decay, weight_decay_mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def finite_dataset_alpha(batch_size: int, n_train: int) -> float:
    r"""α = b / (n − b) for minibatches of ``b`` drawn from a fixed dataset of ``n`` examples.

    Paper Sec. 6: sampling without replacement from a finite set shrinks the variance of the batch
    mean by the finite-population factor, so the noise threshold is :math:`\alpha = b/(n - b)`
    instead of the α = 1 of fresh (online) batches. On large datasets (n ≫ b) α → 0 and the gate
    is nearly AdamW (a known criticism, THEORY §9).

    Example:
      >>> finite_dataset_alpha(batch_size=512, n_train=2352)
      0.2782608695652174
    """
    b, n = operator.index(batch_size), operator.index(n_train)
    if b < 1:
        raise ValueError(f"batch_size must be >= 1; got {b}.")
    if n <= b:
        raise ValueError(
            f"n_train must exceed batch_size (got batch_size={b}, n_train={n}): with full-batch "
            "training there is no sampling noise to gate on (α = b/(n − b) would be infinite)."
        )
    return b / (n - b)
