"""PRM numerics: paper Algorithm 1 against AdamW, hand-computed steps and closed forms."""

from __future__ import annotations

import doctest
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dyntheory.optim import (
    finite_dataset_alpha,
    hard_gate,
    prm,
    scale_by_population_risk,
    snr_gate,
    soft_gate,
)
from tests.helpers import assert_trees_all_close, assert_trees_all_equal, tol

# The package re-exports the function ``prm``, which shadows the module of the same name.
prm_module = importlib.import_module("dyntheory.optim.prm")
masks_module = importlib.import_module("dyntheory.optim.masks")
F32 = tol(jnp.float32)


def _problem(key, dtype=jnp.float32):
    """A small least-squares regression (two leaves) and a minibatch loss."""
    kw, kx, ky = jax.random.split(key, 3)
    params = {
        "w": jax.random.normal(kw, (5, 3), dtype),
        "b": jnp.full((3,), 0.1, dtype),
    }
    x = jax.random.normal(kx, (64, 5), dtype)
    y = jax.random.normal(ky, (64, 3), dtype)

    def loss(p, idx):
        pred = x[idx] @ p["w"] + p["b"][None, :]
        return jnp.mean((pred - y[idx]) ** 2)

    return params, loss


def _run(opt, params, loss, steps, key):
    """Train ``steps`` minibatch steps; return the params after every step."""

    @jax.jit
    def step(p, state, k):
        idx = jax.random.choice(k, 64, (16,), replace=False)
        updates, state = opt.update(jax.grad(loss)(p, idx), state, p)
        return optax.apply_updates(p, updates), state

    state = opt.init(params)
    history = []
    for t in range(steps):
        params, state = step(params, state, jax.random.fold_in(key, t))
        history.append(params)
    return history, state


HYPER = dict(learning_rate=3e-2, b1=0.8, b2=0.95, eps=1e-7, weight_decay=0.1)


@pytest.mark.parametrize(
    "gate_kwargs",
    [
        dict(mask="hard", alpha=0.0),
        dict(mask="hard", alpha=0.0, reduction="per_tensor"),
        dict(mask="snr", warmup_steps=25),
        dict(mask="soft", alpha=1.0, warmup_steps=1000, reduction="per_tensor"),
    ],
    ids=["hard-alpha0", "hard-alpha0-per_tensor", "snr-warmup", "soft-warmup-per_tensor"],
)
@pytest.mark.parametrize("gate_weight_decay", [False, True], ids=["wd", "gated_wd"])
def test_open_gate_equals_adamw_step_for_step(gate_kwargs, gate_weight_decay):
    key = jax.random.key(0)
    params, loss = _problem(key)
    steps = 25
    opt = prm(**HYPER, **gate_kwargs, gate_stats=True, gate_weight_decay=gate_weight_decay)
    ours, state = _run(opt, params, loss, steps, key)
    ref, _ = _run(optax.adamw(**HYPER), params, loss, steps, key)
    for t, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert_trees_all_close(a, b, **F32, err_msg=f"step {t + 1}")
    assert float(optax.tree.get(state, "gate_mean")) == 1.0
    assert float(optax.tree.get(state, "gate_open_fraction")) == 1.0


@pytest.mark.parametrize("gate_weight_decay", [False, True], ids=["wd", "gated_wd"])
@pytest.mark.parametrize("wd_mask", [{"w": True, "b": False}, lambda p: {"w": False, "b": True}])
def test_open_gate_equals_adamw_with_schedules_and_weight_decay_mask(wd_mask, gate_weight_decay):
    key = jax.random.key(1)
    params, loss = _problem(key)
    lr = optax.cosine_decay_schedule(5e-2, 20)
    wd = optax.linear_schedule(0.2, 0.05, 20)
    hyper = dict(HYPER, learning_rate=lr, weight_decay=wd)
    opt = prm(
        **hyper,
        mask="hard",
        alpha=0.0,
        weight_decay_mask=wd_mask,
        gate_weight_decay=gate_weight_decay,
    )
    ours, _ = _run(opt, params, loss, 20, key)
    ref, _ = _run(optax.adamw(**hyper, mask=wd_mask), params, loss, 20, key)
    for t, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert_trees_all_close(a, b, **F32, err_msg=f"step {t + 1}")


# Hand-computed two-step example, float64, b1 = b2 = rho = 1/2, eps = 0, lr = 1, no weight decay.
# Two coordinates, g1 = [1, 2] then g2 = [1/2, 3]. Bias corrections: 1 − 2^-1 = 1/2, 1 − 2^-2 = 3/4.
#   t = 1: s = ½·0 + ½(g − 0)² = [1/2, 2]     m = ½g = [1/2, 1]     v = ½g² = [1/2, 2]
#          ŝ = [1, 4]   m̂ = [1, 2]   m̂² = [1, 4]   v̂ = [1, 4]   Adam direction m̂/√v̂ = [1, 1]
#   t = 2: s = ½[1/2, 2] + ½([1/2, 3] − [1/2, 1])² = [1/4, 1 + 2] = [1/4, 3]   (m BEFORE update)
#          m = ½[1/2, 1] + ½[1/2, 3] = [1/2, 2]      v = ½[1/2, 2] + ½[1/4, 9] = [3/8, 11/2]
#          ŝ = [1/3, 4]   m̂ = [2/3, 8/3]   m̂² = [4/9, 64/9]   v̂ = [1/2, 22/3]
#          direction = [(2/3)/√(1/2), (8/3)/√(22/3)]
# Gates (λ = softness, α = alpha), per coordinate:
#   snr λα = 1:   t=1 q = 1/(1+1) = 4/(4+4) = 1/2;   t=2 q = [4/(4+3), 64/(64+36)] = [4/7, 16/25]
#   snr λα = 1/2 (λ = 2, α = 1/4): t=1 q = 1/(1+1/2) = 2/3;  t=2 q = [4/(4+3/2), 64/(64+18)]
#                                                                 = [8/11, 32/41]
#   soft λ = α = 1: t=1 δ = 0, q = 0;  t=2 δ = [1/9, 28/9], q = [1/(1+3), 28/(28+36)] = [1/4, 7/16]
#   soft λ = 2, α = 1/2: t=1 δ = [1/2, 2], q = [(1/2)/(1/2+2), 2/(2+8)] = [1/5, 1/5]
#                        t=2 δ = [4/9 − 3/18, 64/9 − 2] = [5/18, 46/9],
#                            q = [(5/18)/(5/18 + 2/3), (46/9)/(46/9 + 8)] = [5/17, 23/59]
#   hard α = 3/2: t=1 1 > 3/2? 4 > 6? q = [0, 0];  t=2 4/9 > 1/2? 64/9 > 6? q = [0, 1]
# per_tensor uses the leaf means: t=1 mean m̂² = mean ŝ = 5/2; t=2 mean m̂² = 34/9, mean ŝ = 39/18.
#   snr λα = 1: t=1 q = 1/2;  t=2 q = 34/(34 + 39/2) = 68/107
#   soft λ = α = 1: t=1 q = 0;  t=2 δ = 34/9 − 39/18 = 29/18, q = 29/(29 + 39) = 29/68
#   hard α = 3/2: t=1 5/2 > 15/4? q = 0;  t=2 34/9 > 39/12? (136/36 > 117/36) q = 1
DIRECTION_1 = np.array([1.0, 1.0])
DIRECTION_2 = np.array([(2 / 3) / np.sqrt(1 / 2), (8 / 3) / np.sqrt(22 / 3)])
HAND = [
    (dict(mask="snr"), "per_parameter", [1 / 2, 1 / 2], [4 / 7, 16 / 25]),
    (
        dict(mask="snr", softness=2.0, alpha=0.25),
        "per_parameter",
        [2 / 3, 2 / 3],
        [8 / 11, 32 / 41],
    ),
    (dict(mask="soft"), "per_parameter", [0, 0], [1 / 4, 7 / 16]),
    (
        dict(mask="soft", softness=2.0, alpha=0.5),
        "per_parameter",
        [1 / 5, 1 / 5],
        [5 / 17, 23 / 59],
    ),
    (dict(mask="hard", alpha=1.5), "per_parameter", [0, 0], [0, 1]),
    (dict(mask="snr"), "per_tensor", [1 / 2, 1 / 2], [68 / 107, 68 / 107]),
    (dict(mask="soft"), "per_tensor", [0, 0], [29 / 68, 29 / 68]),
    (dict(mask="hard", alpha=1.5), "per_tensor", [0, 0], [1, 1]),
]


HAND_IDS = [
    "snr",
    "snr-softness2-alpha0.25",
    "soft",
    "soft-softness2-alpha0.5",
    "hard-alpha1.5",
    "snr-per_tensor",
    "soft-per_tensor",
    "hard-alpha1.5-per_tensor",
]


@pytest.mark.parametrize(("kwargs", "reduction", "q1", "q2"), HAND, ids=HAND_IDS)
def test_two_steps_by_hand(kwargs, reduction, q1, q2):
    opt = prm(
        1.0, b1=0.5, b2=0.5, rho=0.5, eps=0.0, weight_decay=0.0, reduction=reduction,
        gate_stats=True, **kwargs
    )  # fmt: skip
    params = jnp.zeros(2, jnp.float64)
    state = opt.init(params)
    for g, q, direction in (([1.0, 2.0], q1, DIRECTION_1), ([0.5, 3.0], q2, DIRECTION_2)):
        updates, state = opt.update(jnp.array(g, jnp.float64), state, params)
        np.testing.assert_allclose(updates, -np.array(q) * direction, rtol=1e-14, atol=1e-15)
        inner = state[0]
        # masks.gate rebuilds q from the state (as dyntheory.probes does for the effective NTK).
        t = int(inner.count)
        rebuilt = masks_module.gate(
            (inner.mu / (1 - 0.5**t)) ** 2,
            inner.s / (1 - 0.5**t),
            reduction=reduction,
            eps=0.0,
            **{"softness": 1.0, "alpha": 1.0, **kwargs},
        )
        np.testing.assert_allclose(rebuilt, q, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(inner.gate_mean, np.mean(q), rtol=1e-6)
        np.testing.assert_allclose(inner.gate_open_fraction, np.mean(np.array(q) > 0.5))
    np.testing.assert_allclose(inner.mu, [1 / 2, 2], rtol=1e-15)
    np.testing.assert_allclose(inner.nu, [3 / 8, 11 / 2], rtol=1e-15)
    np.testing.assert_allclose(inner.s, [1 / 4, 3], rtol=1e-15)
    assert int(inner.count) == 2


def test_batch_variance_replaces_s_hat():
    # Same numbers as the hand example, coordinate 0: m̂² = 1 then 4/9. With variance="batch" the
    # gate uses the given ŝ: t=1 ŝ = 1/4 → q = 1/(1 + 1/4) = 4/5; t=2 ŝ = 1/3 → q = 4/(4 + 3) = 4/7.
    opt = scale_by_population_risk(b1=0.5, b2=0.5, rho=0.5, eps=0.0, variance="batch")
    state = opt.init(jnp.zeros(1, jnp.float64))
    for g, bv, q, direction in ((1.0, 1 / 4, 4 / 5, 1.0), (0.5, 1 / 3, 4 / 7, DIRECTION_2[0])):
        bv = jnp.array([bv], jnp.float64)
        updates, state = opt.update(jnp.array([g], jnp.float64), state, batch_variance=bv)
        np.testing.assert_allclose(updates, [q * direction], rtol=1e-14)
        np.testing.assert_array_equal(state.s, bv)


def test_bias_correction_at_t1():
    # At t = 1: m = (1 − β1) g, v = (1 − β2) g², s = (1 − ρ) g², so m̂ = g, v̂ = ŝ = g² and an open
    # gate moves every coordinate by −lr·g/(|g| + ε) whatever the scale of g.
    g = jnp.array([3e-4, -2.0, 5e2, -7e-3], jnp.float64)
    params = jnp.zeros_like(g)
    opt = prm(1.0, eps=0.0, weight_decay=0.0, mask="hard", alpha=0.0)
    state = opt.init(params)
    updates, state = opt.update(g, state, params)
    np.testing.assert_allclose(updates, -jnp.sign(g), rtol=1e-12)
    inner = state[0]
    np.testing.assert_allclose(inner.mu, 0.1 * g, rtol=1e-12)
    np.testing.assert_allclose(inner.nu, 1e-3 * g**2, rtol=1e-12)
    np.testing.assert_allclose(inner.s, 1e-2 * g**2, rtol=1e-12)
    assert int(inner.count) == 1


def test_snr_is_one_half_on_the_boundary():
    x = jnp.asarray(np.logspace(-20, 20, 41), jnp.float32)
    q = snr_gate(x, x, alpha=1.0, softness=1.0, eps=0.0)
    np.testing.assert_array_equal(q, 0.5)
    # With the default eps the boundary value moves by eps/(2 m̂²) only.
    y = jnp.asarray(np.logspace(-3, 3, 13), jnp.float64)
    np.testing.assert_allclose(
        snr_gate(y, y, alpha=1.0, softness=1.0, eps=1e-8), 0.5, rtol=1e-2 / 2
    )
    # End to end: at t = 1, m̂² = ŝ = g² for any g (float64: up to round-off of the corrections).
    g = jnp.asarray(np.random.default_rng(0).standard_normal(100) * np.logspace(-6, 3, 100))
    opt = scale_by_population_risk(eps=0.0, mask="snr", gate_stats=True)
    updates, state = opt.update(g, opt.init(g))
    np.testing.assert_allclose(updates, 0.5 * jnp.sign(g), rtol=1e-12)
    np.testing.assert_allclose(state.gate_mean, 0.5, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_gate_in_unit_interval(dtype):
    rng = np.random.default_rng(1)
    n = 20000
    m2 = (rng.standard_normal(n) * 10.0 ** rng.uniform(-10, 10, n)) ** 2
    s = (rng.standard_normal(n) * 10.0 ** rng.uniform(-10, 10, n)) ** 2
    m2[:100] = 0.0
    s[100:200] = 0.0
    m2, s = jnp.asarray(m2, dtype), jnp.asarray(s, dtype)
    for alpha, softness in ((0.0, 1.0), (1.0, 1.0), (0.3, 10.0), (1e30, 0.3), (5.0, 0.0)):
        for fn in (hard_gate, soft_gate, snr_gate):
            q = np.asarray(fn(m2, s, alpha=alpha, softness=softness, eps=1e-8))
            assert q.dtype == dtype
            assert np.all((q >= 0) & (q <= 1)), (fn.__name__, alpha, softness)
        q = masks_module.gate(
            m2, s, mask="snr", reduction="per_tensor", alpha=alpha, softness=softness, eps=1e-8
        )
        assert q.shape == m2.shape and bool(jnp.all((q >= 0) & (q <= 1)))


def test_gate_statistics_in_unit_interval_on_random_streams():
    rng = np.random.default_rng(2)
    for mask in ("snr", "soft", "hard"):
        opt = scale_by_population_risk(mask=mask, gate_stats=True)
        state = opt.init({"a": jnp.zeros((4, 5)), "b": jnp.zeros(7)})
        update = jax.jit(opt.update)
        for _ in range(20):
            g = {
                "a": jnp.asarray(rng.standard_normal((4, 5)) + 0.5, jnp.float32),
                "b": jnp.asarray(rng.standard_normal(7) * 1e-3, jnp.float32),
            }
            _, state = update(g, state)
            for name in ("gate_mean", "gate_open_fraction"):
                value = float(optax.tree.get(state, name))
                assert 0.0 <= value <= 1.0, (mask, name, value)


def test_s_is_centred_on_m_before_its_update():
    # For i.i.d. gradients g ~ N(μ, σ²), m_{t−1} is independent of g_t with variance
    # σ²(1 − β1)/(1 + β1), so E[(g_t − m_{t−1})²] = σ² · 2/(1 + β1). Centring on the updated m_t
    # would give β1² times that instead (0.853σ² rather than 1.053σ² at β1 = 0.9).
    b1, sigma = 0.9, 0.5
    opt = scale_by_population_risk(b1=b1, rho=0.99)
    g = 1.0 + sigma * jax.random.normal(jax.random.key(3), (3000, 2000), jnp.float32)

    def body(state, g_t):
        _, state = opt.update(g_t, state)
        return state, None

    state, _ = jax.lax.scan(body, opt.init(g[0]), g)
    s_hat = state.s / (1 - 0.99 ** int(state.count))
    np.testing.assert_allclose(jnp.mean(s_hat), sigma**2 * 2 / (1 + b1), rtol=0.02)


def test_both_centrings_of_s_agree():
    # A concrete b1 >= 1/2 centres s through (g − m_t)/β1; a traced b1 (inject_hyperparams) uses
    # g − m_{t−1} literally. Same algorithm, so same trajectory up to float32 rounding.
    params = {"a": jnp.zeros((6, 5)), "b": jnp.zeros(4)}
    rng = np.random.default_rng(5)
    grads = [
        jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape) + 0.2, x.dtype), params)
        for _ in range(30)
    ]
    literal = optax.inject_hyperparams(scale_by_population_risk)(b1=0.9)
    rewritten = scale_by_population_risk(b1=0.9)
    s_lit, s_rew = literal.init(params), rewritten.init(params)
    update_lit, update_rew = jax.jit(literal.update), jax.jit(rewritten.update)
    for g in grads:
        u_lit, s_lit = update_lit(g, s_lit)
        u_rew, s_rew = update_rew(g, s_rew)
        assert_trees_all_close(u_lit, u_rew, rtol=1e-5, atol=1e-6)
    assert_trees_all_close(s_lit.inner_state.s, s_rew.s, rtol=1e-5, atol=1e-7)


def test_no_momentum_centres_s_on_the_previous_gradient():
    # b1 = 0: m_t = g_t, so s_t = ρ s_{t−1} + (1 − ρ)(g_t − g_{t−1})². With ρ = 1/2 and
    # g = 1, 3, 2: s = 1/2, 1/4 + 2 = 9/4, 9/8 + 1/2 = 13/8.
    opt = scale_by_population_risk(b1=0.0, rho=0.5)
    state = opt.init(jnp.zeros(1, jnp.float64))
    for g in (1.0, 3.0, 2.0):
        _, state = opt.update(jnp.array([g], jnp.float64), state)
    np.testing.assert_allclose(state.s, [13 / 8], rtol=1e-15)
    np.testing.assert_allclose(state.mu, [2.0], rtol=1e-15)


def test_gate_statistics_count_coordinates_equally():
    # per_tensor, hard, α = 1/2 at t = 1 (m̂² = ŝ = g², so q = 1[g² > g²/2] = 1 unless g = 0):
    # leaf "open" (12 coordinates, g ≠ 0) has q = 1, leaf "shut" (4 coordinates, g = 0) has q = 0.
    params = {"open": jnp.zeros((3, 4)), "shut": jnp.zeros(4)}
    g = {"open": jnp.ones((3, 4)), "shut": jnp.zeros(4)}
    opt = scale_by_population_risk(mask="hard", alpha=0.5, reduction="per_tensor", gate_stats=True)
    _, state = opt.update(g, opt.init(params))
    assert float(state.gate_mean) == 12 / 16
    assert float(state.gate_open_fraction) == 12 / 16


@pytest.mark.parametrize("reduction", ["per_parameter", "per_tensor"])
def test_gate_stats_do_not_change_the_updates(reduction):
    keys = jax.random.split(jax.random.key(3), 4)
    params = {"w": jax.random.normal(keys[0], (5, 3)), "b": jnp.zeros(3)}
    with_stats = prm(1e-2, reduction=reduction, gate_stats=True)
    without = prm(1e-2, reduction=reduction)  # the default
    p1, s1, p2, s2 = params, with_stats.init(params), params, without.init(params)
    assert optax.tree.get(s2, "gate_mean") is None
    for k in keys[1:]:
        g = jax.tree.map(lambda x: jax.random.normal(k, x.shape), params)
        u1, s1 = with_stats.update(g, s1, p1)
        u2, s2 = without.update(g, s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
        assert_trees_all_close(p2, p1, rtol=0, atol=0)
    assert 0 < float(optax.tree.get(s1, "gate_mean")) < 1
    assert optax.tree.get(s2, "gate_mean") is None
    assert optax.tree.get(s2, "gate_open_fraction") is None


def test_low_precision_params_keep_their_dtypes():
    params = {"w": jnp.ones((4, 3), jnp.bfloat16), "b": jnp.zeros(3, jnp.float32)}
    opt = prm(1e-2, gate_stats=True)
    state = opt.init(params)
    for t in range(3):
        g = jax.tree.map(lambda p: (p + 0.1 * (t + 1)).astype(p.dtype), params)
        updates, state = opt.update(g, state, params)
    assert updates["w"].dtype == jnp.bfloat16 and updates["b"].dtype == jnp.float32
    inner = state[0]
    for field in (inner.mu, inner.nu, inner.s):
        assert field["w"].dtype == jnp.bfloat16 and field["b"].dtype == jnp.float32
    assert inner.gate_mean.dtype == jnp.float32


@pytest.mark.parametrize(
    ("mask", "reduction"),
    [
        ("snr", "per_parameter"),
        ("soft", "per_parameter"),
        ("hard", "per_parameter"),
        ("snr", "per_tensor"),
    ],
)
def test_huge_alpha_freezes_all_but_weight_decay(mask, reduction):
    key = jax.random.key(4)
    params, loss = _problem(key)
    lr, wd, steps = 0.05, 0.1, 20
    opt = prm(lr, weight_decay=wd, mask=mask, alpha=1e30, reduction=reduction, gate_stats=True)
    history, state = _run(opt, params, loss, steps, key)
    decayed = jax.tree.map(lambda p: p * (1 - lr * wd) ** steps, params)
    assert_trees_all_close(history[-1], decayed, rtol=1e-5, atol=1e-7)
    assert float(optax.tree.get(state, "gate_open_fraction")) == 0.0


def test_unknown_names_and_missing_batch_variance_raise_clearly():
    with pytest.raises(ValueError, match="mask must be one of 'snr', 'soft', 'hard'; got 'snrr'"):
        prm(1e-3, mask="snrr")
    with pytest.raises(ValueError, match="reduction must be one of 'per_parameter', 'per_tensor'"):
        scale_by_population_risk(reduction="per_layer")
    with pytest.raises(ValueError, match="variance must be one of 'ema', 'batch'"):
        scale_by_population_risk(variance="exact")
    with pytest.raises(ValueError, match=r"rho must be \[0.0, 1.0\)"):
        scale_by_population_risk(rho=1.0)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        scale_by_population_risk(alpha=-1.0)

    params = {"w": jnp.ones(3)}
    opt = prm(1e-3, variance="batch")
    state = opt.init(params)
    with pytest.raises(ValueError, match=r'variance="batch" needs update\(\.\.\., batch_variance='):
        opt.update(params, state, params)
    with pytest.raises(ValueError, match="batch_variance must have the structure"):
        opt.update(params, state, params, batch_variance={"v": jnp.ones(3)})
    ema = prm(1e-3)
    with pytest.raises(ValueError, match='variance="ema" would ignore it'):
        ema.update(params, ema.init(params), params, batch_variance=params)


def test_finite_dataset_alpha():
    assert finite_dataset_alpha(512, 2352) == pytest.approx(512 / 1840)
    assert finite_dataset_alpha(1, 2) == 1.0
    assert finite_dataset_alpha(np.int64(10), 1010) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="n_train must exceed batch_size"):
        finite_dataset_alpha(100, 100)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        finite_dataset_alpha(0, 100)
    with pytest.raises(TypeError):
        finite_dataset_alpha(1.5, 100)


def test_docstring_examples_run():
    result = doctest.testmod(prm_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 10, result


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(alpha=np.float32(-1)), r"alpha must be >= 0.0; got np.float32\(-1.0\)"),
        (dict(alpha=float("nan")), "alpha must be a finite number; got nan"),
        (dict(alpha=np.float64("inf")), "alpha must be a finite number"),
        (dict(softness=float("nan")), "softness must be a finite number"),
        (dict(softness=jnp.float32(-0.5)), "softness must be >= 0.0"),
        (dict(eps=float("inf")), "eps must be a finite number; got inf"),
        (dict(b1=np.float32(1.0)), r"b1 must be \[0.0, 1.0\)"),
        (dict(b2=jnp.asarray(-0.1)), r"b2 must be \[0.0, 1.0\)"),
        (dict(rho=np.array(float("nan"))), "rho must be a finite number"),
        (dict(warmup_steps=np.int64(-3)), "warmup_steps must be >= 0"),
        (dict(learning_rate=-1e-3), "learning_rate must be >= 0.0; got -0.001"),
        (dict(learning_rate=float("nan")), "learning_rate must be a finite number"),
        (dict(learning_rate=np.float32("inf")), "learning_rate must be a finite number"),
        (dict(learning_rate=jnp.asarray(-1.0)), "learning_rate must be >= 0.0"),
        (dict(weight_decay=-0.01), "weight_decay must be >= 0.0"),
        (dict(weight_decay=np.float32("nan")), "weight_decay must be a finite number"),
    ],
)
def test_bad_concrete_hyperparameters_raise_naming_argument_and_value(kwargs, message):
    # Python numbers, NumPy scalars and concrete (0-d) JAX arrays are all checked.
    kwargs = {"learning_rate": 1e-3, **kwargs}
    with pytest.raises(ValueError, match=message):
        prm(**kwargs)
    tx_kwargs = {k: v for k, v in kwargs.items() if k not in ("learning_rate", "weight_decay")}
    if tx_kwargs:
        with pytest.raises(ValueError, match=message):
            scale_by_population_risk(**tx_kwargs)


def test_non_numbers_raise_type_errors():
    with pytest.raises(TypeError, match="alpha must be a real number, not a bool; got True"):
        prm(1e-3, alpha=True)
    with pytest.raises(TypeError, match="softness must be a real number; got '1'"):
        scale_by_population_risk(softness="1")
    with pytest.raises(TypeError, match="eps must be a real number"):
        scale_by_population_risk(eps=1e-8 + 0j)


def test_good_numpy_and_jax_scalars_and_schedules_are_accepted():
    params = jnp.ones(3)
    opts = [
        prm(np.float32(1e-3), alpha=np.float64(0.2), softness=jnp.float32(3.0), b1=np.float32(0.9)),
        prm(optax.linear_schedule(1e-3, 0.0, 10), weight_decay=lambda t: 1e-4),
        prm(0.0, weight_decay=0, alpha=0, eps=0.0, warmup_steps=np.int32(2)),
    ]
    for opt in opts:
        updates, _ = opt.update(params, opt.init(params), params)
        assert bool(jnp.all(jnp.isfinite(updates)))


def test_traced_hyperparameters_are_not_checked():
    # Under inject_hyperparams inside jit the values are tracers: there is nothing to check, and
    # a NaN set there propagates as a NaN, as in optax.
    params = jnp.ones(3)
    opt = optax.inject_hyperparams(prm)(learning_rate=1e-2, alpha=1.0)
    state = opt.init(params)
    nan = jnp.asarray(jnp.nan, state.hyperparams["alpha"].dtype)
    state = state._replace(hyperparams={**state.hyperparams, "alpha": nan})
    updates, _ = jax.jit(opt.update)(params, state, params)
    assert bool(jnp.all(jnp.isnan(updates)))
    # Built from a tracer directly.
    init = scale_by_population_risk().init
    tx = jax.jit(lambda a, g: scale_by_population_risk(alpha=a).update(g, init(g))[0])
    assert tx(jnp.asarray(-1.0), params).shape == (3,)
    # Concrete (eager) hyperparameters are arrays too, and are checked.
    with pytest.raises(ValueError, match="learning_rate must be >= 0.0"):
        optax.inject_hyperparams(prm)(learning_rate=-1.0).init(params)


def test_gates_check_their_hyperparameters():
    m2, s = jnp.ones(3), jnp.ones(3)
    for fn in (hard_gate, soft_gate, snr_gate):
        with pytest.raises(ValueError, match="alpha must be a finite number"):
            fn(m2, s, alpha=np.float32("nan"), softness=1.0, eps=1e-8)
        with pytest.raises(ValueError, match="softness must be >= 0.0"):
            fn(m2, s, alpha=1.0, softness=np.float32(-1), eps=1e-8)
        with pytest.raises(ValueError, match="eps must be a finite number"):
            fn(m2, s, alpha=1.0, softness=1.0, eps=jnp.inf)
        traced = jax.jit(lambda a: fn(m2, s, alpha=a, softness=1.0, eps=1e-8))
        assert traced(jnp.asarray(-1.0)).shape == (3,)  # tracers are not checked
    with pytest.raises(ValueError, match="reduction must be one of"):
        masks_module.gate(m2, s, mask="snr", reduction="per_layer", alpha=1, softness=1, eps=0)
    with pytest.raises(ValueError, match="mask must be one of"):
        masks_module.tensor_gate(m2, s, mask="snrr", alpha=1, softness=1, eps=0)


@pytest.mark.parametrize(("mask", "reduction"), [("hard", "per_parameter"), ("hard", "per_tensor")])
def test_gated_weight_decay_with_closed_gate_leaves_params_unchanged(mask, reduction):
    key = jax.random.key(4)
    params, loss = _problem(key)
    opt = prm(
        0.05,
        weight_decay=0.1,
        mask=mask,
        alpha=1e30,
        reduction=reduction,
        gate_stats=True,
        gate_weight_decay=True,
    )
    history, state = _run(opt, params, loss, 20, key)
    assert_trees_all_equal(history[-1], params)
    assert float(optax.tree.get(state, "gate_open_fraction")) == 0.0
    # The snr gate never closes fully: q ~ m̂²/(α ŝ) ~ 1e-30 leaves the params in place to rounding.
    opt = prm(0.05, weight_decay=0.1, alpha=1e30, gate_weight_decay=True)
    history, _ = _run(opt, params, loss, 20, key)
    assert_trees_all_close(history[-1], params, rtol=1e-7, atol=0)


def test_gated_weight_decay_by_hand():
    # t = 1, snr with λα = 1 and eps = 0: m̂² = ŝ = g², so q = 1/2 and m̂/√v̂ = sign(g) everywhere.
    # Algorithm 1:        Δw = −η (q sign(g) + λ_wd w)
    # gate_weight_decay:  Δw = −η q (sign(g) + λ_wd w)
    w = jnp.array([2.0, -1.0, 4.0], jnp.float64)
    g = jnp.array([0.5, 3.0, -1.0], jnp.float64)
    lr, wd = 0.1, 0.25
    sign = jnp.sign(g)
    expected = {
        False: -lr * (0.5 * sign + wd * w),
        True: -lr * 0.5 * (sign + wd * w),
    }
    for gated, want in expected.items():
        opt = prm(lr, eps=0.0, weight_decay=wd, gate_weight_decay=gated)
        updates, _ = opt.update(g, opt.init(w), w)
        np.testing.assert_allclose(updates, want, rtol=1e-14, err_msg=f"gated={gated}")


def test_gated_weight_decay_default_path_and_errors():
    params = {"w": jnp.linspace(-1.0, 1.0, 4), "b": jnp.ones(2)}
    g = _grads_like(params)
    # With zero weight decay the gated and the default optimizer agree (and need no params for
    # the bare transformation).
    a, b = prm(1e-2, weight_decay=0.0), prm(1e-2, weight_decay=0.0, gate_weight_decay=True)
    assert_trees_all_equal(a.update(g, a.init(params), params)[0], b.update(g, b.init(params))[0])
    tx = scale_by_population_risk(gated_weight_decay=0.1)
    with pytest.raises(ValueError, match="gated_weight_decay needs update"):
        tx.update(g, tx.init(params))
    with pytest.raises(ValueError, match="gated_weight_decay must be >= 0.0"):
        scale_by_population_risk(gated_weight_decay=-0.1)
    with pytest.raises(ValueError):  # a mask that is not a prefix of the params
        bad = prm(1e-2, weight_decay_mask={"w": True, "b": None}, gate_weight_decay=True)
        bad.update(g, bad.init(params), params)


def test_gated_weight_decay_under_inject_hyperparams():
    params = {"w": jnp.linspace(-1.0, 1.0, 4), "b": jnp.ones(2)}
    g = _grads_like(params)
    opt = optax.inject_hyperparams(prm)(
        learning_rate=1e-2, weight_decay=0.5, gate_weight_decay=True
    )
    state = opt.init(params)
    updates, _ = jax.jit(opt.update)(g, state, params)
    plain = prm(1e-2, weight_decay=0.5, gate_weight_decay=True)
    reference, _ = plain.update(g, plain.init(params), params)
    assert_trees_all_close(updates, reference, **F32)


def _grads_like(params):
    leaves, treedef = jax.tree.flatten(params)
    return treedef.unflatten([jnp.cos(3.0 * x + i) for i, x in enumerate(leaves)])
