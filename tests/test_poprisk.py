"""Leave-one-out population-risk signal: exact identity, unbiasedness, gate, predicted change."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dyntheory import poprisk
from tests.helpers import assert_trees_all_close


def linreg_loss(params, batch):
    pred = batch["x"] @ params["w"] + params["b"]
    return 0.5 * jnp.mean(jnp.square(pred - batch["y"]))


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    b, d = 7, 4
    params = {"w": jnp.asarray(rng.normal(size=d)), "b": jnp.asarray(0.3)}
    batch = {"x": jnp.asarray(rng.normal(size=(b, d))), "y": jnp.asarray(rng.normal(size=b))}
    return params, batch


def test_per_example_grads_match_a_loop(problem):
    params, batch = problem
    g = poprisk.per_example_grads(linreg_loss, params, batch)
    b = batch["y"].shape[0]
    assert g["w"].shape == (b, 4) and g["b"].shape == (b,)
    for i in range(b):
        one = {k: v[i : i + 1] for k, v in batch.items()}
        assert_trees_all_close(
            jax.tree.map(lambda x: x[i], g), jax.grad(linreg_loss)(params, one), rtol=1e-13
        )
    # Their mean is the batch gradient.
    assert_trees_all_close(
        jax.tree.map(lambda x: x.mean(0), g), jax.grad(linreg_loss)(params, batch), rtol=1e-12
    )


def test_loo_identity_is_exact(problem):
    """mean_i g_i · mean_{j≠i} g_j = μ² − Σ_B/(b−1), coordinate by coordinate."""
    params, batch = problem
    g = poprisk.per_example_grads(linreg_loss, params, batch)
    st = poprisk.stats(g)

    def brute(x):
        x = np.asarray(x)
        b = x.shape[0]
        others = np.stack([np.delete(x, i, axis=0).mean(axis=0) for i in range(b)])
        return np.mean(x * others, axis=0)

    assert_trees_all_close(st.loo, jax.tree.map(brute, g), rtol=1e-12, atol=1e-15)
    mean = jax.tree.map(lambda x: np.mean(np.asarray(x), axis=0), g)
    var = jax.tree.map(lambda x: np.var(np.asarray(x), axis=0) / (x.shape[0] - 1), g)
    assert_trees_all_close(st.batch_variance, var, rtol=1e-12)
    assert_trees_all_close(poprisk.batch_variance(g), var, rtol=1e-12)
    assert_trees_all_close(
        poprisk.loo_estimate(g), jax.tree.map(lambda m, v: m**2 - v, mean, var), rtol=1e-12
    )
    assert_trees_all_close(
        poprisk.hard_gate(g), jax.tree.map(lambda m, v: (m**2 > v).astype(float), mean, var)
    )
    total = sum(float(np.sum(x)) for x in jax.tree.leaves(st.loo))
    np.testing.assert_allclose(poprisk.loo_sum(g), total, rtol=1e-12)


def test_loo_is_unbiased_for_squared_population_gradient():
    """E[μ² − Σ_B/(b−1)] = (E g)² on g_i ~ N(μ_pop, diag σ²); the plain μ² is biased by σ²/b."""
    mu_pop = jnp.array([0.5, -0.2, 0.0, 1.0])
    sigma = jnp.array([1.0, 2.0, 0.5, 3.0])
    b, n_mc = 8, 40_000
    draws = mu_pop[None, None] + sigma[None, None] * jax.random.normal(
        jax.random.key(0), (n_mc, b, 4)
    )
    loo = np.asarray(jax.vmap(poprisk.loo_estimate)(draws))
    est, se = loo.mean(axis=0), loo.std(axis=0) / np.sqrt(n_mc)
    # Tolerance: 4 Monte-Carlo standard errors of the estimate's mean, per coordinate.
    print("LOO mean", est, "target", np.asarray(mu_pop) ** 2, "MC s.e.", se)
    np.testing.assert_array_less(np.abs(est - np.asarray(mu_pop) ** 2), 4 * se)
    naive = np.asarray(draws.mean(axis=1) ** 2)
    se_naive = naive.std(axis=0) / np.sqrt(n_mc)
    bias = np.asarray(sigma) ** 2 / b
    np.testing.assert_array_less(
        np.abs(naive.mean(axis=0) - np.asarray(mu_pop) ** 2 - bias), 4 * se_naive
    )


def test_predicted_risk_change(problem):
    params, batch = problem
    g = poprisk.per_example_grads(linreg_loss, params, batch)
    st = poprisk.stats(g)
    flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
    p = jax.tree.map(lambda x: 0.5 + jnp.abs(x), st.mean)
    q = st.gate
    expected = -0.1 * np.sum(flat(q) * flat(p) * flat(st.loo))
    np.testing.assert_allclose(poprisk.predicted_risk_change(g, 0.1, p, q), expected, rtol=1e-12)
    # Defaults: p = q = 1 gives −η Σ_k loo_k; scalars broadcast.
    np.testing.assert_allclose(
        poprisk.predicted_risk_change(g, 0.1), -0.1 * np.sum(flat(st.loo)), rtol=1e-12
    )
    np.testing.assert_allclose(
        poprisk.predicted_risk_change(g, 0.1, 2.0, 0.5),
        -0.1 * np.sum(flat(st.loo)),
        rtol=1e-12,
    )
    # The hard gate maximizes the predicted decrease over all gates in [0, 1].
    gated = poprisk.predicted_risk_change(g, 0.1, p, st.gate)
    for seed in range(5):
        rnd = jax.tree.map(
            lambda x, s=seed: jax.random.uniform(jax.random.key(s), x.shape, x.dtype), st.mean
        )
        assert float(gated) <= float(poprisk.predicted_risk_change(g, 0.1, p, rnd)) + 1e-15
    # Jit-able.
    np.testing.assert_allclose(
        jax.jit(poprisk.predicted_risk_change)(g, 0.1, p, q), expected, rtol=1e-12
    )


def test_bad_inputs(problem):
    params, batch = problem
    g = poprisk.per_example_grads(linreg_loss, params, batch)
    with pytest.raises(ValueError, match="at least 2"):
        poprisk.stats(jax.tree.map(lambda x: x[:1], g))
    with pytest.raises(ValueError, match="disagree on the batch size"):
        poprisk.stats({"a": jnp.ones((3, 2)), "b": jnp.ones((4,))})
    with pytest.raises(ValueError, match="leading batch axis"):
        poprisk.stats({"a": jnp.ones((3, 2)), "b": jnp.ones(())})
    with pytest.raises(ValueError, match="precond must be a scalar or a pytree"):
        poprisk.predicted_risk_change(g, 0.1, {"w": jnp.ones(4)})
    with pytest.raises(ValueError, match="gate must be a scalar or a pytree"):
        poprisk.predicted_risk_change(g, 0.1, None, {"w": jnp.ones(3), "b": jnp.ones(())})


def test_window_correlation_hand_sums_and_fisher_interval():
    p = np.array([1.0, 2.0, 0.5, 3.0, -1.0, 0.0, 2.0, 1.0, 4.0])
    a = np.array([0.5, 1.0, 1.0, 2.0, 0.0, -2.0, 1.0, 1.0, 9.0])
    got = poprisk.window_correlation(p, a, window=2)  # 4 windows, the ninth step dropped
    ps, as_ = p[:8].reshape(4, 2).sum(1), a[:8].reshape(4, 2).sum(1)
    r = np.corrcoef(ps, as_)[0, 1]
    assert got.n_windows == 4 and got.window == 2
    np.testing.assert_allclose(got.r, r, rtol=1e-12)
    half = 1.96 / np.sqrt(4 - 3)
    np.testing.assert_allclose(
        [got.ci_low, got.ci_high], np.tanh(np.arctanh(r) + np.array([-half, half])), rtol=1e-12
    )


def test_window_correlation_recovers_the_signal_share():
    # actual = predicted + independent noise, both white: every window size has
    # r = σ_p / √(σ_p² + σ_n²) = 1/√5; slow signal under white noise: r grows with the window
    rng = np.random.default_rng(0)
    t = 200_000
    p = rng.normal(size=t)
    a = p + 2.0 * rng.normal(size=t)
    for w in (1, 10, 100):
        got = poprisk.window_correlation(p, a, w)
        r0, sd = 1 / np.sqrt(5), (1 - 0.2) / np.sqrt(t // w)  # the sd of r for m windows
        assert abs(got.r - r0) < 3 * sd and got.ci_low < got.r < got.ci_high, (w, got)
    slow = np.repeat(rng.normal(size=t // 100), 100) * 0.1
    rs = [poprisk.window_correlation(slow, slow + rng.normal(size=t), w).r for w in (1, 100)]
    assert rs[0] < 0.2 < 0.6 < rs[1]


@pytest.mark.parametrize(
    "p, a, window, match",
    [
        (np.zeros(4), np.zeros(5), 1, "aligned"),
        (np.array([0.0, np.nan, 1.0]), np.zeros(3), 1, "finite"),
        (np.zeros(10), np.zeros(10), 0, "window"),
        (np.zeros(10), np.zeros(10), 6, "at least 2"),
    ],
)
def test_window_correlation_bad_input(p, a, window, match):
    with pytest.raises(ValueError, match=match):
        poprisk.window_correlation(p, a, window)
