"""Each probe against the standalone library call on the same params; schedules; the
effective kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dyntheory import dissipation, losses, ntk, poprisk, spectrum
from dyntheory import probes as P
from dyntheory.engine import Trainer
from dyntheory.engine.config import TrainConfig
from dyntheory.models import MLP, functional
from dyntheory.optim import prm
from dyntheory.optim import state as optim_state

APPLY, _ = functional(MLP(3, (8,), 2, activation="tanh", rngs=nnx.Rngs(0)))
N, LR, EVERY, STEPS = 16, 0.02, 5, 20
PRM_KW = dict(alpha=1.0, softness=1.0, mask="snr")


def init(key):
    return functional(MLP(3, (8,), 2, activation="tanh", rngs=nnx.Rngs(key)))[1]


def make_data(seed):
    rng = np.random.RandomState(seed)
    x = rng.randn(N, 3).astype(np.float32)
    y_clean = np.stack([np.sin(x.sum(1)), np.cos(x[:, 0])], 1).astype(np.float32)
    return {"x": x, "y": y_clean + 0.2 * rng.randn(N, 2).astype(np.float32), "y_clean": y_clean}


def loss_fn(params, batch):
    return losses.squared_loss(APPLY(params, batch["x"]), batch["y"])


@pytest.fixture(scope="module")
def run():
    """Full-batch PRM on 8 devices with every probe every 5 steps (probe set = train set)."""
    train, test = make_data(0), make_data(1)
    precond = optim_state.prm_preconditioner(LR, **PRM_KW)
    sched = P.Schedule.every(EVERY)
    tr = Trainer(
        TrainConfig(steps=STEPS, fuse=8, probe_size=N),
        apply_fn=APPLY,
        init_params=init,
        optimizer=prm(LR, weight_decay=0.0, gate_stats=True, **PRM_KW),
        data=train,
        eval_sets={"test": test},
        probes=[
            P.NTKSpectrum(sched, top_k=N * 2),
            P.Dissipation(sched, preconditioner=precond),
            P.GateStats(sched),
            P.PopulationRisk(sched, preconditioner=precond),
            P.Norms(sched),
        ],
    )
    return tr, tr.run(progress=False), train, test, precond


def _final(run):
    tr, res, *_ = run
    return jax.device_get(res.state.params), jax.device_get(res.state.opt_state)


def last(res, key):
    return res.history[key][-1]


def test_ntk_probe_matches_library(run):
    tr, res, train, *_ = run
    params, _ = _final(run)
    k = np.asarray(ntk.empirical_ntk(APPLY, params, train["x"]))
    lam = np.linalg.eigvalsh(np.asarray(k, np.float64))[::-1]
    np.testing.assert_allclose(res.arrays["ntk/eigenvalues"][-1], lam, rtol=1e-4, atol=1e-6)
    assert list(res.arrays["ntk/step"]) == [0, 5, 10, 15, 20]
    ref = jax.jit(lambda lam: spectrum.summaries(lam, n=N))(lam)
    for key in ("lambda_max", "trace", "effective_rank_participation", "gd_stability_lr"):
        np.testing.assert_allclose(last(res, f"probe/ntk/{key}"), ref[key], rtol=1e-4)
    align = jax.jit(spectrum.kernel_target_alignment)(k, train["y"])
    np.testing.assert_allclose(last(res, "probe/ntk/kernel_target_alignment"), align, rtol=1e-5)
    k0 = np.asarray(ntk.empirical_ntk(APPLY, jax.device_get(tr.init_state().params), train["x"]))
    drift = np.linalg.norm(k - k0) / np.linalg.norm(k0)
    np.testing.assert_allclose(last(res, "probe/ntk/drift"), drift, rtol=1e-4)
    assert drift > 0


def test_dissipation_probe_matches_replayed_accumulation(run):
    """Replay the run step by step and accumulate W_S, D, G_Q with dissipation.update on the
    effective PRM kernel refreshed every 5 steps: the probe's accumulator must agree."""
    tr, res, train, test, precond = run
    state = jax.device_get(tr.init_state())
    params, opt_state = state.params, state.opt_state
    opt = prm(LR, weight_decay=0.0, gate_stats=True, **PRM_KW)
    acc = dissipation.init(N * 2, N * 2)
    g0 = losses.squared_out_grad(APPLY(params, train["x"]), train["y"])

    @jax.jit
    def kernels(params, opt_state):
        p = precond(opt_state)
        return (
            ntk.effective_ntk(APPLY, params, p, train["x"]),
            ntk.effective_ntk(APPLY, params, p, test["x"], train["x"]),
        )

    @jax.jit
    def step(params, opt_state):
        updates, opt_state = opt.update(jax.grad(loss_fn)(params, train), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    update = jax.jit(
        lambda acc, k, kq: dissipation.update(
            acc, k, 1.0, out_hessian=1.0 / N, steps=EVERY, k_query_train=kq
        )
    )
    k = kq = None
    for t in range(STEPS + 1):
        if t % EVERY == 0:
            if t:
                acc = update(acc, k, kq)
            k, kq = kernels(params, opt_state)
        if t < STEPS:
            params, opt_state = step(params, opt_state)
    got = res.probe_states["dissipation"].acc
    scale = np.abs(np.asarray(acc.W)).max()
    np.testing.assert_allclose(got.W, acc.W, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(got.G, acc.G, rtol=0, atol=1e-4 * np.abs(np.asarray(acc.G)).max())
    np.testing.assert_allclose(got.P, acc.P, rtol=0, atol=1e-5)
    lam = np.linalg.eigvalsh(np.asarray(acc.W))[::-1]
    np.testing.assert_allclose(
        res.arrays["dissipation/w_eigenvalues"][-1], lam, rtol=0, atol=1e-4 * scale
    )
    np.testing.assert_allclose(
        last(res, "probe/dissipation/predicted_loss_drop"), g0 @ acc.W @ g0, rtol=1e-4
    )
    assert last(res, "probe/dissipation/loss_drop") > 0
    for part in ("g0", "g", "noise"):  # energies add up to the squared norm
        total = last(res, f"probe/dissipation/{part}_channel") + last(
            res, f"probe/dissipation/{part}_reservoir"
        )
        assert total > 0
    assert np.isfinite(last(res, "probe/dissipation/coupling_corr"))


def test_effective_ntk_is_j_diag_p_jt():
    params = init(jax.random.key(1))
    x1, x2 = (
        jax.random.normal(jax.random.key(2), (4, 3)),
        jax.random.normal(jax.random.key(3), (3, 3)),
    )
    p = jax.tree.map(lambda w: jax.random.uniform(jax.random.key(w.size), w.shape), params)

    @jax.jit
    def reference(params, p):
        # jacrev of the batched apply: (n, p, *leaf) per leaf -> (n*p, size), tree order
        jac = lambda x: jnp.concatenate(
            [j.reshape(x.shape[0] * 2, -1) for j in jax.tree.leaves(jax.jacrev(APPLY)(params, x))],
            axis=-1,
        )
        pflat = jnp.concatenate([v.reshape(-1) for v in jax.tree.leaves(p)])
        return jac(x1) @ (pflat[:, None] * jac(x2).T)

    ref = reference(params, p)
    got = jax.jit(lambda params, p: ntk.effective_ntk(APPLY, params, p, x1, x2))(params, p)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_gate_poprisk_norms_probes_match_library(run):
    tr, res, train, _, precond = run
    params, opt_state = _final(run)
    for key in ("gate_mean", "gate_open_fraction"):
        np.testing.assert_allclose(last(res, f"probe/gate/{key}"), optax.tree.get(opt_state, key))

    @jax.jit
    def library(params, opt_state):
        grads_pe = poprisk.per_example_grads(loss_fn, params, train)
        change = poprisk.predicted_risk_change(grads_pe, 1.0, precond=precond(opt_state))
        return poprisk.loo_sum(grads_pe), change, jax.grad(loss_fn)(params, train)

    loo, change, grads = library(params, opt_state)
    np.testing.assert_allclose(last(res, "probe/poprisk/loo_sum"), loo, rtol=1e-4)
    np.testing.assert_allclose(last(res, "probe/poprisk/predicted_change"), change, rtol=1e-4)
    np.testing.assert_allclose(
        last(res, "probe/norms/grad/global"), optax.tree.norm(grads), rtol=1e-5
    )
    np.testing.assert_allclose(
        last(res, "probe/norms/param/layers/0/kernel"),
        np.linalg.norm(params["layers"][0]["kernel"]),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        last(res, "probe/norms/grad/readout/bias"),
        np.linalg.norm(grads["readout"]["bias"]),
        rtol=1e-5,
    )
    assert res.history["time/probe_s"][-1] > 0


def test_schedules():
    total = 1000
    every = P.Schedule.every(100)
    assert [t for t in range(total + 1) if every.due(t, total)] == list(range(0, 1001, 100))
    assert every.next(0, total) == 100 and every.next(950, total) == 1000
    log = P.Schedule.log(4)
    due = [t for t in range(total + 1) if log.due(t, total)]
    assert due[:8] == [0, 1, 2, 3, 6, 10, 18, 32] and due[-1] == 1000 and 562 in due
    t, seen = 0, [0]
    while t < total:  # next() walks exactly the due steps
        t = log.next(t, total)
        seen.append(t)
    assert seen == due
    at = P.Schedule.at(7, 3, 3)
    assert at.steps == (3, 7) and not at.due(total, total) and at.next(3, total) == 7
    assert P.Schedule.parse("every:5") == P.Schedule.every(5)
    assert P.Schedule.parse("log:2") == P.Schedule.log(2)
    assert P.Schedule.parse("at:1,2").steps == (1, 2)
    assert not any(P.Schedule.parse("never").due(t, 10) for t in range(11))
    with pytest.raises(ValueError, match="bad schedule"):
        P.Schedule.parse("sometimes")
    with pytest.raises(ValueError, match="n >= 1"):
        P.Schedule.every(0)


def test_gate_stats_probe_needs_prm_with_gate_stats():
    params = {"w": jnp.ones(3)}
    opt_state = prm(1e-3).init(params)  # gate_stats off (the default)
    with pytest.raises(ValueError, match=r"gate_stats=True"):
        P.GateStats()(None, (), params, opt_state, 0)
    opt_state = prm(1e-3, gate_stats=True).init(params)
    _, scalars, _ = P.GateStats()(None, (), params, opt_state, 0)
    assert set(scalars) == {"gate_mean", "gate_open_fraction"}


@pytest.mark.parametrize("loss", ["squared", "softmax_ce"])
def test_dissipation_without_query_checkpoints_and_resumes_with_seeds(tmp_path, loss):
    """``Dissipation(query=False)`` with 3 vmapped seeds: it runs, checkpoints (no zero-size
    arrays in its state) and a resumed run ends bit-identical to an uninterrupted one."""
    train = make_data(0)
    if loss == "softmax_ce":
        train = {"x": train["x"], "y": (train["y"][:, 0] > 0).astype(np.int32)}
    precond = optim_state.adam_preconditioner(LR)

    def trainer(steps):
        return Trainer(
            TrainConfig(steps=steps, fuse=4, probe_size=N, seeds=3, checkpoint_every=10),
            apply_fn=APPLY,
            init_params=init,
            optimizer=optax.adam(LR),
            data=train,
            loss=loss,
            probes=[
                P.Dissipation(
                    P.Schedule.every(EVERY), preconditioner=precond, loss=loss, query=False
                )
            ],  # fmt: skip
        )

    full = trainer(STEPS).run(tmp_path / "full", progress=False)
    trainer(10).run(tmp_path / "part", progress=False)
    resumed = trainer(STEPS).run(tmp_path / "part", progress=False)
    state = full.probe_states["dissipation"]
    assert state.acc.G is None and state.kq is None and state.uq0 is None
    assert state.acc.W.shape == (3, 2 * N, 2 * N)
    key = "probe/dissipation/predicted_loss_drop"
    assert np.isfinite(full.history[key][-1]).all()
    np.testing.assert_array_equal(resumed.history[key], full.history[key])
    np.testing.assert_array_equal(
        resumed.probe_states["dissipation"].acc.W, full.probe_states["dissipation"].acc.W
    )


def _linear_problem():
    """A noisy linear regression (N examples, 3 inputs, 2 outputs) and a linear model in
    float64: ``(x, data, apply, init)``."""
    rng = np.random.RandomState(0)
    x = rng.randn(N, 3)
    data = {"x": x, "y": x @ rng.randn(3, 2) + 0.1 * rng.randn(N, 2)}
    apply = lambda w, x: x @ w["k"] + w["b"][None]
    init_w = lambda key: {
        "k": jax.random.normal(key, (3, 2), jnp.float64),
        "b": jnp.zeros(2, jnp.float64),
    }
    return x, data, apply, init_w


@pytest.mark.parametrize("method", ["dense", "lowrank"])
def test_augmented_identity_is_exact_for_momentum_and_weight_decay_on_a_linear_model(method):
    """EMA momentum with Adam's bias correction and decoupled weight decay on a linear model,
    full batch, float64: the augmented identity (dyntheory.momentum) holds to round-off, the
    momentum-free one does not; a complete low-rank basis (rank = n·p) is exact too."""
    beta, wd, lr = 0.9, 0.5, 0.05
    x, data, apply, init_w = _linear_problem()
    opt = optax.chain(optax.ema(beta, debias=True), optax.add_decayed_weights(wd), optax.scale(-lr))
    probe = P.Dissipation(
        P.Schedule.every(4), lr=lr, query=False, method=method, rank=2 * N,
        momentum=beta, first_moment=lambda s: s[0].ema, decay=lr * wd,
    )  # fmt: skip
    tr = Trainer(
        TrainConfig(steps=24, fuse=4, probe_size=N),
        apply_fn=apply, init_params=init_w, optimizer=opt, data=data, probes=[probe],
    )  # fmt: skip
    h = tr.run(progress=False).history
    rows = (h["step"] > 0) & (h["step"] % 4 == 0)  # the probe steps after the start
    aug = np.asarray(h["probe/dissipation/identity_rel_err_augmented"]).ravel()[rows]
    plain = np.asarray(h["probe/dissipation/identity_rel_err"]).ravel()[rows]
    assert len(aug) == 6 and aug.max() < 1e-9 and plain.max() > 5e-2


@pytest.mark.parametrize("method", ["dense", "lowrank"])
def test_second_order_switch_makes_gd_exact_at_a_large_step(method):
    """Plain GD on a linear model, squared loss, full batch, with ``λ_max(η B K)`` near 1.5: the
    momentum-free W_S is first order in η and misses; ``second_order=True`` runs the augmented
    recursion (β = λ = 0, with ``−½ Δuᵀ B Δu``), exact to round-off."""
    x, data, apply, init_w = _linear_problem()
    lam = np.linalg.eigvalsh(x @ x.T + 1)[-1] / N  # λ_max(B K), B = I/n
    lr = 1.5 / lam
    probe = P.Dissipation(
        P.Schedule.every(4), lr=lr, query=False, method=method, rank=2 * N, second_order=True
    )
    tr = Trainer(
        TrainConfig(steps=12, fuse=4, probe_size=N),
        apply_fn=apply, init_params=init_w, optimizer=optax.sgd(lr), data=data, probes=[probe],
    )  # fmt: skip
    h = tr.run(progress=False).history
    rows = (h["step"] > 0) & np.isfinite(np.asarray(h["probe/dissipation/time"]).ravel())
    aug = np.asarray(h["probe/dissipation/identity_rel_err_augmented"]).ravel()[rows]
    plain = np.asarray(h["probe/dissipation/identity_rel_err"]).ravel()[rows]
    bk = np.asarray(h["probe/dissipation/bk_lambda_max"]).ravel()[rows]
    np.testing.assert_allclose(bk, 1.5, rtol=1e-6)
    assert len(aug) == 3 and aug.max() < 1e-9 and plain.min() > 0.1


def test_augmented_identity_bad_inputs():
    with pytest.raises(ValueError, match="needs first_moment"):
        P.Dissipation(momentum=0.9)
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\)"):
        P.Dissipation(momentum=1.0, first_moment=optim_state.first_moment)
    with pytest.raises(ValueError, match=r"decay must lie in \[0, 1\)"):
        P.Dissipation(decay=-0.1)
    with pytest.raises(ValueError, match="neither ScaleByAdamState"):
        optim_state.first_moment(optax.sgd(0.1).init({"w": jnp.ones(2)}))
