"""The augmented loss identity of an AdamW-type step is exact on a linear model (THEORY.md §10)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from dyntheory import dissipation, momentum

N, D = 10, 6


def _linear_problem(seed=0):
    rng = np.random.RandomState(seed)
    phi = rng.randn(N, D) / np.sqrt(D)
    return phi, rng.randn(N), phi @ phi.T


def _trajectory(phi, y, w, m, p, beta, decay, first, steps, bias_correction):
    """AdamW-type steps ``m ← βm + (1−β)∇L; w ← w − p ⊙ m/c_t − λ w`` on ‖Φw − y‖²/(2n):
    returns the final (w, m), the first-order dissipation Σ_t g_tᵀ (e_t/c_t + λ a_t) and the
    loss drop."""
    dissipated, loss0 = 0.0, 0.5 * np.sum((phi @ w - y) ** 2) / N
    for i in range(steps):
        t = first + i
        c = 1 - beta**t if bias_correction else 1.0
        g = (phi @ w - y) / N
        m = beta * m + (1 - beta) * phi.T @ g
        e, a = phi @ (p * m), phi @ w
        dissipated += g @ (e / c + decay * a)
        w = w - p * m / c - decay * w
    return w, m, dissipated, loss0 - 0.5 * np.sum((phi @ w - y) ** 2) / N


@pytest.mark.parametrize(
    ("beta", "decay", "bias_correction"),
    [(0.0, 0.0, False), (0.5, 0.0, False), (0.9, 0.0, True), (0.9, 0.01, True), (0.0, 0.05, False)],
)
def test_augmented_recursion_is_exact_on_a_linear_model(beta, decay, bias_correction):
    """From a mid-run state (w ≠ 0, m ≠ 0, update number 4 next) the recursion propagates
    z = (g, e, a) exactly and z₀ᵀ W z₀ is the first-order dissipation along the trajectory,
    with a diagonal preconditioner p (K = Φ diag(p) Φᵀ)."""
    phi, y, _ = _linear_problem()
    rng = np.random.RandomState(1)
    p = 0.3 * (0.5 + rng.rand(D))
    w0, m0 = rng.randn(D), 0.1 * rng.randn(D)
    first, steps = 4, 25
    traj = _trajectory(phi, y, w0, m0, p, beta, decay, first, steps, bias_correction)
    w, m, dissipated, drop = traj
    k = phi @ np.diag(p) @ phi.T
    kw = dict(steps=steps, decay=decay, first_step=first if bias_correction else None)
    st = momentum.update(momentum.init(N), k, beta, out_hessian=1 / N, **kw)
    first_order = momentum.update(
        momentum.init(N), k, beta, out_hessian=1 / N, second_order=False, **kw
    )
    g0, e0, a0 = (phi @ w0 - y) / N, phi @ (p * m0), phi @ w0
    z = st.A @ momentum.augment(g0, e0, a0)
    np.testing.assert_allclose(z[:N], (phi @ w - y) / N, atol=1e-12)  # g
    np.testing.assert_allclose(z[N : 2 * N], phi @ (p * m), atol=1e-12)  # e of the last step
    np.testing.assert_allclose(z[2 * N :], phi @ w, atol=1e-12)  # a = Φ w
    np.testing.assert_allclose(momentum.predicted_loss_drop(st, g0, e0, a0), drop, rtol=1e-10)
    got = momentum.predicted_loss_drop(first_order, g0, e0, a0)
    np.testing.assert_allclose(got, dissipated, rtol=1e-10)
    assert int(st.count) == steps


@pytest.mark.parametrize(("beta", "first"), [(0.5, 40), (0.9, 340), (0.5, None), (0.0, 1)])
@pytest.mark.parametrize("steps", [0, 1, 37, 300])
def test_doubling_equals_the_step_by_step_recursion(beta, first, steps):
    """The update runs the steps whose bias correction is not yet 1 one by one and the rest by
    doubling; both parts (β = 0.5 crosses its threshold, ≈ 55, at step 40 + 15) equal the plain
    product of the per-step operators, and splitting the steps changes nothing."""
    phi, _, _ = _linear_problem()
    k = phi @ np.diag(0.3 * np.ones(D)) @ phi.T
    kw = dict(out_hessian=1 / N, decay=0.01)
    big_a, w = np.eye(3 * N), np.zeros((3 * N, 3 * N))
    for i in range(steps):
        c = 1.0 if first is None else 1 - beta ** (first + i)
        a, s_t = (np.asarray(x) for x in momentum.operators(k, beta, c=c, **kw))
        w, big_a = w + big_a.T @ s_t @ big_a, a @ big_a
    st = momentum.update(momentum.init(N), k, beta, steps=steps, first_step=first, **kw)
    np.testing.assert_allclose(st.A, big_a, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(st.W, 0.5 * (w + w.T), rtol=1e-9, atol=1e-12)
    half = steps // 2
    st2 = momentum.update(momentum.init(N), k, beta, steps=half, first_step=first, **kw)
    nxt = None if first is None else first + half
    st2 = momentum.update(st2, k, beta, steps=steps - half, first_step=nxt, **kw)
    np.testing.assert_allclose(st2.W, st.W, rtol=1e-9, atol=1e-12)
    assert int(st2.count) == int(st.count) == steps


def test_beta_zero_reduces_to_the_dissipation_gramian():
    _, _, k = _linear_problem(1)
    kw = dict(out_hessian=1 / N, steps=9, second_order=False)
    st = momentum.update(momentum.init(N), 0.2 * k, 0.0, **kw)
    ref = dissipation.update(dissipation.init(N), k, 0.2, out_hessian=1 / N, steps=9)
    np.testing.assert_allclose(st.W[:N, :N], ref.W, atol=1e-12)
    np.testing.assert_allclose(st.A[:N, :N], ref.P, atol=1e-12)


def test_a_full_output_hessian_matches_the_scalar_one():
    _, _, k = _linear_problem(3)
    kw = dict(steps=7, decay=0.02, first_step=1)
    a = momentum.update(momentum.init(N), 0.1 * k, 0.9, out_hessian=0.5, **kw)
    b = momentum.update(momentum.init(N), 0.1 * k, 0.9, out_hessian=0.5 * np.eye(N), **kw)
    np.testing.assert_allclose(a.W, b.W, atol=1e-12)


def test_momentum_gramian_is_indefinite_and_converges_to_the_loss_drop():
    """With momentum the Gramian has negative eigenvalues; the first-order prediction of the
    real loss drop converges at first order in η (fitted log-slope ≈ 1)."""
    phi, y, k = _linear_problem(2)
    beta, horizon = 0.9, 3.0
    kw = dict(out_hessian=1 / N, second_order=False)
    st = momentum.update(momentum.init(N), 0.5 * k, beta, steps=20, **kw)
    assert float(jnp.min(jnp.linalg.eigvalsh(st.W))) < 0
    errs, lrs = [], [0.025, 0.0125, 0.00625]
    for lr in lrs:
        steps = int(round(horizon / lr))
        st = momentum.update(momentum.init(N), lr * k, beta, steps=steps, **kw)
        g0 = -y / N
        z = st.A @ momentum.augment(g0)
        actual = 0.5 * N * (g0 @ g0 - z[:N] @ z[:N])  # Φ = (n/2)‖g‖² for squared loss
        errs.append(abs(float(momentum.predicted_loss_drop(st, g0)) - actual))
    slope = np.polyfit(np.log(lrs), np.log(errs), 1)[0]
    assert 0.9 < slope < 1.1


def test_bad_inputs():
    with pytest.raises(ValueError, match="beta must lie in"):
        momentum.update(momentum.init(2), jnp.eye(2), 1.0, out_hessian=0.5, steps=1)
    with pytest.raises(ValueError, match="decay"):
        momentum.update(momentum.init(2), jnp.eye(2), 0.5, out_hessian=0.5, steps=1, decay=-0.1)
    with pytest.raises(ValueError, match="n_out must be positive"):
        momentum.init(0)
