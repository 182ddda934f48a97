r"""Grokfast-EMA as an optax transformation: amplify the slow component of the gradient.

Grokfast reads the sequence of gradients of one parameter as a signal in time and splits it into a
fast, oscillating part (which fits the training set) and a slow part (which, the authors argue,
drives the late generalisation of grokking). The EMA variant low-pass filters the gradients with an
exponential moving average and adds the filtered signal back, amplified by λ, before the inner
optimizer sees it. Here it is an optax gradient transformation, so it composes with any optimizer:
``optax.chain(amplify_slow_gradients(alpha, lamb), inner)``; :func:`grokfast` is that chain with
:func:`optax.adamw` as the inner optimizer (the paper's main setting).

Public API: :func:`amplify_slow_gradients`, :func:`grokfast`, :class:`AmplifySlowGradientsState`.

References:
  J. Lee, B. G. Kang, K. Kim and K. M. Lee, "Grokfast: Accelerated Grokking by Amplifying Slow
  Gradients", arXiv:2405.20233 (2024); reference code ``gradfilter_ema`` in
  ``github.com/ironjr/grokfast``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from dyntheory.optim._checks import check_choice, check_range, check_scalar_or_schedule

EMA_INITS = ("first_gradient", "zeros")


class AmplifySlowGradientsState(NamedTuple):
    """State of :func:`amplify_slow_gradients`."""

    count: jax.Array  # shape=(), dtype=int32: t, the number of updates taken so far.
    # like params (shape, sharding; dtype of the params unless mu_dtype is given): μ, the EMA of
    # the incoming gradients with rate alpha (zeros before the first update).
    mu: optax.Updates


def amplify_slow_gradients(
    alpha: jax.typing.ArrayLike = 0.98,
    lamb: jax.typing.ArrayLike = 2.0,
    ema_init: str = "first_gradient",
    mu_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Grokfast-EMA: add the amplified slow (EMA-filtered) component to the gradients.

    With :math:`g_t` the incoming gradient (:math:`t = 1, 2, \dots`):

    .. math::

      \begin{align*}
        \mu_t &\leftarrow \alpha\, \mu_{t-1} + (1 - \alpha)\, g_t, \qquad \mu_1 = g_1
          && (\texttt{ema\_init="first\_gradient"}, \text{ the default}) \\
        \tilde g_t &= g_t + \lambda\, \mu_t
      \end{align*}

    and :math:`\tilde g_t` is passed on. ``ema_init`` decides the start of the EMA:

    * ``"first_gradient"`` (default): :math:`\mu_1 = g_1`, so :math:`\tilde g_1 = (1 + \lambda)
      g_1`. This is what the reference code ``gradfilter_ema`` does (it seeds the EMA with the
      first gradient before its first EMA step, which leaves it at :math:`g_1`); the weights of
      :math:`\mu_t` over :math:`g_1, \dots, g_t` sum to one from the first step on, as after a
      bias correction, without the :math:`1/(1 - \alpha^t)` factor.
    * ``"zeros"``: :math:`\mu_0 = 0`, the plain EMA, :math:`\mu_1 = (1 - \alpha) g_1`; the slow
      component then ramps up over about :math:`1/(1 - \alpha)` steps (50 at α = 0.98), a
      built-in warm-up [ours, not in the paper].

    The state is initialised with zeros in both cases (so :meth:`init` needs only shapes and
    dtypes, e.g. :class:`jax.ShapeDtypeStruct`); the first-gradient seed is the scalar rate
    :math:`a_t = \alpha \cdot 1[t > 1]` in :math:`\mu_t = a_t \mu_{t-1} + (1 - a_t) g_t`, so the
    update has no branch on traced values. With :math:`\lambda = 0` the gradients pass unchanged
    (bit for bit, as long as :math:`\mu` stays finite) and the transformation is the identity.

    Args:
      alpha: EMA rate α in [0, 1) (the paper's α, default 0.98: a window of about 50 steps).
      lamb: Amplification λ >= 0 of the slow component (the paper's λ, default 2).
      ema_init: ``"first_gradient"`` (default, as the reference code) or ``"zeros"``, see above.
      mu_dtype: dtype of the EMA μ (e.g. ``jnp.float32`` for bfloat16 params, where an EMA with
        α = 0.98 loses most of each step's increment to rounding); ``None``: the params' dtype.
        The amplified gradients keep the dtype of the incoming ones.

    Raises:
      ValueError: For an unknown ``ema_init``, or a concrete ``alpha`` outside [0, 1) or ``lamb``
        below 0 (NaN and ±inf included). Traced values (:func:`optax.inject_hyperparams` under
        ``jit``) are not checked.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs` with state
      :class:`AmplifySlowGradientsState`; ``update`` needs no ``params`` and ignores extra args.

    Example:
      ```pycon
      >>> import jax.numpy as jnp
      >>> from dyntheory.optim import amplify_slow_gradients
      >>> tx = amplify_slow_gradients(alpha=0.5, lamb=2.0)
      >>> state = tx.init(jnp.zeros(2))
      >>> g1, state = tx.update(jnp.array([1.0, -2.0]), state)  # μ1 = g1, g̃1 = 3 g1
      >>> g2, state = tx.update(jnp.array([3.0, 0.0]), state)  # μ2 = [2, -1], g̃2 = g2 + 2 μ2
      >>> print(g1, g2, state.mu)
      [ 3. -6.] [ 7. -2.] [ 2. -1.]

      ```

    References:
      Lee, Kang, Kim and Lee, "Grokfast: Accelerated Grokking by Amplifying Slow Gradients",
      arXiv:2405.20233 (2024), the EMA filter (Grokfast-EMA).
    """
    check_range("alpha", alpha, 0.0, 1.0)
    check_range("lamb", lamb, 0.0)
    check_choice("ema_init", ema_init, EMA_INITS)
    mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

    def init_fn(params):
        return AmplifySlowGradientsState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params, dtype=mu_dtype),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        if ema_init == "first_gradient":
            a = jnp.where(state.count == 0, 0, alpha)  # μ1 = 0·0 + 1·g1 = g1 exactly
        else:
            a = alpha
        mu = jax.tree.map(lambda g, m: a * m + (1 - a) * g, updates, state.mu)
        new_updates = jax.tree.map(lambda g, m: (g + lamb * m).astype(g.dtype), updates, mu)
        mu = optax.tree.cast_like(mu, state.mu)
        return new_updates, AmplifySlowGradientsState(
            count=optax.safe_increment(state.count), mu=mu
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def grokfast(
    learning_rate: optax.ScalarOrSchedule,
    alpha: jax.typing.ArrayLike = 0.98,
    lamb: jax.typing.ArrayLike = 2.0,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    weight_decay: optax.ScalarOrSchedule = 1e-4,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    ema_init: str = "first_gradient",
) -> optax.GradientTransformationExtraArgs:
    r"""Grokfast-EMA in front of AdamW: ``chain(amplify_slow_gradients(...), adamw(...))``.

    .. math::

      \tilde g_t = g_t + \lambda \mu_t, \qquad
      w_{t+1} = w_t - \eta_t \left(
        \frac{\hat m_t(\tilde g)}{\sqrt{\hat v_t(\tilde g)} + \varepsilon} + \lambda_{wd}\, w_t
      \right)

    with :math:`\mu_t` the gradient EMA of :func:`amplify_slow_gradients` and :math:`\hat m, \hat v`
    AdamW's moments of the *amplified* gradients :math:`\tilde g`. The remaining arguments and
    their defaults are :func:`optax.adamw`'s, so ``grokfast(lr, lamb=0.0)`` is
    ``optax.adamw(lr)`` step for step. For any other inner optimizer write the chain:
    ``optax.chain(amplify_slow_gradients(alpha, lamb), inner)``; it works under
    :func:`optax.inject_hyperparams` and :class:`optax.MultiSteps` as this one does.

    Args:
      learning_rate: A float or an optax schedule (>= 0 and finite when a number).
      alpha, lamb, ema_init: As in :func:`amplify_slow_gradients`.
      b1, b2, eps, eps_root, weight_decay, mask: As in :func:`optax.adamw` (``mask`` selects where
        the weight decay applies).

    Raises:
      ValueError: For concrete hyper-parameters out of range or not finite (``alpha``, ``b1``,
        ``b2`` in [0, 1); ``lamb``, ``eps``, ``eps_root``, ``learning_rate``, ``weight_decay``
        >= 0), as :func:`amplify_slow_gradients`; schedules and traced values are not checked.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` needs ``params`` (weight
      decay). ``optax.tree.get(state, "mu")`` is ambiguous here (AdamW has a ``mu`` too): the
      Grokfast state is ``state[0]``, an :class:`AmplifySlowGradientsState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from dyntheory.optim import grokfast
      >>> f = lambda w: jnp.sum((w - jnp.array([1.0, -1.0, 1.0])) ** 2)
      >>> opt = grokfast(learning_rate=0.1, alpha=0.9, lamb=2.0, weight_decay=0.0)
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
      Lee, Kang, Kim and Lee, arXiv:2405.20233 (2024), Grokfast-EMA with AdamW.
      Loshchilov and Hutter, "Decoupled Weight Decay Regularization", arXiv:1711.05101.
    """
    check_scalar_or_schedule("learning_rate", learning_rate)
    check_scalar_or_schedule("weight_decay", weight_decay)
    for name, value in (("b1", b1), ("b2", b2)):
        check_range(name, value, 0.0, 1.0)
    for name, value in (("eps", eps), ("eps_root", eps_root)):
        check_range(name, value, 0.0)
    return optax.chain(
        amplify_slow_gradients(alpha=alpha, lamb=lamb, ema_init=ema_init),
        optax.adamw(
            learning_rate,
            b1=b1,
            b2=b2,
            eps=eps,
            eps_root=eps_root,
            weight_decay=weight_decay,
            mask=mask,
        ),
    )
