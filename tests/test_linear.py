"""Closed forms for a linear model against actually running GD on θ (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.linalg import expm

from dyntheory import linear, spectrum
from tests.helpers import log_slope, relative_error

N, P, M = 12, 20, 7  # train examples, features (overparameterized), test examples


@pytest.fixture(scope="module")
def problem():
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    phi = jax.random.normal(keys[0], (N, P)) / np.sqrt(P)
    phi_test = jax.random.normal(keys[1], (M, P)) / np.sqrt(P)
    y = jax.random.normal(keys[2], (N,))
    theta0 = jax.random.normal(keys[3], (P,))
    return phi, phi_test, y, theta0


def _run_gd(phi, y, theta0, lr, steps):
    """Full-batch GD on L(θ) = ‖Φθ − y‖²/(2n), returning θ_t."""
    n = phi.shape[0]
    grad = jax.grad(lambda th: jnp.sum((phi @ th - y) ** 2) / (2 * n))
    step = lambda _, th: th - lr * grad(th)
    return jax.lax.fori_loop(0, steps, step, theta0)


def test_linear_ntk_is_phi_phi_t_and_the_jacobian_contraction(problem):
    phi, phi_test, _, theta0 = problem
    np.testing.assert_allclose(linear.linear_ntk(phi), phi @ phi.T, rtol=1e-14)
    jac = jax.jacobian(lambda th: phi_test @ th)(theta0)
    jac_train = jax.jacobian(lambda th: phi @ th)(theta0)
    np.testing.assert_allclose(linear.linear_ntk(phi_test, phi), jac @ jac_train.T, rtol=1e-14)
    # p outputs f(x) = W φ(x): kernel ΦΦᵀ ⊗ I_p, example-major.
    w0 = jax.random.normal(jax.random.PRNGKey(1), (3, P))
    j = jax.jacobian(lambda w: (phi @ w.T).reshape(-1))(w0).reshape(N * 3, -1)
    np.testing.assert_allclose(linear.linear_ntk(phi, num_outputs=3), j @ j.T, atol=1e-14)


@pytest.mark.parametrize("steps", [0, 1, 7, 250])
def test_gd_residual_equals_running_gd(problem, steps):
    phi, _, y, theta0 = problem
    k = linear.linear_ntk(phi)
    lr = 0.9 * float(spectrum.gd_stability_lr(k, N))
    theta_t = _run_gd(phi, y, theta0, lr, steps)
    r_t = linear.gd_residual(k, phi @ theta0 - y, lr, steps, N)
    np.testing.assert_allclose(r_t, phi @ theta_t - y, rtol=1e-10, atol=1e-12)


def test_gd_residual_moves_each_eigenmode_by_one_minus_lr_lambda_over_n(problem):
    phi, _, y, theta0 = problem
    k = linear.linear_ntk(phi)
    lam, v = spectrum.eigh(k)
    r0 = phi @ theta0 - y
    lr, steps = 0.5, 9
    r_t = linear.gd_residual(k, r0, lr, steps, N)
    np.testing.assert_allclose(v.T @ r_t, (1 - lr * lam / N) ** steps * (v.T @ r0), atol=1e-13)


def test_gd_residual_with_output_dimension_and_traced_steps(problem):
    phi, _, _, _ = problem
    k = linear.linear_ntk(phi)
    r0 = jax.random.normal(jax.random.PRNGKey(2), (N, 3))  # (n, p) with the trace kernel
    fn = jax.jit(lambda s: linear.gd_residual(k, r0, 0.3, s, N))
    want = jnp.stack([linear.gd_residual(k, r0[:, a], 0.3, 5, N) for a in range(3)], axis=1)
    np.testing.assert_allclose(fn(5), want, atol=1e-14)


def test_flow_residual_is_the_matrix_exponential(problem):
    phi, _, y, theta0 = problem
    k = linear.linear_ntk(phi)
    r0 = phi @ theta0 - y
    want = expm(-2.5 * k / N) @ r0
    np.testing.assert_allclose(linear.flow_residual(k, r0, 2.5, N), want, rtol=1e-10, atol=1e-13)


def test_flow_is_the_fine_step_gd_limit_at_first_order(problem):
    phi, _, y, theta0 = problem
    k = linear.linear_ntk(phi)
    r0 = phi @ theta0 - y
    t = 3.0
    flow = linear.flow_residual(k, r0, t, N)
    steps = [50, 100, 200, 400, 800]
    errors = [relative_error(linear.gd_residual(k, r0, t / s, s, N), flow) for s in steps]
    assert errors[-1] < 1e-3
    assert log_slope(steps, errors) == pytest.approx(-1.0, abs=0.05)


def test_gd_predictions_equal_running_gd_on_train_and_test(problem):
    phi, phi_test, y, theta0 = problem
    k, k_qs = linear.linear_ntk(phi), linear.linear_ntk(phi_test, phi)
    lr, steps = 1.3, 37
    theta_t = _run_gd(phi, y, theta0, lr, steps)
    f_train, f_test = linear.gd_predictions(
        k, k_qs, y, phi @ theta0, phi_test @ theta0, lr, steps, N
    )
    np.testing.assert_allclose(f_train, phi @ theta_t, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(f_test, phi_test @ theta_t, rtol=1e-10, atol=1e-12)


def test_gd_predictions_handle_null_modes_exactly():
    """Rank-deficient K (n > P): null modes neither move nor divide by zero."""
    phi = jax.random.normal(jax.random.PRNGKey(3), (10, 4))
    phi_test = jax.random.normal(jax.random.PRNGKey(4), (3, 4))
    y = jax.random.normal(jax.random.PRNGKey(5), (10,))
    theta0 = jnp.zeros(4)
    k = linear.linear_ntk(phi)
    lr, steps = 0.2, 60
    theta_t = _run_gd(phi, y, theta0, lr, steps)
    _, f_test = linear.gd_predictions(
        k, linear.linear_ntk(phi_test, phi), y, phi @ theta0, phi_test @ theta0, lr, steps, 10
    )
    assert np.all(np.isfinite(np.asarray(f_test)))
    np.testing.assert_allclose(f_test, phi_test @ theta_t, rtol=1e-9, atol=1e-12)


def test_min_norm_solution_is_pinv_and_the_gd_limit_from_zero(problem):
    phi, _, y, _ = problem
    theta_star = linear.min_norm_solution(phi, y)
    np.testing.assert_allclose(
        theta_star, np.linalg.pinv(np.asarray(phi)) @ np.asarray(y), rtol=1e-10
    )
    np.testing.assert_allclose(phi @ theta_star, y, atol=1e-12)  # interpolates (P > n)
    lr = 0.9 * float(spectrum.gd_stability_lr(linear.linear_ntk(phi), N))
    theta_gd = _run_gd(phi, y, jnp.zeros(P), lr, 20_000)
    np.testing.assert_allclose(theta_gd, theta_star, atol=1e-9)  # implicit bias: minimum norm


def test_gd_converges_below_and_diverges_above_two_n_over_lambda_max(problem):
    phi, _, y, theta0 = problem
    k = linear.linear_ntk(phi)
    lr_crit = float(spectrum.gd_stability_lr(k, N))
    r0 = phi @ theta0 - y
    v_top = spectrum.eigh(k)[1][:, 0]
    steps = 3000
    below = phi @ _run_gd(phi, y, theta0, 0.99 * lr_crit, steps) - y
    above = phi @ _run_gd(phi, y, theta0, 1.01 * lr_crit, steps) - y
    assert float(jnp.linalg.norm(below)) < 1e-3 * float(jnp.linalg.norm(r0))
    assert float(jnp.abs(v_top @ above)) > 1e10 * float(jnp.abs(v_top @ r0))
    # The closed form tracks both runs (below: down to round-off; above: to relative precision).
    np.testing.assert_allclose(
        linear.gd_residual(k, r0, 0.99 * lr_crit, steps, N), below, atol=1e-12
    )
    np.testing.assert_allclose(
        linear.gd_residual(k, r0, 1.01 * lr_crit, steps, N), above, rtol=1e-6
    )


def test_bad_inputs():
    with pytest.raises(ValueError, match="features must be"):
        linear.linear_ntk(jnp.ones((3, 4)), jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="square"):
        linear.gd_residual(jnp.ones((3, 4)), jnp.ones(3), 0.1, 1, 3)
    with pytest.raises(ValueError, match="does not match"):
        linear.flow_residual(jnp.eye(3), jnp.ones(4), 1.0, 3)
    with pytest.raises(ValueError, match="K_test_train"):
        linear.gd_predictions(
            jnp.eye(3), jnp.ones((2, 4)), jnp.ones(3), jnp.ones(3), jnp.ones(2), 0.1, 1, 3
        )
    with pytest.raises(ValueError, match="need Phi"):
        linear.min_norm_solution(jnp.ones((3, 4)), jnp.ones(5))
