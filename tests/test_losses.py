"""Losses and their output-space gradient/Hessian against jax.grad / jax.hessian (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dyntheory import losses
from tests.helpers import tol

N, P = 5, 3


@pytest.fixture
def data():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    u = jax.random.normal(k1, (N, P), jnp.float64)
    y = jax.random.normal(k2, (N, P), jnp.float64)
    labels = jax.random.randint(k3, (N,), 0, P)
    return u, y, labels


def test_squared_loss_value_grad_hessian(data):
    u, y, _ = data
    np.testing.assert_allclose(losses.squared_loss(u, y), np.sum((u - y) ** 2) / (2 * N))
    flat = lambda v: losses.squared_loss(v.reshape(N, P), y)
    g = losses.squared_out_grad(u, y)
    np.testing.assert_allclose(g, jax.grad(flat)(u.reshape(-1)), **tol(jnp.float64))
    hess = jax.hessian(flat)(u.reshape(-1))
    np.testing.assert_allclose(
        hess, losses.squared_out_hessian(N) * np.eye(N * P), **tol(jnp.float64)
    )
    # Φ_S = (n/2)‖g‖² (THEORY §1).
    np.testing.assert_allclose(losses.squared_loss(u, y), N / 2 * jnp.sum(g**2), rtol=1e-13)


def test_squared_loss_one_output_per_example(data):
    u, y, _ = data
    g = losses.squared_out_grad(u[:, 0], y[:, 0])
    np.testing.assert_allclose(g, (u[:, 0] - y[:, 0]) / N)


def test_softmax_cross_entropy_value_grad_hessian(data):
    u, _, labels = data
    logp = u - jax.scipy.special.logsumexp(u, axis=1, keepdims=True)
    expected = -np.mean(np.asarray(logp)[np.arange(N), np.asarray(labels)])
    np.testing.assert_allclose(losses.softmax_cross_entropy(u, labels), expected, rtol=1e-13)
    flat = lambda v: losses.softmax_cross_entropy(v.reshape(N, P), labels)
    np.testing.assert_allclose(
        losses.softmax_out_grad(u, labels), jax.grad(flat)(u.reshape(-1)), **tol(jnp.float64)
    )
    B = losses.softmax_out_hessian(u)
    np.testing.assert_allclose(B, jax.hessian(flat)(u.reshape(-1)), **tol(jnp.float64))
    # PSD, block diagonal, each block kills the all-ones vector.
    assert np.linalg.eigvalsh(np.asarray(B)).min() > -1e-15
    np.testing.assert_allclose(B @ jnp.ones(N * P), np.zeros(N * P), atol=1e-15)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = jnp.array([[1000.0, 0.0, -1000.0], [0.0, 1000.0, 999.0]], jnp.float64)
    labels = jnp.array([0, 2])
    value = losses.softmax_cross_entropy(logits, labels)
    assert np.isfinite(value)
    np.testing.assert_allclose(value, (0.0 + 1.0 + np.log1p(np.exp(-1.0))) / 2, rtol=1e-12)


def test_accuracy():
    logits = jnp.array([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0]])
    assert float(losses.accuracy(logits, jnp.array([0, 1, 1]))) == pytest.approx(2 / 3)


def test_bad_inputs(data):
    u, y, labels = data
    with pytest.raises(ValueError, match="differ in shape"):
        losses.squared_loss(u, y[:, :2])
    with pytest.raises(ValueError, match="integer"):
        losses.softmax_cross_entropy(u, labels.astype(jnp.float64))
    with pytest.raises(ValueError, match="labels must have shape"):
        losses.softmax_out_grad(u, labels[:2])
    with pytest.raises(ValueError, match=r"logits must have shape \(n, p\)"):
        losses.softmax_out_hessian(u[0])
    with pytest.raises(ValueError, match="positive"):
        losses.squared_out_hessian(0)


def test_logit_shift_free_basis_spans_range_pi():
    """Orthonormal, n (p − 1) columns, each free of logit shifts: the projector Π in closed form."""
    n, p = 3, 4
    v = np.asarray(losses.logit_shift_free_basis(n, p))
    assert v.shape == (n * p, n * (p - 1))
    np.testing.assert_allclose(v.T @ v, np.eye(n * (p - 1)), atol=1e-12)
    pi = np.kron(np.eye(n), np.eye(p) - np.ones((p, p)) / p)
    np.testing.assert_allclose(v @ v.T, pi, atol=1e-12)
    with pytest.raises(ValueError, match="p >= 2"):
        losses.logit_shift_free_basis(3, 1)
