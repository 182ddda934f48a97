"""Random-features regression: min-norm solution, kernels, closed-form dissipation, accounting."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from dyntheory import dissipation, randfeat, split
from tests.helpers import log_slope

D_IN = 6


def problem(n=12, m=9, n_features=20, seed=0, kind="relu", noise=0.3):
    """Inputs, random features, clean and noisy targets of a small regression problem."""
    k = jax.random.split(jax.random.key(seed), 5)
    x = jax.random.normal(k[0], (n, D_IN), jnp.float64)
    xq = jax.random.normal(k[1], (m, D_IN), jnp.float64)
    beta = jax.random.normal(k[2], (D_IN,), jnp.float64)
    rf = randfeat.init_features(k[3], n_features, D_IN, jnp.float64)
    y_clean = jnp.tanh(x @ beta)
    y = y_clean + noise * jax.random.normal(k[4], (n,), jnp.float64)
    return (
        randfeat.features(kind, rf, x),
        randfeat.features(kind, rf, xq),
        y_clean,
        y,
        jnp.tanh(xq @ beta),
    )


@pytest.mark.parametrize("n_features", [5, 12, 30])
@pytest.mark.parametrize("kind", randfeat.FEATURE_MAPS)
def test_min_norm_matches_pinv(n_features, kind):
    phi, phiq, _, y, _ = problem(n_features=n_features, kind=kind)
    fit = randfeat.min_norm_fit(phi, y, phiq)
    theta = np.linalg.pinv(np.asarray(phi)) @ np.asarray(y)
    np.testing.assert_allclose(fit.theta, theta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fit.test_pred, np.asarray(phiq) @ theta, rtol=1e-8, atol=1e-10)
    assert int(fit.rank) == min(12, n_features)
    eig = np.linalg.eigvalsh(np.asarray(phi @ phi.T))[::-1]
    np.testing.assert_allclose(fit.eigvals, np.where(eig > 1e-12 * eig[0], eig, 0), atol=1e-12)
    if n_features >= 12:  # interpolation
        np.testing.assert_allclose(fit.train_pred, y, atol=1e-8)


def test_feature_kernels_match_their_limits():
    """ReLU features → arc-cosine kernel, Fourier features → Gaussian kernel (Monte Carlo)."""
    x = jax.random.normal(jax.random.key(3), (5, D_IN), jnp.float64)
    rf = randfeat.init_features(jax.random.key(4), 200_000, D_IN, jnp.float64)
    phi = randfeat.features("relu", rf, x)
    nx = jnp.linalg.norm(x, axis=1)
    cos = jnp.clip((x @ x.T) / jnp.outer(nx, nx), -1, 1)
    th = jnp.arccos(cos)
    arccos = jnp.outer(nx, nx) * (jnp.sin(th) + (jnp.pi - th) * cos) / (2 * jnp.pi * D_IN)
    np.testing.assert_allclose(phi @ phi.T, arccos, atol=0.02 * float(arccos.max()))
    ell = 1.7
    phi = randfeat.features("fourier", rf, x, bandwidth=ell)
    sq = jnp.sum((x[:, None] - x[None]) ** 2, axis=-1)
    np.testing.assert_allclose(phi @ phi.T, jnp.exp(-sq / (2 * ell**2)), atol=0.01)


def test_nested_features():
    rf = randfeat.init_features(jax.random.key(0), 10, D_IN, jnp.float64)
    x = jnp.ones((3, D_IN))
    small = randfeat.features("fourier", randfeat.RandomFeatures(rf.weights[:4], rf.phases[:4]), x)
    np.testing.assert_allclose(randfeat.features("fourier", rf, x, n_features=4), small)


@pytest.mark.parametrize("n_features", [5, 30])
def test_gradient_flow_identities(n_features):
    """THEORY §3's squared-loss identities hold for the closed form at any t; G_Q matches expm."""
    phi, phiq, _, _, _ = problem(n_features=n_features)
    n = phi.shape[0]
    K, KQ = np.asarray(phi @ phi.T), np.asarray(phiq @ phi.T)
    for t in (0.0, 0.7, 25.0):
        op = randfeat.gradient_flow_operators(phi, phiq, t)
        P = scipy.linalg.expm(-t * K / n)
        np.testing.assert_allclose(op.P, P, atol=1e-10)
        np.testing.assert_allclose(op.W, n / 2 * (np.eye(n) - P.T @ P), atol=1e-10)
        np.testing.assert_allclose(op.D, n * (np.eye(n) - P), atol=1e-10)
        # G_Q = ∫ K_QS P(τ) dτ by Gauss–Legendre quadrature
        nodes, weights = np.polynomial.legendre.leggauss(60)
        taus, ws = t / 2 * (nodes + 1), t / 2 * weights
        G = sum(w * KQ @ scipy.linalg.expm(-tau * K / n) for tau, w in zip(taus, ws, strict=True))
        np.testing.assert_allclose(op.G, G, atol=1e-8 * max(1.0, np.abs(G).max()))


def test_min_norm_limit_is_half_n_projector():
    """W_∞ = (n/2)Π_range(K); −G_∞ g(0) is the min-norm test prediction; loss-drop identity."""
    phi, phiq, _, y, _ = problem(n_features=7)
    n = phi.shape[0]
    op = randfeat.gradient_flow_operators(phi, phiq)
    q, _ = np.linalg.qr(np.asarray(phi))
    proj = q @ q.T
    np.testing.assert_allclose(op.W, n / 2 * proj, atol=1e-10)
    np.testing.assert_allclose(op.P, np.eye(n) - proj, atol=1e-10)
    np.testing.assert_allclose(
        np.linalg.eigvalsh(np.asarray(op.W)) / (n / 2), [0] * 5 + [1] * 7, atol=1e-10
    )
    fit = randfeat.min_norm_fit(phi, y, phiq)
    g0 = -y / n
    np.testing.assert_allclose(-op.G @ g0, fit.test_pred, atol=1e-10)
    drop = float(jnp.sum(y**2) / (2 * n) - jnp.sum((fit.train_pred - y) ** 2) / (2 * n))
    assert float(g0 @ op.W @ g0) == pytest.approx(drop, rel=1e-10)
    assert float(jnp.abs(op.G @ (np.eye(n) - proj)).max()) < 1e-10  # test invisibility


def test_discrete_accumulator_converges_to_closed_form_at_first_order():
    """dissipation.update with the constant kernel → the gradient-flow closed form, error O(η)."""
    phi, phiq, _, _, _ = problem(n_features=7)
    n = phi.shape[0]
    K, KQ = phi @ phi.T, phiq @ phi.T
    t = 40.0
    exact = randfeat.gradient_flow_operators(phi, phiq, t)
    errs, etas = [], []
    for k in (100, 200, 400, 800):
        eta = t / k
        st = dissipation.update(
            dissipation.init(n, phiq.shape[0], jnp.float64),
            K,
            eta,
            out_hessian=1.0 / n,
            steps=k,
            k_query_train=KQ,
        )
        errs.append(max(float(jnp.abs(st.W - exact.W).max()), float(jnp.abs(st.G - exact.G).max())))
        etas.append(eta)
    assert log_slope(etas, errs) == pytest.approx(1.0, abs=0.1)
    # and run "to convergence": many steps land on W_∞ = (n/2)Π up to the O(η) factor 1/(1 − ηλ/2n)
    eta = 0.05 * n / float(jnp.linalg.eigvalsh(K)[-1])
    st = dissipation.update(
        dissipation.init(n, 0, jnp.float64), K, eta, out_hessian=1.0 / n, steps=10**9
    )
    w_inf = randfeat.gradient_flow_operators(phi).W
    np.testing.assert_allclose(st.W, w_inf, atol=0.03 * n / 2)


@pytest.mark.parametrize("n_features", [5, 12, 40])
def test_accounting_cells(n_features):
    phi, phiq, y_clean, y, yq = problem(n_features=n_features)
    n = phi.shape[0]
    acc = randfeat.min_norm_accounting(phi, phiq, y_clean, y)
    c = acc.cells
    eps = np.asarray(y - y_clean)
    q, _ = np.linalg.qr(np.asarray(phi))
    frac = np.sum((q.T @ eps) ** 2) / np.sum(eps**2)
    s = {k: float(v) for k, v in randfeat.summarize(acc, yq, y).items()}
    assert s["noise_channel_fraction_train"] == pytest.approx(frac if n_features < n else 1.0)
    assert s["invisible_test_energy"] < 1e-20
    # the four test displacements add up to the min-norm test prediction (from θ = 0)
    np.testing.assert_allclose(c.test_displacement.sum(axis=(0, 1)), acc.fit.test_pred, atol=1e-10)
    noise_pred = randfeat.min_norm_fit(phi, y - y_clean, phiq).test_pred
    assert s["noise_test_energy"] == pytest.approx(float(jnp.mean(noise_pred**2)), rel=1e-8)
    assert s["test_mse"] == pytest.approx(float(jnp.mean((acc.fit.test_pred - yq) ** 2)))
    assert 0 <= s["noise_in_channel_fraction"] <= 1
    theta_eps = np.linalg.pinv(np.asarray(phi)) @ eps
    assert float(acc.noise_param_norm2) == pytest.approx(np.sum(theta_eps**2), rel=1e-8)
    assert s["rank"] == min(n, n_features)
    # the split the accounting used: channel = range(K)
    sp = split.split(randfeat.gradient_flow_operators(phi).W, 0.5, "dissipated_fraction", n)
    assert int(sp.channel.sum()) == min(n, n_features)


def test_double_descent_peak_small():
    """Mean test error at N = n is ≥ 3× that at n/4 and 4n, and the noise energy peaks there too.

    Also runs the sweep the way the experiment does: one jitted function, ``N`` traced.
    """
    n, m, d = 40, 200, 10
    sizes = [10, 20, 40, 80, 160]
    grid = jnp.asarray(sizes)

    @jax.jit
    def sweep(key):
        k = jax.random.split(key, 5)
        x = jax.random.normal(k[0], (n, d), jnp.float64)
        xq = jax.random.normal(k[1], (m, d), jnp.float64)
        beta = jax.random.normal(k[2], (d,), jnp.float64) / math.sqrt(d)
        y_clean, yq = x @ beta, xq @ beta
        y = y_clean + math.sqrt(0.2) * jax.random.normal(k[3], (n,), jnp.float64)
        rf = randfeat.init_features(k[4], max(sizes), d, jnp.float64)

        def one(nf):
            phi = randfeat.features("relu", rf, x, nf)
            phiq = randfeat.features("relu", rf, xq, nf)
            s = randfeat.summarize(randfeat.min_norm_accounting(phi, phiq, y_clean, y), yq, y)
            return s["test_mse"], s["noise_test_energy"], s["rank"]

        return jax.lax.map(one, grid)

    err, noise, rank = jax.vmap(sweep)(jax.random.split(jax.random.key(10), 6))
    assert rank[0].tolist() == [10, 20, 40, 40, 40]
    mean = np.asarray(err).mean(0)
    assert mean[2] >= 3 * mean[0] and mean[2] >= 3 * mean[4], mean
    assert int(np.argmax(np.asarray(noise).mean(0))) == 2


def test_padded_features_give_the_same_fit():
    phi, phiq, y_clean, y, yq = problem(n_features=30)
    rf = randfeat.init_features(jax.random.key(5), 30, D_IN, jnp.float64)
    x = jax.random.normal(jax.random.key(6), (12, D_IN), jnp.float64)
    small = randfeat.features("relu", rf, x, 7)
    padded = randfeat.features("relu", rf, x, jnp.asarray(7))
    assert padded.shape == (12, 30)
    np.testing.assert_allclose(padded[:, :7], small)
    np.testing.assert_allclose(padded[:, 7:], 0.0)
    a, b = randfeat.min_norm_fit(small, y), randfeat.min_norm_fit(padded, y)
    np.testing.assert_allclose(b.theta[:7], a.theta, atol=1e-10)
    np.testing.assert_allclose(b.train_pred, a.train_pred, atol=1e-10)
    np.testing.assert_allclose(b.eigvals, a.eigvals, atol=1e-10)


def test_bad_inputs():
    rf = randfeat.init_features(jax.random.key(0), 4, D_IN, jnp.float64)
    x = jnp.ones((3, D_IN))
    with pytest.raises(ValueError, match="kind"):
        randfeat.features("tanh", rf, x)
    with pytest.raises(ValueError, match="n_features"):
        randfeat.features("relu", rf, x, n_features=5)
    with pytest.raises(ValueError, match="shape"):
        randfeat.features("relu", rf, jnp.ones((3, D_IN + 1)))
    with pytest.raises(ValueError, match="bandwidth"):
        randfeat.features("fourier", rf, x, bandwidth=0.0)
    with pytest.raises(ValueError, match=">= 1"):
        randfeat.init_features(jax.random.key(0), 0, D_IN)
    phi = randfeat.features("relu", rf, x)
    with pytest.raises(ValueError, match="y must"):
        randfeat.min_norm_fit(phi, jnp.ones(4))
    with pytest.raises(ValueError, match="phi_test"):
        randfeat.min_norm_fit(phi, jnp.ones(3), jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="non-negative"):
        randfeat.gradient_flow_operators(phi, t=-1.0)
    with pytest.raises(ValueError, match="y_clean"):
        randfeat.min_norm_accounting(phi, phi, jnp.ones(2), jnp.ones(3))
