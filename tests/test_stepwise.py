"""The per-step propagator (probes.StepwiseDissipation) against a dense per-step accumulation,
its order in the step size, and its life inside the engine (seeds, checkpoints, resume)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from dyntheory import losses, momentum
from dyntheory import probes as P
from dyntheory.engine import Trainer
from dyntheory.engine.config import TrainConfig
from dyntheory.optim import state as optim_state
from dyntheory.probes import stepwise_path

N, D, H, OUT = 8, 3, 6, 2


def apply(w, x):
    return jnp.tanh(x @ w["w1"] + w["b1"][None]) @ w["w2"]


def init(key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (D, H), jnp.float64) / np.sqrt(D),
        "b1": jnp.zeros(H, jnp.float64),
        "w2": jax.random.normal(k2, (H, OUT), jnp.float64) / np.sqrt(H),
    }


def data(loss):
    rng = np.random.RandomState(0)
    x = rng.randn(N, D)
    if loss == "squared":
        return {"x": x, "y": np.stack([np.sin(x.sum(1)), np.cos(x[:, 0])], 1)}
    return {"x": x, "y": (x[:, 0] > 0).astype(np.int32)}


def dense_step(big_a, w, jac, p, b, beta, decay, c):
    """One step of the dense recursion of :mod:`dyntheory.probes.stepwise` on the propagator
    ``big_a`` of ``z = (g, μ, ω)`` and the Gramian ``w``, with explicit matrices."""
    n, q = jac.shape
    size = n + 2 * q
    mu = np.hstack([(1 - beta) * jac.T, beta * np.eye(q), np.zeros((q, q))])
    d = (p[:, None] / c) * mu + np.hstack([np.zeros((q, n + q)), decay * np.eye(q)])
    rr = jac @ d
    e_g, e_w = np.eye(n, size), np.eye(size)[n + q :]
    step = np.vstack([e_g - b @ rr, mu, e_w - d])
    s = np.vstack([rr, np.zeros((2 * q, size))])
    s = 0.5 * (s + s.T) - 0.5 * rr.T @ b @ rr
    return step @ big_a, w + big_a.T @ s @ big_a


def dense_reference(loss, opt, precond, beta, decay, start, steps, train):
    """Train by hand; from ``start`` on, advance the dense recursion one step at a time with
    each step's explicit Jacobian ``J_t`` and preconditioner ``p_{t+1}``."""
    spec = losses.get_loss(loss)
    w = init(jax.random.split(jax.random.key(0))[0])
    o = opt.init(w)
    x, y = jnp.asarray(train["x"]), jnp.asarray(train["y"])
    flat, unravel = ravel_pytree(w)
    f = lambda v: apply(unravel(v), x).reshape(-1)
    grad = jax.grad(lambda w: spec.value(apply(w, x), y))
    size = N * OUT + 2 * flat.size
    big_a, acc, z0, phi_s = np.eye(size), np.zeros((size, size)), None, None
    for t in range(steps):
        upd, o_new = opt.update(grad(w), o, w)
        w_new = optax.apply_updates(w, upd)
        if t >= start:
            flat = np.asarray(ravel_pytree(w)[0])
            jac = np.asarray(jax.jacfwd(f)(jnp.asarray(flat)))
            p = np.asarray(ravel_pytree(precond(o_new))[0])
            u = apply(w, x)
            if t == start:
                m = np.asarray(ravel_pytree(optim_state.first_moment(o))[0])
                g = np.asarray(spec.out_grad(u, y)).reshape(-1)
                z0, phi_s = np.concatenate([g, m, flat]), spec.value(u, y)
            b = spec.out_hessian(u)
            b = np.asarray(b) if np.ndim(b) else float(b) * np.eye(N * OUT)
            c = 1 - beta ** (t + 1)
            big_a, acc = dense_step(big_a, acc, jac, p, b, beta, decay, c)
        w, o = w_new, o_new
    drop = phi_s - spec.value(apply(w, x), y)
    g0 = z0[: N * OUT]
    return z0 @ acc @ z0, drop, acc[: N * OUT, : N * OUT], g0 @ acc[: N * OUT, : N * OUT] @ g0


def test_dense_step_is_the_momentum_recursion_for_a_constant_kernel():
    """With constant J and p the (g, μ, ω) recursion equals dyntheory.momentum's (g, e, a) with
    e = J (p ⊙ μ), a = J ω."""
    rng = np.random.RandomState(1)
    n, q, beta, decay = 4, 6, 0.8, 0.05
    jac, p = rng.randn(n, q), rng.rand(q)
    big_a, w = np.eye(n + 2 * q), np.zeros((n + 2 * q,) * 2)
    ref = momentum.init(n)
    for t in range(5):
        c = 1 - beta ** (t + 1)
        big_a, w = dense_step(big_a, w, jac, p, np.eye(n) / n, beta, decay, c)
        ref = momentum.update(ref, (jac * p[None]) @ jac.T, beta, out_hessian=1.0 / n, steps=1,
                              decay=decay, first_step=t + 1)  # fmt: skip
    g, mu, om = rng.randn(n), rng.randn(q), rng.randn(q)
    z = np.concatenate([g, mu, om])
    want = momentum.predicted_loss_drop(ref, g, jac @ (p * mu), jac @ om)
    np.testing.assert_allclose(z @ w @ z, want, rtol=1e-12)


LR, B1, WD, START, STEPS = 0.05, 0.9, 0.1, 3, 12  # the AdamW run checked against dense


def adamw_against_dense(loss, **probes_kw):
    """Train the small MLP with full-batch AdamW (float64) carrying one StepwiseDissipation per
    ``name -> settings`` of ``probes_kw``; returns ``(res, probes, dense_reference(...),
    dense Π W_gg Π spectrum (softmax) or W_gg's, descending)``."""
    opt = optax.adamw(LR, b1=B1, b2=0.99, weight_decay=WD)
    precond = optim_state.adam_preconditioner(LR, b2=0.99)
    common = dict(
        preconditioner=precond, momentum=B1, first_moment=optim_state.first_moment,
        decay=LR * WD, loss=loss, start=START,
    )  # fmt: skip
    probes = {
        name: P.StepwiseDissipation(P.Schedule.at(STEPS), name=name, **common, **kw)
        for name, kw in probes_kw.items()
    }
    train = data(loss)
    tr = Trainer(
        TrainConfig(steps=STEPS, fuse=5, probe_size=N),
        apply_fn=apply, init_params=init, optimizer=opt, data=train, loss=loss,
        probes=list(probes.values()),
    )  # fmt: skip
    res = tr.run(progress=False)
    dense = dense_reference(loss, opt, precond, B1, LR * WD, START, STEPS, train)
    w = dense[2]
    basis = losses.logit_shift_free_basis(N, OUT) if loss != "squared" else np.eye(N * OUT)
    basis = np.asarray(basis)
    ref = np.sort(np.linalg.eigvalsh(basis.T @ (0.5 * (w + w.T)) @ basis))[::-1]
    return res, probes, dense, ref


@pytest.mark.parametrize("loss", ["squared", "softmax_ce"])
def test_stepwise_equals_the_dense_per_step_accumulation(loss):
    """AdamW (momentum, bias correction, decoupled decay), full batch, float64: the in-scan
    probe's prediction and its complete-basis W spectrum equal the dense recursion to 1e-8."""
    res, _, (pred, drop, w, gwg), _ = adamw_against_dense(
        loss, stepwise=dict(rank=N * OUT, lanczos_iters=N * OUT)
    )
    got = res.history["probe/stepwise/predicted_loss_drop"][-1]
    h = lambda key: res.history[f"probe/stepwise/{key}"][-1]
    # the split of the checked Gramian: its two parts carry g(s)ᵀ W_gg g(s)
    np.testing.assert_allclose(h("dissipated_channel") + h("dissipated_reservoir"), gwg, rtol=1e-8)
    np.testing.assert_allclose(h("g_block_rel_err"), abs(gwg - drop) / abs(drop), rtol=1e-6)
    np.testing.assert_allclose(got, pred, rtol=1e-8)
    np.testing.assert_allclose(res.history["probe/stepwise/loss_drop"][-1], drop, rtol=1e-10)
    lam = np.sort(np.linalg.eigvalsh(0.5 * (w + w.T)))[::-1]
    np.testing.assert_allclose(res.arrays["stepwise/w_eigenvalues"][-1], lam, atol=1e-10)


@pytest.mark.parametrize("loss", ["squared", "softmax_ce"])
def test_check_spectrum_is_the_dense_spectrum_beside_the_tracked_block(loss):
    """check_spectrum: the reference block's eigenvalues are the dense recursion's W_gg spectrum
    on the loss-carrying outputs (softmax: Π W_gg Π), and spectrum_rel_err compares the tracked
    block's top k with them; the tracked block is the same as without the check."""
    res, _, _, ref = adamw_against_dense(loss, low=dict(rank=3), chk=dict(rank=3, check_spectrum=2))
    np.testing.assert_allclose(res.arrays["chk/w_eigenvalues_ref"][-1], ref, atol=1e-10)
    low = res.arrays["low/w_eigenvalues"][-1]
    np.testing.assert_allclose(res.arrays["chk/w_eigenvalues"][-1], low, rtol=1e-10)
    want = np.max(np.abs(low[:2] - ref[:2]) / np.abs(ref[:2]))
    got = res.history["probe/chk/spectrum_rel_err"][-1]
    np.testing.assert_allclose(got, want, rtol=1e-8)
    assert got > 1e-6  # 3 of 16 directions: the Ritz values are below the dense ones
    assert res.history["probe/chk/w_lambda_max_ref"][-1] == pytest.approx(ref[0], rel=1e-10)
    # the nested half basis (g(s) and the leading direction) against all three directions
    wr = np.asarray(res.probe_states["low"].w)
    half = np.sort(np.linalg.eigvalsh(wr[:1, :1]))[::-1]
    want = abs(half[0] - low[0]) / abs(low[0])
    np.testing.assert_allclose(res.history["probe/low/spectrum_half_rel_err"][-1], want, rtol=1e-8)


@pytest.mark.parametrize("loss", ["squared", "softmax_ce"])
def test_exact_topk_by_the_adjoint_is_the_dense_spectrum(loss):
    """record_path + exact_topk: Lanczos on the adjoint product over the recorded path gives
    the top eigenvalues of the whole W_gg (softmax: Π W_gg Π) of the dense recursion, with no
    tracked directions at all."""
    res, probes, _, ref = adamw_against_dense(loss, stepwise=dict(rule="left", record_path=STEPS))
    buf = res.probe_states["stepwise"].path
    assert int(buf.count) == STEPS - START
    x = jnp.asarray(data(loss)["x"])
    probe = probes["stepwise"]
    lam, _ = stepwise_path.exact_topk(probe, apply, x, init(jax.random.key(0)), buf, 3)
    np.testing.assert_allclose(np.asarray(lam), ref[:3], rtol=1e-8)


def test_check_spectrum_needs_tracked_directions():
    with pytest.raises(ValueError, match="check_spectrum"):
        P.StepwiseDissipation(P.Schedule.at(4), check_spectrum=3)


@pytest.mark.parametrize("rule, order", [("left", 1), ("midpoint", 2)])
def test_stepwise_identity_error_order_in_the_step_size(rule, order):
    """Plain GD over a fixed horizon η·T: the left rule's per-step linearization errs by O(η²)
    per step, so the identity error falls like η; the midpoint rule's by O(η³), so like η²
    (slope of log error over halving η)."""
    errs, etas = [], [0.1, 0.05, 0.025]
    for eta in etas:
        steps = int(round(4.0 / eta))
        tr = Trainer(
            TrainConfig(steps=steps, fuse=20, probe_size=N),
            apply_fn=apply, init_params=init, optimizer=optax.sgd(eta), data=data("squared"),
            probes=[P.StepwiseDissipation(P.Schedule.at(steps), lr=eta, rule=rule)],
        )  # fmt: skip
        errs.append(tr.run(progress=False).history["probe/stepwise/identity_rel_err"][-1])
    slope = np.polyfit(np.log(etas), np.log(errs), 1)[0]
    assert order - 0.2 < slope < order + 0.35, (errs, slope)


def test_stepwise_checkpoints_resumes_exactly_and_vmaps_over_seeds(tmp_path):
    """Two vmapped seeds; 10 steps, then a resume to 20 equals 20 uninterrupted steps; rows
    before the start are marked and carry no identity."""
    lr = 0.05
    probe = P.StepwiseDissipation(
        P.Schedule.every(5), preconditioner=optim_state.adam_preconditioner(lr), momentum=0.9,
        first_moment=optim_state.first_moment, start=7, rank=3,
    )  # fmt: skip

    def trainer(steps):
        return Trainer(
            TrainConfig(steps=steps, fuse=4, probe_size=N, seeds=2, checkpoint_every=10),
            apply_fn=apply, init_params=init, optimizer=optax.adam(lr), data=data("squared"),
            probes=[probe],
        )  # fmt: skip

    full = trainer(20).run(tmp_path / "full", progress=False)
    trainer(10).run(tmp_path / "part", progress=False)
    resumed = trainer(20).run(tmp_path / "part", progress=False)
    h = full.history
    key = "probe/stepwise/predicted_loss_drop"
    np.testing.assert_array_equal(resumed.history[key], h[key])
    rows = np.isin(h["step"], [0, 5])
    assert (h["probe/stepwise/before_start"][rows] == 1).all()
    assert np.isnan(h["probe/stepwise/identity_rel_err"][rows]).all()
    last = h["probe/stepwise/identity_rel_err"][-1]
    assert last.shape == (2,) and np.isfinite(last).all() and (last < 0.1).all()


def test_batch_weights_are_the_steps_rows():
    """``Batcher.weights``: the rows of the step's batch, each ``n/b`` per draw (epoch and
    with-replacement sampling), ones for a full batch, None for fresh batches."""
    from dyntheory.engine import batching

    n, b = 12, 4
    d = {"x": np.arange(n, dtype=np.float64)[:, None]}
    key = jax.random.key(3)
    for sampling in ("epoch", "replacement"):
        bt = batching.make_batcher(d, b, sampling)
        for step in range(7):
            rows = np.asarray(bt.at(d, key, jnp.int32(step))["x"][:, 0]).astype(int)
            want = np.bincount(rows, minlength=n) * n / b
            np.testing.assert_array_equal(bt.weights(key, jnp.int32(step), n), want)
    np.testing.assert_array_equal(batching.make_batcher(d, None, "epoch").weights(key, 0, n), 1)
    fresh = batching.make_batcher(lambda k, m: {"x": jnp.zeros((m, 1))}, b, "epoch")
    assert fresh.weights(key, 0, n) is None


@pytest.mark.parametrize("gradient", ["batch", "full"])
def test_minibatch_steps_as_taken(gradient):
    """A linear model with squared loss under minibatch SGD: each step's linearization is exact,
    so the propagator of the steps as taken (``gradient="batch"``) predicts the loss drop to
    round-off, while the full-set gradient's propagator (``"full"``) predicts another run's."""
    rng = np.random.RandomState(1)
    n = 32
    train = {"x": rng.randn(n, D), "y": rng.randn(n, 1)}
    lin = lambda w, x: x @ w["w"]
    init_lin = lambda key: {"w": jnp.zeros((D, 1), jnp.float64)}
    probe = P.StepwiseDissipation(P.Schedule.at(20), lr=0.1, gradient=gradient, start=2)
    res = Trainer(
        TrainConfig(steps=20, fuse=5, batch_size=8),
        apply_fn=lin, init_params=init_lin, optimizer=optax.sgd(0.1), data=train,
        loss="squared", probes=[probe],
    ).run(progress=False)  # fmt: skip
    err = res.history["probe/stepwise/identity_rel_err"][-1]
    if gradient == "batch":
        assert err < 1e-10
    else:
        assert err > 1e-3


def test_batch_gradient_needs_the_training_set_itself():
    """``gradient="batch"`` with a probe set that is not the training data is refused by name."""
    train = data("squared")
    sub = {"train": {k: v[:4] for k, v in train.items()}}
    with pytest.raises(ValueError, match="training dataset itself"):
        Trainer(
            TrainConfig(steps=4, fuse=2, batch_size=8),
            apply_fn=apply, init_params=init, optimizer=optax.sgd(0.1), data=train,
            loss="squared", probe_data=sub,
            probes=[P.StepwiseDissipation(P.Schedule.at(4), lr=0.1)],
        ).run(progress=False)  # fmt: skip


def test_saturated_softmax_gradient_is_taken_in_float64():
    """Float32 logits with a margin of 20 (``1 − π_y`` ≈ 1e-8, below float32's spacing near 1):
    the probe's label entry of ``g`` is ``−Σ_{k≠y} π_k`` to 1e-6 (float64 cancellation),
    where float32's ``π_y − 1`` rounds to 0."""
    u = jnp.zeros((3, 5), jnp.float32).at[:, 0].set(20.0)
    y = jnp.zeros(3, jnp.int32)
    ctx = P.ProbeContext(None, None, None, {"y": y}, None, None, None)
    g, _ = P.StepwiseDissipation(loss="softmax_ce")._g_phi(ctx, u)
    g = np.asarray(g).reshape(3, 5)
    others = 4 * np.exp(-20.0) / (1 + 4 * np.exp(-20.0)) / 3
    np.testing.assert_allclose(g[:, 0], -others, rtol=1e-6)  # float64 spacing: 1e-16 / 1e-8
    assert float(jax.nn.softmax(u, axis=-1)[0, 0] - 1.0) == 0.0  # what float32 would give


def test_record_path_refuses_buffers_beyond_the_limit(monkeypatch):
    from dyntheory.probes import stepwise

    monkeypatch.setattr(stepwise, "PATH_BYTES_MAX", 1000)
    probe = P.StepwiseDissipation(P.Schedule.at(4), record_path=10)
    tr = Trainer(
        TrainConfig(steps=4, probe_size=N),
        apply_fn=apply, init_params=init, optimizer=optax.sgd(0.1), data=data("squared"),
        loss="squared", probes=[probe],
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"record_path=10\) keeps 21 vectors"):
        tr.run(progress=False)
