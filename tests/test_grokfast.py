"""Grokfast-EMA (arXiv:2405.20233) as an optax transformation: numerics and optax's contracts."""

from __future__ import annotations

import doctest
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dyntheory.optim import AmplifySlowGradientsState, amplify_slow_gradients, grokfast
from tests.helpers import (
    assert_tree_shapes_dtypes_equal,
    assert_trees_all_close,
    assert_trees_all_equal,
    tol,
)

grokfast_module = importlib.import_module("dyntheory.optim.grokfast")
F32 = tol(jnp.float32)


def _grads(t: int, like):
    """A deterministic, step-dependent noisy gradient shaped like ``like``."""
    key = jax.random.fold_in(jax.random.key(0), t)
    leaves, treedef = jax.tree.flatten(like)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [0.3 + jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    )


def _problem(key, dtype=jnp.float32):
    """A small least-squares regression (two leaves) and a minibatch loss."""
    kw, kx, ky = jax.random.split(key, 3)
    params = {"w": jax.random.normal(kw, (5, 3), dtype), "b": jnp.full((3,), 0.1, dtype)}
    x = jax.random.normal(kx, (64, 5), dtype)
    y = jax.random.normal(ky, (64, 3), dtype)

    def loss(p, idx):
        return jnp.mean((x[idx] @ p["w"] + p["b"][None, :] - y[idx]) ** 2)

    return params, loss


def _run(opt, params, loss, steps, key, jit=True):
    """Train ``steps`` minibatch steps; return the params after every step."""

    def step(p, state, k):
        idx = jax.random.choice(k, 64, (16,), replace=False)
        updates, state = opt.update(jax.grad(loss)(p, idx), state, p)
        return optax.apply_updates(p, updates), state

    if jit:
        step = jax.jit(step)

    state = opt.init(params)
    history = []
    for t in range(steps):
        params, state = step(params, state, jax.random.fold_in(key, t))
        history.append(params)
    return history, state


# Hand-computed, float64, α = 3/4, λ = 2, g1 = [1, −2], g2 = [5, 2]:
#   first_gradient: μ1 = g1 = [1, −2]                    g̃1 = 3 g1 = [3, −6]
#                   μ2 = ¾[1, −2] + ¼[5, 2] = [2, −1]      g̃2 = [5, 2] + 2[2, −1] = [9, 0]
#   zeros:          μ1 = ¼ g1 = [1/4, −1/2]               g̃1 = g1 + 2μ1 = [3/2, −3]
#                   μ2 = ¾[1/4, −1/2] + ¼[5, 2] = [23/16, 1/8]
#                   g̃2 = [5, 2] + 2[23/16, 1/8] = [63/8, 9/4]
@pytest.mark.parametrize(
    ("ema_init", "mu1", "out1", "mu2", "out2"),
    [
        ("first_gradient", [1, -2], [3, -6], [2, -1], [9, 0]),
        ("zeros", [1 / 4, -1 / 2], [3 / 2, -3], [23 / 16, 1 / 8], [63 / 8, 9 / 4]),
    ],
)
def test_two_steps_by_hand(ema_init, mu1, out1, mu2, out2):
    tx = amplify_slow_gradients(alpha=0.75, lamb=2.0, ema_init=ema_init)
    state = tx.init(jnp.zeros(2, jnp.float64))
    u1, state = tx.update(jnp.array([1.0, -2.0], jnp.float64), state)
    np.testing.assert_array_equal(state.mu, mu1)
    np.testing.assert_array_equal(u1, out1)
    u2, state = tx.update(jnp.array([5.0, 2.0], jnp.float64), state)
    np.testing.assert_array_equal(state.mu, mu2)
    np.testing.assert_array_equal(u2, out2)
    assert int(state.count) == 2


def test_matches_the_reference_filter_loop():
    # The reference gradfilter_ema, transcribed: the EMA is seeded with the first gradient, then
    # every step (the first included) does mu = α mu + (1 − α) g and g̃ = g + λ mu.
    alpha, lamb = 0.98, 2.0
    rng = np.random.default_rng(0)
    gs = rng.normal(size=(30, 7))
    mu, expected = None, []
    for g in gs:
        mu = g.copy() if mu is None else mu
        mu = mu * alpha + g * (1 - alpha)
        expected.append(g + mu * lamb)
    tx = amplify_slow_gradients(alpha, lamb)
    state = tx.init(jnp.zeros(7, jnp.float64))
    for t, g in enumerate(gs):
        out, state = tx.update(jnp.asarray(g), state)
        np.testing.assert_allclose(out, expected[t], rtol=1e-13, err_msg=f"step {t + 1}")


def test_init_on_shape_dtype_struct_and_state_fields():
    params = {
        "w": jax.ShapeDtypeStruct((2, 4, 8), jnp.float32),
        "b": jax.ShapeDtypeStruct((8,), jnp.bfloat16),
    }
    tx = amplify_slow_gradients()
    state = tx.init(params)
    concrete = tx.init(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params))
    assert_tree_shapes_dtypes_equal(state, concrete)
    assert isinstance(state, AmplifySlowGradientsState)
    assert (state.count.shape, state.count.dtype) == ((), jnp.int32)
    assert_tree_shapes_dtypes_equal(state.mu, params)
    # mu_dtype: a float32 EMA for bfloat16 params; the amplified gradients stay bfloat16.
    tx = amplify_slow_gradients(mu_dtype=jnp.float32)
    g = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), params)
    state = tx.init(g)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.mu))
    out, state = jax.jit(tx.update)(g, state)
    assert out["b"].dtype == jnp.bfloat16 and out["w"].dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.mu))
    assert_tree_shapes_dtypes_equal(grokfast(1e-3).init(params), grokfast(1e-3).init(g))


@pytest.mark.parametrize("ema_init", ["first_gradient", "zeros"])
def test_lamb_zero_equals_adamw_exactly_step_for_step(ema_init):
    # g + 0·μ = g exactly, so op by op (no jit) the trajectories are bit-identical. Under jit the
    # two programs are fused differently by XLA, which may contract a multiply-add into an FMA in
    # one and not the other: equal to float32 rounding (observed: 1 ulp), not bit for bit.
    key = jax.random.key(0)
    params, loss = _problem(key)
    hyper = dict(learning_rate=3e-2, b1=0.8, b2=0.95, eps=1e-7, weight_decay=0.1)
    opt = grokfast(**hyper, lamb=0.0, ema_init=ema_init)
    ours, _ = _run(opt, params, loss, 25, key, jit=False)
    ref, _ = _run(optax.adamw(**hyper), params, loss, 25, key, jit=False)
    for t, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert_trees_all_equal(a, b, err_msg=f"step {t + 1}")
    ours, _ = _run(opt, params, loss, 25, key)
    ref, _ = _run(optax.adamw(**hyper), params, loss, 25, key)
    for t, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert_trees_all_close(a, b, rtol=1e-6, atol=1e-7, err_msg=f"jit, step {t + 1}")
    # Also with schedules and a weight-decay mask, and in front of another optimizer.
    lr, wd_mask = optax.cosine_decay_schedule(5e-2, 20), {"w": True, "b": False}
    ours, _ = _run(
        grokfast(lr, lamb=0.0, weight_decay=optax.linear_schedule(0.1, 0.0, 20), mask=wd_mask),
        params,
        loss,
        20,
        key,
        jit=False,
    )
    ref, _ = _run(
        optax.adamw(lr, weight_decay=optax.linear_schedule(0.1, 0.0, 20), mask=wd_mask),
        params,
        loss,
        20,
        key,
        jit=False,
    )
    assert_trees_all_equal(ours[-1], ref[-1])
    sgd = optax.sgd(0.05, momentum=0.9)
    ours, _ = _run(optax.chain(amplify_slow_gradients(lamb=0.0), sgd), params, loss, 10, key, False)
    ref, _ = _run(sgd, params, loss, 10, key, jit=False)
    assert_trees_all_equal(ours[-1], ref[-1])


def test_default_lamb_differs_from_adamw():
    key = jax.random.key(1)
    params, loss = _problem(key)
    ours, _ = _run(grokfast(3e-2), params, loss, 5, key)
    ref, _ = _run(optax.adamw(3e-2), params, loss, 5, key)
    assert not np.allclose(ours[-1]["w"], ref[-1]["w"])


def test_works_inside_chain():
    params = {"w": jnp.ones(5), "b": jnp.zeros(2)}
    g = jax.tree.map(lambda x: 10.0 * x, _grads(0, params))
    clip = optax.clip_by_global_norm(1.0)
    opt = optax.chain(clip, amplify_slow_gradients(alpha=0.9, lamb=2.0), optax.sgd(0.1))
    updates, state = opt.update(g, opt.init(params), params, unexpected_extra_arg=1)
    clipped, _ = clip.update(g, clip.init(params))
    # t = 1 (first-gradient seed): g̃ = (1 + λ) g = 3 × the clipped gradient.
    assert_trees_all_close(updates, jax.tree.map(lambda c: -0.1 * 3.0 * c, clipped), **F32)
    assert int(state[1].count) == 1
    state = optax.tree.map_params(opt, lambda v: v, state)
    assert_trees_all_equal(state[1].mu, clipped)


def test_inject_hyperparams_changes_without_recompiling():
    opt = optax.inject_hyperparams(grokfast)(learning_rate=1e-2, alpha=0.9, lamb=2.0)
    traces = []

    @jax.jit
    def update(g, state, params):
        traces.append(1)
        return opt.update(g, state, params)

    params = jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32)
    state = opt.init(params)
    _, state = update(_grads(0, params), state, params)
    g = _grads(1, params)
    base = {"learning_rate": 1e-2, "alpha": 0.9, "lamb": 2.0}
    results = {}
    for name, value in (("base", None), ("learning_rate", 5e-3), ("alpha", 0.5), ("lamb", 0.0)):
        hyper = base if value is None else {**base, name: value}
        changed = {k: jnp.asarray(v, state.hyperparams[k].dtype) for k, v in hyper.items()}
        s = state._replace(hyperparams={**state.hyperparams, **changed})
        updates, _ = update(g, s, params)
        reference, _ = grokfast(**hyper).update(g, state.inner_state, params)
        assert_trees_all_close(updates, reference, **F32, err_msg=name)
        results[name] = updates
    assert len(traces) == 1
    for name in ("learning_rate", "alpha", "lamb"):
        assert not np.allclose(results[name], results["base"]), name
    # The bare transformation, too.
    tx = optax.inject_hyperparams(amplify_slow_gradients)(alpha=0.5, lamb=1.0)
    out, _ = jax.jit(tx.update)(jnp.ones(3), tx.init(jnp.zeros(3)))
    np.testing.assert_allclose(out, 2.0 * np.ones(3))


def test_works_inside_multisteps():
    # MultiSteps(grokfast, k) on micro-batches equals grokfast on their mean; the EMA only moves
    # on real steps.
    k = 3
    params = {"w": jnp.linspace(-1.0, 1.0, 8), "b": jnp.ones(2)}
    multi = optax.MultiSteps(grokfast(1e-2, alpha=0.8), every_k_schedule=k)
    plain = grokfast(1e-2, alpha=0.8)
    m_state, p_state = multi.init(params), plain.init(params)
    m_params = p_params = params
    step, plain_update = jax.jit(multi.update), jax.jit(plain.update)
    for t in range(3):
        micro = [_grads(k * t + i, params) for i in range(k)]
        for g in micro:
            updates, m_state = step(g, m_state, m_params)
            m_params = optax.apply_updates(m_params, updates)
        mean = jax.tree.map(lambda *xs: sum(xs) / k, *micro)
        updates, p_state = plain_update(mean, p_state, p_params)
        p_params = optax.apply_updates(p_params, updates)
        assert_trees_all_close(m_params, p_params, rtol=1e-5, atol=1e-6, err_msg=f"step {t}")
    inner, reference = m_state.inner_opt_state[0], p_state[0]
    assert int(inner.count) == int(reference.count) == 3
    assert_trees_all_close(inner.mu, reference.mu, rtol=1e-5, atol=1e-6)


def test_no_recompilation_on_second_update():
    traces = []
    opt = grokfast(1e-2)

    @jax.jit
    def step(params, state, g):
        traces.append(1)  # runs only while tracing
        updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state

    params = {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}
    state = opt.init(params)
    for t in range(4):  # crosses the first-gradient seed: a traced select, not a retrace
        params, state = step(params, state, _grads(t, params))
    assert len(traces) == 1
    assert step._cache_size() == 1


@pytest.mark.parametrize("spec", [P(None, "data"), P()], ids=["sharded", "replicated"])
def test_state_sharding_unchanged_on_8_device_mesh(spec):
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    sharding = NamedSharding(mesh, spec)
    opt = grokfast(1e-2)
    with jax.set_mesh(mesh):
        params = {
            "w": jnp.ones((4, 16), jnp.float32, out_sharding=sharding),
            "b": jnp.zeros((4, 16), jnp.bfloat16, out_sharding=sharding),
        }
        state0 = opt.init(params)
        state1 = jax.jit(opt.init)(params)
        g = jax.tree.map(lambda p: (p + 0.5).astype(p.dtype), params)
        _, state2 = opt.update(g, state0, params)
        step = jax.jit(opt.update, donate_argnums=1)
        _, state3 = step(g, state1, params)
        _, state3 = step(g, state3, params)
        types = [jax.tree.map(jax.typeof, s) for s in (state0, state1, state2, state3)]
        for other in types[1:]:
            assert other == types[0]
        for x, p in zip(jax.tree.leaves(state3[0].mu), jax.tree.leaves(params), strict=True):
            assert x.sharding.is_equivalent_to(p.sharding, x.ndim)
            assert (x.shape, x.dtype) == (p.shape, p.dtype)
    # The sharded computation is the one-device computation.
    single, g_single = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), (params, g))
    state_single = opt.init(single)
    for _ in range(2):
        _, state_single = opt.update(g_single, state_single, single)
    assert_trees_all_close(state3[0].mu, state_single[0].mu, **F32)
    assert_trees_all_close(state3[1], state_single[1], **F32)


@pytest.mark.parametrize(
    "opt",
    [
        grokfast(0.1, weight_decay=0.0),
        grokfast(0.1, alpha=0.9, lamb=5.0, weight_decay=0.0, ema_init="zeros"),
        optax.chain(amplify_slow_gradients(alpha=0.9, lamb=2.0), optax.sgd(0.02)),
    ],
    ids=["adamw", "adamw-lamb5-zeros", "sgd"],
)
def test_converges_on_a_parabola(opt):
    target = jnp.array([1.0, -1.0, 1.0])

    def f(w):
        return jnp.sum((w - target) ** 2)

    @jax.jit
    def run(w):
        def body(carry, _):
            w, state = carry
            updates, state = opt.update(jax.grad(f)(w), state, w)
            return (optax.apply_updates(w, updates), state), None

        (w, _), _ = jax.lax.scan(body, (w, opt.init(w)), None, length=10_000)
        return w

    np.testing.assert_allclose(run(jnp.array([-1.0, 10.0, 1.0])), target, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(alpha=1.0), ValueError, r"alpha must be \[0.0, 1.0\); got 1.0"),
        (dict(alpha=-0.1), ValueError, r"alpha must be \[0.0, 1.0\)"),
        (dict(alpha=np.float32(1.5)), ValueError, r"alpha must be \[0.0, 1.0\); got np.float32"),
        (dict(alpha=float("nan")), ValueError, "alpha must be a finite number; got nan"),
        (dict(alpha=jnp.asarray(jnp.nan)), ValueError, "alpha must be a finite number"),
        (dict(lamb=-1.0), ValueError, "lamb must be >= 0.0; got -1.0"),
        (dict(lamb=float("inf")), ValueError, "lamb must be a finite number; got inf"),
        (dict(lamb=np.float64("nan")), ValueError, "lamb must be a finite number"),
        (dict(lamb=True), TypeError, "lamb must be a real number, not a bool"),
        (dict(ema_init="ones"), ValueError, "ema_init must be one of 'first_gradient', 'zeros'"),
    ],
)
def test_bad_hyperparameters_raise_clearly(kwargs, error, message):
    with pytest.raises(error, match=message):
        amplify_slow_gradients(**kwargs)
    with pytest.raises(error, match=message):
        grokfast(1e-3, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(learning_rate=-1e-3), "learning_rate must be >= 0.0; got -0.001"),
        (dict(learning_rate=float("nan")), "learning_rate must be a finite number"),
        (dict(learning_rate=np.float32("inf")), "learning_rate must be a finite number"),
        (dict(weight_decay=-1.0), "weight_decay must be >= 0.0"),
        (dict(b1=1.0), r"b1 must be \[0.0, 1.0\)"),
        (dict(b2=np.float32(-0.5)), r"b2 must be \[0.0, 1.0\)"),
        (dict(eps=float("nan")), "eps must be a finite number"),
    ],
)
def test_bad_adamw_hyperparameters_raise_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        grokfast(**{"learning_rate": 1e-3, **kwargs})


def test_traced_and_edge_hyperparameters_are_accepted():
    # alpha = 0 (no memory: g̃ = (1 + λ) g), schedules and NumPy scalars are fine.
    tx = amplify_slow_gradients(alpha=np.float32(0.0), lamb=np.int64(1))
    state = tx.init(jnp.zeros(2))
    for g in ([1.0, 2.0], [3.0, -1.0]):
        out, state = tx.update(jnp.asarray(g), state)
        np.testing.assert_allclose(out, 2.0 * np.asarray(g))
    grokfast(optax.linear_schedule(1e-3, 0.0, 10), weight_decay=lambda t: 0.0)
    # Tracers are not checked (inject_hyperparams under jit).
    init = amplify_slow_gradients().init

    @jax.jit
    def traced(alpha, g):
        return amplify_slow_gradients(alpha=alpha, lamb=alpha).update(g, init(g))[0]

    assert traced(jnp.asarray(-1.0), jnp.ones(3)).shape == (3,)


def test_docstring_examples_run():
    result = doctest.testmod(grokfast_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 10, result
