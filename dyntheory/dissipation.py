r"""Cumulative dissipation Gramian ``W_S``, propagator ``P``, displacement operators ``D``, ``G_Q``.

THEORY.md §2–4. Along a gradient-descent path the output-space gradient ``g = ∇_u Φ_S`` evolves as
``g ← (I − η B K_SS) g`` (``B`` the output Hessian of the loss, ``K_SS`` the empirical NTK), so
``g(T) = P g(s)`` with the propagator ``P``. The accumulator carries, for one start time ``s``::

    P = P_g(T, s)               propagator          g(T) = P g(s)
    W = η Σ_t P_tᵀ K_t P_t      Gramian W_S(s, T)   Φ_S(s) − Φ_S(T) ≈ g(s)ᵀ W g(s)
    D = η Σ_t K_t P_t           train displacement  U_S(T) − U_S(s) ≈ −D g(s)
    G = η Σ_t K_QS,t P_t        test transfer G_Q   U_Q(T) − U_Q(s) ≈ −G g(s)

with ``P_{t+1} = (I − η B K_t) P_t`` (THEORY §3, "Discrete time, as the code computes it"). One
call to :func:`update` advances ``steps = k`` optimizer steps with the kernel held constant; with
``M = η B K`` and ``X = I − M`` it is exactly::

    P ← X^k P,   W += Pᵀ [η Σ_{j<k} X^{jᵀ} K X^j] P,   D += [η Σ_{j<k} K X^j] P,
    G += [η Σ_{j<k} K_QS X^j] P.

Exact discrete identities (tested), for any kernel sequence: ``B D = I − P`` for any constant
``B``; for squared loss (``B = I/n``) ``(n/2)(I − PᵀP) = W − (η/2)·η Σ_t P_tᵀ K_t B K_t P_t``, so
``W`` reaches the continuous-time ``(n/2)(I − PᵀP)`` at first order in ``η``. On a linear model
``g(T) = P g(s)`` exactly, so ``Φ_S(s) − Φ_S(T) = g(s)ᵀ (n/2)(I − PᵀP) g(s)`` to round-off.

Two implementations, chosen by the type of ``out_hessian``:

* **scalar** ``B = c·I`` (squared loss, ``c = 1/n``): ``M = ηcK`` is symmetric, so every sum is a
  closed-form geometric series in ``K``'s eigenbasis. For an eigenvalue ``λ`` let ``x = ηcλ``,
  ``r = 1 − x``; then ``Σ_{j<k} r^j = (1 − r^k)/x`` and
  ``Σ_{j<k} r^{2j} = (1 − r^{2k})/(x(2 − x))``, evaluated as ``−expm1(k log|r|)`` with
  ``log|r| = log1p(−x)``, so ``r → 1`` (tiny or zero eigenvalues) keeps full relative precision;
  the limits ``x = 0`` and ``r = −1`` give ``k``. Cost: one ``eigh`` of ``K`` whatever ``k`` is.
* **matrix** ``B`` (softmax cross-entropy, or any output Hessian): ``M`` is not symmetric and
  ``B`` is singular, so there is no useful eigenbasis. The sums are computed by binary doubling of
  the triple ``(X^m, Σ_{j<m} X^j, Σ_{j<m} X^{jᵀ} K X^j)``: doubling ``m → 2m`` maps
  ``(A, S, T) → (A², S + A S, T + Aᵀ T A)`` and concatenation ``m₁ + m₂`` maps to
  ``(A₁A₂, S₁ + A₁S₂, T₁ + A₁ᵀT₂A₁)`` (powers of ``X`` commute). It is exact in exact arithmetic,
  needs ``O(log k)`` matrix products, never subtracts large terms (the similarity transform by
  ``C = B^{1/2}`` would, as ``kK − K C f(CKC) C K``), and works for any ``B``. Tested against the
  step-by-step recursion.

``steps`` may be a Python ``int`` (static: the doubling loop runs ``k.bit_length()`` times, and
``steps=1`` skips both the eigendecomposition and the doubling) or a traced integer scalar (no
recompilation when it changes; the doubling loop then runs 31 times, so ``steps < 2³¹``).
``lr`` may be traced too. Values are validated only when they are concrete.

Adaptive optimizers: the kernel that moves the outputs under a step ``Δw = −p ⊙ ∇L`` is the
preconditioned one, ``K_eff = J diag(p) Jᵀ`` (Adam: ``p = η/(√v̂ + ε)``, times the gate for PRM).
Pass ``K_eff`` as ``k_train_train`` (and ``J_Q diag(p) J_Sᵀ`` as ``k_query_train``) with ``lr=1``.
Momentum is ignored: the accumulator assumes each step moves along the current gradient only.
Building ``K_eff`` is the job of :mod:`dyntheory.ntk`; here it is just an ``(np, np)`` array.

Example::

    B = losses.squared_out_hessian(n)
    st = dissipation.init(n * p, m * p)                # P = I, W = D = G = 0
    for t in range(T):                                  # kernel refreshed every step
        st = dissipation.update(st, k_ss(t), lr, out_hessian=B, k_query_train=k_qs(t))
    A = dissipation.coupling(st)                        # ΔU_Q ≈ A ΔU_S over [0, T]

References:
  Litman & Guo, "A Theory of Generalization in Deep Learning", arXiv:2605.01172 (2026), §3 (W_S,
  Prop. 3.2) and Thm 5.1 (coupling).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dyntheory import _linalg

_TRACED_STEP_BITS = 31  # a traced `steps` must be < 2**31


class DissipationState(NamedTuple):
    """Accumulated operators for one start time ``s``; ``np`` train and ``mq`` query outputs."""

    P: jax.Array  # (np, np) propagator P_g(T, s): g(T) = P g(s)
    W: jax.Array  # (np, np) cumulative dissipation Gramian W_S(s, T), symmetric PSD
    D: jax.Array  # (np, np) train displacement: U_S(T) − U_S(s) = −D g(s)
    G: jax.Array  # (mq, np) test transfer G_Q: U_Q(T) − U_Q(s) = −G g(s)
    count: jax.Array  # () int32, optimizer steps accumulated
    time: jax.Array  # () Σ lr·steps, the gradient-flow time T − s


def init(n_train_out: int, n_query_out: int = 0, dtype=None) -> DissipationState:
    """``P = I``, ``W = D = G = 0`` for ``n_train_out`` train and ``n_query_out`` query outputs.

    ``dtype`` defaults to float64 when ``jax_enable_x64`` is on; otherwise float32, with a warning
    (long accumulations of near-singular operators lose the reservoir's small eigenvalues there).
    """
    if int(n_train_out) <= 0:
        raise ValueError(f"n_train_out must be positive, got {n_train_out}")
    if int(n_query_out) < 0:
        raise ValueError(f"n_query_out must be non-negative, got {n_query_out}")
    if dtype is None:
        if jax.config.read("jax_enable_x64"):
            dtype = jnp.float64
        else:
            warnings.warn(
                "dissipation.init: jax_enable_x64 is off, accumulating in float32",
                stacklevel=2,
            )
            dtype = jnp.float32
    n, m = int(n_train_out), int(n_query_out)
    return DissipationState(
        P=jnp.eye(n, dtype=dtype),
        W=jnp.zeros((n, n), dtype),
        D=jnp.zeros((n, n), dtype),
        G=jnp.zeros((m, n), dtype),
        count=jnp.zeros((), jnp.int32),
        time=jnp.zeros((), dtype),
    )


def update(
    state: DissipationState,
    k_train_train: jax.Array,
    lr,
    *,
    out_hessian,
    steps=1,
    k_query_train: jax.Array | None = None,
    generator: jax.Array | None = None,
) -> DissipationState:
    r"""Advance the accumulator by ``steps`` GD steps of size ``lr`` with the kernel held constant.

    Args:
      state: from :func:`init` or a previous :func:`update`.
      k_train_train: ``(np, np)`` kernel ``K_SS`` (or ``K_eff``) at the start of the interval; its
        symmetric part is used.
      lr: step size ``η`` (non-negative scalar, may be traced).
      out_hessian: output Hessian ``B``: a scalar ``c`` meaning ``c·I`` (squared loss: ``1/n``), or
        an ``(np, np)`` matrix (softmax: :func:`dyntheory.losses.softmax_out_hessian`).
      steps: number ``k ≥ 0`` of optimizer steps; Python int (static) or traced integer scalar.
      k_query_train: ``(mq, np)`` cross kernel ``K_QS``; required iff the state has query outputs.
      generator: ``(np, np)`` matrix used for ``B K`` in ``X = I − η B K`` instead of
        ``out_hessian @ K`` (then ``out_hessian`` is not used): a compression ``Qᵀ B K Q`` of the
        product, which is not the product ``(Qᵀ B Q)(Qᵀ K Q)`` of the compressed factors
        (:mod:`dyntheory.lowrank`).

    Returns:
      The new state; exact for a kernel constant over the ``k`` steps (see the module docstring).
    """
    n = state.P.shape[0]
    m = state.G.shape[0]
    dtype = state.P.dtype
    K = _check_square(k_train_train, n, "k_train_train")
    if m > 0 and k_query_train is None:
        raise ValueError(
            f"the state tracks {m} query outputs: pass k_query_train of shape ({m}, {n})"
        )
    if k_query_train is not None and jnp.shape(k_query_train) != (m, n):
        raise ValueError(
            f"k_query_train has shape {jnp.shape(k_query_train)}, the state expects ({m}, {n})"
        )
    if jnp.ndim(lr) != 0:
        raise ValueError(f"lr must be a scalar, got shape {jnp.shape(lr)}")
    lr_value = _concrete(lr)
    if lr_value is not None and not lr_value >= 0:
        raise ValueError(f"lr must be non-negative, got {lr_value}")
    static_k = _check_steps(steps)

    K = K.astype(dtype)
    K = 0.5 * (K + K.T)
    KQ = jnp.zeros((0, n), dtype) if k_query_train is None else jnp.asarray(k_query_train, dtype)
    eta = jnp.asarray(lr, dtype)
    scalar_b = jnp.ndim(out_hessian) == 0 and generator is None
    if generator is not None:
        BK = _check_square(generator, n, "generator").astype(dtype)
    elif scalar_b:
        c = jnp.asarray(out_hessian, dtype)
        c_value = _concrete(out_hessian)
        if c_value is not None and not c_value >= 0:
            raise ValueError(f"a scalar out_hessian must be non-negative, got {c_value}")
    else:
        B = _check_square(out_hessian, n, "out_hessian").astype(dtype)
        BK = B @ K

    P = state.P
    if static_k == 1:  # one step: no eigendecomposition, no doubling
        KP = K @ P
        W_inc = eta * (P.T @ KP)
        D_inc, G_inc = eta * KP, eta * (KQ @ P)
        P_new = P - eta * (c * KP if scalar_b else BK @ P)
    elif scalar_b:
        lam, V = jnp.linalg.eigh(K)
        s1, s2, rk = _geometric_sums(eta * c * lam, steps, dtype)
        VtP = V.T @ P
        P_new = V @ (rk[:, None] * VtP)
        D_inc = V @ ((eta * lam * s1)[:, None] * VtP)
        W_inc = VtP.T @ ((eta * lam * s2)[:, None] * VtP)
        G_inc = eta * (KQ @ (V @ (s1[:, None] * VtP)))
    else:
        X = jnp.eye(n, dtype=dtype) - eta * BK
        nbits = _TRACED_STEP_BITS if static_k is None else static_k.bit_length()
        A, S, T = _doubling_sums(X, K, steps, nbits)
        SP = S @ P
        P_new = A @ P
        D_inc, G_inc = eta * (K @ SP), eta * (KQ @ SP)
        W_inc = eta * (P.T @ (T @ P))

    return DissipationState(
        P=P_new,
        W=state.W + 0.5 * (W_inc + W_inc.T),
        D=state.D + D_inc,
        G=state.G + G_inc,
        count=state.count + jnp.asarray(steps, jnp.int32),
        time=state.time + eta * jnp.asarray(steps, dtype),
    )


def coupling(state: DissipationState, rcond: float | None = None) -> jax.Array:
    r"""The train→test coupling ``A = G_Q D†`` (THEORY §4, paper Thm 5.1), shape ``(mq, np)``.

    Along the realized path ``U_Q(T) − U_Q(s) ≈ A (U_S(T) − U_S(s))``. ``D†`` is the pseudo-inverse
    with singular values below ``rcond · σ_max(D)`` dropped; the default ``rcond = √eps`` of the
    state's dtype (1.5e-8 in float64, 3.5e-4 in float32). Those directions are numerically in
    ``ker D``, which for squared loss equals ``ker W_S ⊆ ker G_Q`` (test-invisible), so dropping
    them loses nothing, while keeping them would amplify the O(η) discretization error of ``U_S``
    by ``1/σ``.
    """
    if rcond is None:
        rcond = float(np.sqrt(np.finfo(state.D.dtype).eps))
    return state.G @ _linalg.pinv(state.D, rcond)


def _geometric_sums(x: jax.Array, k, dtype) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(Σ_{j<k} r^j, Σ_{j<k} r^{2j}, r^k)`` elementwise for ``r = 1 − x``, stable as ``r → 1``."""
    k_int = jnp.asarray(k)
    kf = k_int.astype(dtype)
    below = x < 1  # r > 0
    # log|r|: log1p(−x) for r > 0 keeps the precision of a tiny x; log(x − 1) = log1p(x − 2) else.
    log_abs_r = jnp.where(
        below, jnp.log1p(-jnp.where(below, x, 0)), jnp.log1p(jnp.where(below, 0, x) - 2)
    )
    k_log = jnp.where(k_int == 0, 0, kf * log_abs_r)  # avoids 0·(−inf) at r = 0
    sign_k = jnp.where(~below & (k_int % 2 == 1), -1, 1).astype(dtype)
    rk = sign_k * jnp.exp(k_log)
    one_minus_rk = jnp.where(below, -jnp.expm1(k_log), 1 - rk)
    s1 = jnp.where(x == 0, kf, one_minus_rk / jnp.where(x == 0, 1, x))
    den2 = x * (2 - x)  # 1 − r²
    s2 = jnp.where(den2 == 0, kf, -jnp.expm1(2 * k_log) / jnp.where(den2 == 0, 1, den2))
    return s1, s2, rk


def _doubling_sums(X: jax.Array, K: jax.Array, k, nbits: int):
    """``(X^k, Σ_{j<k} X^j, Σ_{j<k} X^{jᵀ} K X^j)`` by binary doubling over ``nbits`` bits."""
    n = X.shape[0]
    eye, zero = jnp.eye(n, dtype=X.dtype), jnp.zeros_like(X)
    k = jnp.asarray(k)

    def body(i, carry):
        (A, S, T), (Ap, Sp, Tp) = carry  # sums over the low bits of k; the block of 2^i steps
        take = (k >> i) & 1 == 1
        # Append the 2^i block after the k_low steps already summed: needs A = X^{k_low}.
        S = jnp.where(take, S + A @ Sp, S)
        T = jnp.where(take, T + A.T @ Tp @ A, T)
        A = jnp.where(take, A @ Ap, A)
        return (A, S, T), (Ap @ Ap, Sp + Ap @ Sp, Tp + Ap.T @ Tp @ Ap)

    init_carry = ((eye, zero, zero), (X, eye, K))
    (A, S, T), _ = jax.lax.fori_loop(0, nbits, body, init_carry)
    return A, S, T


def _check_square(a, n: int, name: str) -> jax.Array:
    shape = jnp.shape(a)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {shape}")
    if shape[0] != n:
        raise ValueError(f"{name} has shape {shape}, the state has {n} train outputs")
    return jnp.asarray(a)


def _check_steps(steps) -> int | None:
    """The static step count, or None when it is traced; raises on a bad value."""
    if isinstance(steps, bool):
        raise ValueError("steps must be an integer, got a bool")
    if isinstance(steps, int | np.integer):
        if steps < 0:
            raise ValueError(f"steps must be non-negative, got {steps}")
        return int(steps)
    if jnp.ndim(steps) != 0 or not jnp.issubdtype(jnp.result_type(steps), jnp.integer):
        raise ValueError(
            f"steps must be an integer scalar, got shape {jnp.shape(steps)} "
            f"dtype {jnp.result_type(steps)}"
        )
    value = _concrete(steps)
    if value is not None and value < 0:
        raise ValueError(f"steps must be non-negative, got {int(value)}")
    return None


def _concrete(x) -> float | None:
    """The value of a scalar if it is known at trace time, else None."""
    if isinstance(x, jax.core.Tracer):
        return None
    return float(np.asarray(x))
