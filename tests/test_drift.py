"""Drift vs diffusion: slopes 1 and 1/2 on a synthetic problem with a known population gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dyntheory import drift

R, BATCH, STEPS = 128, 16, 2048


def synthetic_run(known: bool, seed: int = 0):
    """Per-example gradients g_i = μ + z_i, z_i ~ N(0, I_R), μ = 2·(unit vector), already projected.

    Returns the norms of the accumulated drift and noise after each step.
    """
    mu = 2.0 * jnp.ones(R) / np.sqrt(R)
    key = jax.random.key(seed)

    def step(st, t):
        g = mu[None] + jax.random.normal(jax.random.fold_in(key, t), (BATCH, R))
        st = drift.update(st, g, population_grad=mu if known else None)
        return st, drift.norms(st)

    _, (dn, nn) = jax.lax.scan(step, drift.init(R), jnp.arange(STEPS))
    return np.arange(1, STEPS + 1), np.asarray(dn), np.asarray(nn)


@pytest.mark.parametrize("known", [True, False])
def test_slopes_one_and_one_half(known):
    t, dn, nn = synthetic_run(known)
    pick = np.unique(np.geomspace(64, STEPS, 40).astype(int)) - 1  # log-spaced, past the transient
    slopes = drift.fit_slopes(t[pick], dn[pick], nn[pick])
    print(f"μ known={known}: slopes drift {slopes.drift:.3f} noise {slopes.noise:.3f}")
    assert abs(slopes.drift - 1) < 0.1
    assert abs(slopes.noise - 0.5) < 0.1
    if known:  # the coherent part is exactly t μ
        np.testing.assert_allclose(dn, 2.0 * t, rtol=1e-12)
    # ‖noise_T‖² / (T tr(Σ)/b) ~ χ²_R / R (mean 1, s.d. √(2/R)): the fluctuation has the right size.
    np.testing.assert_allclose(nn[-1] ** 2 / (STEPS * R / BATCH), 1, atol=4 * np.sqrt(2 / R))


@pytest.mark.parametrize("b", [8, 9])
def test_half_batch_difference_has_the_batch_mean_covariance(b):
    """Unknown μ: the noise increment is mean zero with covariance Σ/b, like mean_i g_i − μ."""
    key = jax.random.key(1)
    sigma = jnp.array([1.0, 3.0])
    n_mc = 20_000

    def one(k):
        g = jnp.array([[5.0, -1.0]]) + sigma[None] * jax.random.normal(k, (b, 2))
        return drift.update(drift.init(2), g).noise

    xi = np.asarray(jax.vmap(one)(jax.random.split(key, n_mc)))
    # Monte-Carlo tolerance: 5 standard errors of the mean and of the variance.
    se_mean = np.asarray(sigma) / np.sqrt(b * n_mc)
    np.testing.assert_array_less(np.abs(xi.mean(axis=0)), 5 * se_mean)
    np.testing.assert_allclose(
        xi.var(axis=0) * b / np.asarray(sigma) ** 2, 1, atol=5 * np.sqrt(2 / n_mc)
    )


def test_basis_projection_and_pytree_input():
    rng = np.random.default_rng(0)
    b, P, r = 6, 11, 3
    g = jnp.asarray(rng.normal(size=(b, P)))
    basis = jnp.asarray(rng.normal(size=(r, P)))
    mu = jnp.asarray(rng.normal(size=P))
    st0 = drift.init(r)
    a = drift.update(st0, g, basis, population_grad=mu, lr=0.3)
    b_ = drift.update(st0, g @ basis.T, population_grad=basis @ mu, lr=0.3)
    tree = {"a": g[:, :4].reshape(b, 2, 2), "b": g[:, 4:]}  # leaves order "a", "b" = ravel order
    mu_tree = {"a": mu[:4].reshape(2, 2), "b": mu[4:]}
    c = drift.update(st0, tree, basis, population_grad=mu_tree, lr=0.3)
    for x, y in ((a, b_), (a, c)):
        np.testing.assert_allclose(x.drift, y.drift, rtol=1e-12)
        np.testing.assert_allclose(x.noise, y.noise, rtol=1e-12)
    np.testing.assert_allclose(a.drift, 0.3 * basis @ mu, rtol=1e-12)
    np.testing.assert_allclose(a.noise, 0.3 * basis @ (g.mean(axis=0) - mu), rtol=1e-12)
    assert int(a.count) == 1
    # Jit-able.
    d = jax.jit(drift.update)(st0, g, basis, mu, 0.3)
    np.testing.assert_allclose(d.noise, a.noise, rtol=1e-12)


def test_bad_inputs():
    st = drift.init(3)
    with pytest.raises(ValueError, match="project to 4 directions"):
        drift.update(st, jnp.ones((5, 4)))
    with pytest.raises(ValueError, match="basis must have shape"):
        drift.update(st, jnp.ones((5, 7)), jnp.ones((3, 6)))
    with pytest.raises(ValueError, match="at least 2 examples"):
        drift.update(st, jnp.ones((1, 3)))
    with pytest.raises(ValueError, match="population_grad"):
        drift.update(st, jnp.ones((5, 3)), population_grad=jnp.ones(4))
    with pytest.raises(ValueError, match="same leading batch axis"):
        drift.update(st, {"a": jnp.ones((5, 2)), "b": jnp.ones((4, 1))})
    with pytest.raises(ValueError, match="1-D of one length"):
        drift.fit_slopes(np.arange(1, 5), np.ones(4), np.ones(3))
    with pytest.raises(ValueError, match="at least two distinct"):
        drift.fit_slopes(np.arange(1, 5), np.ones(4), np.zeros(4))
    with pytest.raises(ValueError, match="positive"):
        drift.init(0)
