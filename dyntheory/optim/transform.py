r"""The gated direction of PRM (paper Algorithm 1): :func:`scale_by_population_risk`.

Adam's direction ``m̂/(√v̂ + ε)`` times a gate ``q = mask(m̂², ŝ) ∈ [0, 1]`` from the EMA ``s`` of
the gradient's variance around its running mean (THEORY.md §6). :func:`dyntheory.optim.prm`
chains it with decoupled weight decay and the learning rate into the full optimizer.

References:
  E. Litman and G. Guo, "A Theory of Generalization in Deep Learning", arXiv:2605.01172 (2026),
  Sec. 6, Algorithm 1, Thm 6.5 and App. F; reference package ``popriskmin`` (PyTorch ``PRM``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from dyntheory.optim._checks import (
    check_choice,
    check_range,
    check_scalar_or_schedule,
    is_zero,
)
from dyntheory.optim.masks import GATES, REDUCTIONS, paired_sum, tensor_gate

VARIANCES = ("ema", "batch")


class ScaleByPopulationRiskState(NamedTuple):
    """State of :func:`scale_by_population_risk`, in the paper's symbols (Algorithm 1)."""

    count: jax.Array  # shape=(), dtype=int32: t, the number of updates taken so far.
    mu: optax.Updates  # like params (shape, dtype, sharding): m, EMA of g with rate b1.
    nu: optax.Updates  # like params: v, EMA of g² with rate b2.
    # like params: s, EMA of (g − m_{t−1})² with rate rho (not bias-corrected); with
    # variance="batch", the batch_variance passed at the last step (the ŝ the gate used).
    s: optax.Updates
    # Gate statistics of the last step, over all coordinates (each counts once), 0 before it;
    # None unless built with gate_stats=True:
    gate_mean: jax.Array | None  # shape=(), dtype=float32: mean of q.
    gate_open_fraction: jax.Array | None  # shape=(), float32: fraction of coordinates with q > ½.


def scale_by_population_risk(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    rho: jax.typing.ArrayLike = 0.99,
    eps: jax.typing.ArrayLike = 1e-8,
    mask: str = "snr",
    softness: jax.typing.ArrayLike = 1.0,
    alpha: jax.typing.ArrayLike = 1.0,
    reduction: str = "per_parameter",
    warmup_steps: jax.typing.ArrayLike = 0,
    variance: str = "ema",
    gate_stats: bool = False,
    gated_weight_decay: optax.ScalarOrSchedule | None = None,
    weight_decay_mask: Any | Callable[[optax.Params], Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Rescale updates by Adam's direction times the population-risk gate (Algorithm 1).

    With :math:`g_t` the incoming (batch-mean) gradient and :math:`m_0 = v_0 = s_0 = 0`:

    .. math::

      \begin{align*}
        s_t &\leftarrow \rho\, s_{t-1} + (1 - \rho)\,(g_t - m_{t-1})^2
          && \text{centred on } m \text{ before its update} \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad
        v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 \\
        \hat m_t, \hat v_t, \hat s_t &= m_t / (1 - \beta_1^t),\; v_t / (1 - \beta_2^t),\;
          s_t / (1 - \rho^t) \\
        q_t &= \mathrm{mask}(\hat m_t^2, \hat s_t) \in [0, 1]
          && (q_t = 1 \text{ while } t \le \texttt{warmup\_steps}) \\
        u_t &= q_t \odot \bigl(\hat m_t / (\sqrt{\hat v_t} + \varepsilon)
          + \lambda_{wd}\, w_t\bigr)
          && (\lambda_{wd} = \texttt{gated\_weight\_decay}, \text{ default none})
      \end{align*}

    and the masks of :mod:`dyntheory.optim.masks`: ``hard`` :math:`1[\hat m^2 > \alpha\hat s]`,
    ``soft`` :math:`\delta/(\delta + \lambda\hat s + \varepsilon)` with
    :math:`\delta = \max(\hat m^2 - \alpha\hat s, 0)`, ``snr``
    :math:`\hat m^2/(\hat m^2 + \lambda\alpha\hat s + \varepsilon)`, :math:`\lambda` = ``softness``.
    Decisions the paper leaves open [ours]: the one ``eps`` goes outside Adam's square root (as in
    :func:`optax.adam`, ``eps_root = 0``) and is added as is to the mask denominators (units of
    gradient in Adam's, of gradient² in the masks'; at 1e-8 it only guards 0/0); ``m``, ``v`` and
    ``s`` take the dtype of the params (``optax.adam``'s ``mu_dtype=None``); the statistics keep
    filling during warm-up. Because :math:`m_{t-1}` carries noise of its own, for i.i.d. gradients
    of variance :math:`\sigma^2` the centred EMA settles at
    :math:`E[\hat s] = \sigma^2 \cdot 2/(1 + \beta_1)` (1.05 σ² at β1 = 0.9), slightly above the
    variance of one batch-mean gradient that α = 1 compares with.

    ``variance="batch"`` is the exact variant [ours]: the caller measures per-example gradients
    and passes ``update(g, state, params, batch_variance=...)``, a pytree like the params holding
    :math:`\Sigma_B / (b - 1)` per coordinate (:func:`dyntheory.poprisk.batch_variance` computes
    it); it replaces :math:`\hat s` (no EMA, no bias correction) and is stored in ``state.s``.
    Leaving it out raises, and so does passing it with ``variance="ema"`` (a silently ignored
    variance is a wrong experiment). Other extra arguments are ignored, as optax requires.

    Args:
      b1: EMA rate of the first moment ``m``.
      b2: EMA rate of the second moment ``v``.
      rho: EMA rate of the variance ``s``; usually shorter than ``b2``.
      eps: Added to Adam's denominator and to the soft/snr mask denominators.
      mask: ``"snr"`` (default), ``"soft"`` or ``"hard"``.
      softness: λ of the soft and snr masks (the package suggests trying 0.3, 1, 3, 10).
      alpha: Noise multiplier α: 1 for fresh batches (online data), ``b/(n − b)`` for a fixed
        dataset of ``n`` examples, see :func:`finite_dataset_alpha`.
      reduction: ``"per_parameter"`` (one q per coordinate) or ``"per_tensor"`` (one q per leaf,
        from the leaf's mean m̂² and mean ŝ; recommended for large generative models).
      warmup_steps: Number of first steps with q = 1 (plain Adam) while the statistics fill.
      variance: ``"ema"`` (Algorithm 1) or ``"batch"`` (measured batch variance, see above).
      gate_stats: Also record the gate's mean and open fraction in the state every step (two
        reductions over all parameters; :class:`dyntheory.probes.GateStats` reads them). Off by
        default, the update is purely elementwise, as Algorithm 1: on CPU, where XLA does not
        fuse the reductions into the update, they raise the optimizer's memory traffic from 1.5x
        to 1.9x AdamW's and the 1M-parameter MLP's step time from 1.05x to 1.15x
        (``benchmarks/prm.py``). When off, the two state fields are ``None``.
      gated_weight_decay: Decoupled weight decay λ_wd (a float or a schedule of the step count,
        evaluated at t − 1 as :func:`optax.add_decayed_weights` does) added to Adam's direction
        *inside* the gate, so a closed coordinate is not decayed either ([ours], not Algorithm 1;
        :func:`prm` uses it for ``gate_weight_decay=True``). Needs ``params`` in ``update``. At the
        default ``None`` (or a Python 0) no term is added and ``params`` are not needed. ``None``
        rather than 0 so that :func:`optax.inject_hyperparams` keeps it static: an injected 0
        would turn the term on (adding 0 · w, and requiring ``params``).
      weight_decay_mask: Where ``gated_weight_decay`` applies: a pytree of Python booleans like
        the params (or a prefix of it, or a callable returning one, called on the updates as
        :func:`optax.masked` does), as the ``mask`` of :func:`optax.add_decayed_weights`;
        ``None`` means everywhere.

    Raises:
      ValueError: For an unknown ``mask``, ``reduction`` or ``variance``, and for a concrete
        hyper-parameter (a Python number, NumPy scalar or concrete JAX array) that is NaN, ±inf or
        out of range: ``b1``, ``b2``, ``rho`` in [0, 1); ``eps``, ``softness``, ``alpha``,
        ``warmup_steps`` >= 0. Traced values (:func:`optax.inject_hyperparams` under ``jit``) are
        not checked.
      TypeError: For a hyper-parameter that is not a real number (a bool, a string, ...).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`ScaleByPopulationRiskState`; with ``gate_stats=True``,
      ``optax.tree.get(state, "gate_mean")`` and ``"gate_open_fraction"`` read the gate
      statistics of the last step.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from dyntheory.optim import scale_by_population_risk
      >>> tx = scale_by_population_risk(mask="snr", gate_stats=True)
      >>> params = jnp.array([1.0, -2.0])
      >>> state = tx.init(params)
      >>> updates, state = tx.update(jnp.array([0.5, 0.5]), state)
      >>> print(updates.round(4))  # t = 1: m̂² = ŝ = g², so snr gives q = ½ of Adam's sign step
      [0.5 0.5]
      >>> q_mean = optax.tree.get(state, "gate_mean")
      >>> print(f"{q_mean:.4f} {optax.tree.get(state, 'gate_open_fraction'):.4f}")
      0.5000 0.0000

    References:
      Litman and Guo, arXiv:2605.01172, Algorithm 1 (the update), Thm 6.5 (the gate), App. F.
    """
    check_choice("mask", mask, tuple(GATES))
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("variance", variance, VARIANCES)
    for name, value in (("b1", b1), ("b2", b2), ("rho", rho)):
        check_range(name, value, 0.0, 1.0)
    for name, value in (("eps", eps), ("softness", softness), ("alpha", alpha)):
        check_range(name, value, 0.0)
    check_range("warmup_steps", warmup_steps, 0)
    check_scalar_or_schedule("gated_weight_decay", gated_weight_decay)
    # None, or a weight decay known to be zero when the optimizer is built, adds no term.
    decay = gated_weight_decay is not None and not is_zero(gated_weight_decay)

    # s is centred on m_{t−1}, the mean BEFORE its update (Algorithm 1). Since
    # m_t = β1 m_{t−1} + (1 − β1) g, the residual g − m_{t−1} equals (g − m_t)/β1; computing it from
    # m_t lets XLA write m_t over a donated m_{t−1} (reading m_{t−1} after that write costs a full
    # copy of m per step on CPU). [ours] The rewrite adds a rounding error of ulp(m_t)/β1 to the
    # residual, negligible for β1 ≥ 1/2; for smaller or traced β1 (inject_hyperparams) the literal
    # form is used.
    centre_on_new_m = isinstance(b1, (int, float)) and b1 >= 0.5

    def init_fn(params):
        return ScaleByPopulationRiskState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params),
            nu=optax.tree.zeros_like(params),
            s=optax.tree.zeros_like(params),
            gate_mean=jnp.zeros([], jnp.float32) if gate_stats else None,
            gate_open_fraction=jnp.zeros([], jnp.float32) if gate_stats else None,
        )

    def update_fn(updates, state, params=None, *, batch_variance=None, **extra_args):
        del extra_args
        if variance == "batch" and batch_variance is None:
            raise ValueError(
                'variance="batch" needs update(..., batch_variance=...): a pytree like the params '
                "holding the per-coordinate variance of the batch-mean gradient, Σ_B/(b − 1), "
                'from per-example gradients. Use variance="ema" to estimate it from the stream.'
            )
        if variance == "ema" and batch_variance is not None:
            raise ValueError(
                'batch_variance was passed but variance="ema" would ignore it; construct the '
                'optimizer with variance="batch" to gate with the measured batch variance.'
            )
        if batch_variance is not None and (
            jax.tree.structure(batch_variance) != jax.tree.structure(updates)
        ):
            raise ValueError(
                "batch_variance must have the structure of the gradients: "
                f"{jax.tree.structure(batch_variance)} vs {jax.tree.structure(updates)}."
            )

        if decay and params is None:
            raise ValueError(
                "scale_by_population_risk with gated_weight_decay needs update(..., params)."
            )

        t = optax.safe_increment(state.count)
        # Same expressions as optax.scale_by_adam / optax.tree.bias_correction, so an open gate
        # reproduces optax.adamw bit for bit.
        c1, c2, c_rho = 1 - b1**t, 1 - b2**t, 1 - rho**t
        in_warmup = t <= warmup_steps

        def leaf(g, m, v, s, bv, p):
            m_prev, m = m, (1 - b1) * g + b1 * m
            if bv is not None:
                s = bv.astype(s.dtype)
            elif centre_on_new_m:
                s = (1 - rho) * ((g - m) * (1 / b1)) ** 2 + rho * s
            else:
                s = (1 - rho) * (g - m_prev) ** 2 + rho * s
            v = (1 - b2) * g**2 + b2 * v
            m_hat = m / c1.astype(m.dtype)
            v_hat = v / c2.astype(v.dtype)
            s_hat = s if bv is not None else s / c_rho.astype(s.dtype)
            m2 = m_hat**2
            if reduction == "per_tensor":  # one scalar q, in float32 or wider
                q = tensor_gate(m2, s_hat, mask=mask, alpha=alpha, softness=softness, eps=eps)
                q = jnp.where(in_warmup, 1, q)
                stats = (q * g.size, jnp.where(q > 0.5, g.size, 0))
            else:
                q = GATES[mask](m2, s_hat, alpha=alpha, softness=softness, eps=eps)
                q = jnp.where(in_warmup, 1, q.astype(g.dtype))
                stats = paired_sum(q, q > 0.5) if gate_stats else None
            if gate_stats:
                stats = tuple(x.astype(jnp.float32) for x in stats)
            # Adam's direction exactly as optax.scale_by_adam computes it (eps_root = 0), plus
            # decoupled weight decay as optax.add_decayed_weights adds it, gated: with q = 1 this
            # is optax.adamw's update to the bit.
            direction = m_hat / (jnp.sqrt(v_hat) + eps)
            if p is not None:
                direction = direction + wd * p
            u = q.astype(g.dtype) * direction
            return u.astype(g.dtype), m, v, s, stats

        flat_g, treedef = jax.tree.flatten(updates)
        flat_bv = (
            [None] * len(flat_g) if batch_variance is None else jax.tree.leaves(batch_variance)
        )
        flat_p = [None] * len(flat_g)
        if decay:
            wd = gated_weight_decay
            if callable(wd):
                wd = wd(state.count)
            flags = leaf_flags(weight_decay_mask, updates)  # optax.masked calls mask(updates)
            flat_p = [
                p if use else None
                for p, use in zip(treedef.flatten_up_to(params), flags, strict=True)
            ]
        out = [
            leaf(*args)
            for args in zip(
                flat_g,
                treedef.flatten_up_to(state.mu),
                treedef.flatten_up_to(state.nu),
                treedef.flatten_up_to(state.s),
                flat_bv,
                flat_p,
                strict=True,
            )
        ]
        new_updates, mu, nu, s = (treedef.unflatten([o[i] for o in out]) for i in range(4))
        n = max(sum(g.size for g in flat_g), 1)
        if gate_stats:
            q_sum = sum((o[4][0] for o in out), jnp.zeros([], jnp.float32))
            open_sum = sum((o[4][1] for o in out), jnp.zeros([], jnp.float32))
            gate_mean, gate_open_fraction = q_sum / n, open_sum / n
        else:
            gate_mean = gate_open_fraction = None
        new_state = ScaleByPopulationRiskState(
            count=t,
            mu=optax.tree.cast_like(mu, state.mu),
            nu=optax.tree.cast_like(nu, state.nu),
            s=optax.tree.cast_like(s, state.s),
            gate_mean=gate_mean,
            gate_open_fraction=gate_open_fraction,
        )
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def leaf_flags(mask: Any, tree: Any) -> list[bool]:
    """One bool per leaf of ``tree`` from an optax-style mask (a prefix pytree, or a callable)."""
    if mask is None:
        return [True] * len(jax.tree.leaves(tree))
    if callable(mask):
        mask = mask(tree)
    flags: list[bool] = []
    jax.tree.map(lambda m, sub: flags.extend([bool(m)] * len(jax.tree.leaves(sub))), mask, tree)
    return flags
