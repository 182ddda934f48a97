"""The momentum-augmented dissipation recursion is exact on a linear model (THEORY.md §10)."""

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


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_augmented_recursion_is_exact_on_a_linear_model(beta):
    """EMA-momentum GD on f(w) = Φw with ‖Φw − y‖²/(2n): the recursion propagates (g, h) exactly
    and z₀ᵀ W z₀ is the first-order dissipation Σ_t g_tᵀ (ηK) h_t summed along the trajectory."""
    phi, y, k = _linear_problem()
    lr, steps = 0.3, 25
    w, m = np.zeros(D), np.zeros(D)
    g0 = (phi @ w - y) / N
    dissipated, g, h = 0.0, g0, np.zeros(N)
    for _ in range(steps):
        g = (phi @ w - y) / N
        m = beta * m + (1 - beta) * phi.T @ g
        h = beta * h + (1 - beta) * g
        np.testing.assert_allclose(phi.T @ h, m, atol=1e-13)  # m stays in the row space
        dissipated += g @ (lr * k) @ h
        w = w - lr * m
    st = momentum.update(momentum.init(N), lr * k, beta, out_hessian=1 / N, steps=steps)
    z = st.A @ np.concatenate([g0, np.zeros(N)])
    np.testing.assert_allclose(z[:N], (phi @ w - y) / N, atol=1e-12)  # g_k
    np.testing.assert_allclose(z[N:], h, atol=1e-12)  # h_{k−1}
    np.testing.assert_allclose(momentum.predicted_loss_drop(st, g0), dissipated, rtol=1e-10)
    assert int(st.count) == steps


def test_beta_zero_reduces_to_the_dissipation_gramian():
    _, _, k = _linear_problem(1)
    st = momentum.update(momentum.init(N), 0.2 * k, 0.0, out_hessian=1 / N, steps=9)
    ref = dissipation.update(dissipation.init(N), k, 0.2, out_hessian=1 / N, steps=9)
    np.testing.assert_allclose(st.W[:N, :N], ref.W, atol=1e-12)
    np.testing.assert_allclose(st.A[:N, :N], ref.P, atol=1e-12)


def test_momentum_gramian_is_indefinite_and_converges_to_the_loss_drop():
    """With momentum the Gramian has negative eigenvalues; the first-order prediction of the
    real loss drop converges at first order in η (fitted log-slope ≈ 1)."""
    phi, y, k = _linear_problem(2)
    beta, horizon = 0.9, 3.0
    st = momentum.update(momentum.init(N), 0.5 * k, beta, out_hessian=1 / N, steps=20)
    assert float(jnp.min(jnp.linalg.eigvalsh(st.W))) < 0
    errs, lrs = [], [0.025, 0.0125, 0.00625]
    for lr in lrs:
        steps = int(round(horizon / lr))
        st = momentum.update(momentum.init(N), lr * k, beta, out_hessian=1 / N, steps=steps)
        g0 = -y / N
        z = st.A @ np.concatenate([g0, np.zeros(N)])
        actual = 0.5 * N * (g0 @ g0 - z[:N] @ z[:N])  # Φ = (n/2)‖g‖² for squared loss
        errs.append(abs(float(momentum.predicted_loss_drop(st, g0)) - actual))
    slope = np.polyfit(np.log(lrs), np.log(errs), 1)[0]
    assert 0.9 < slope < 1.1


def test_bad_inputs():
    with pytest.raises(ValueError, match="beta must lie in"):
        momentum.update(momentum.init(2), jnp.eye(2), 1.0, out_hessian=0.5, steps=1)
    with pytest.raises(ValueError, match="n_out must be positive"):
        momentum.init(0)
