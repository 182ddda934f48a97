"""The cheaper refresh integrators of :class:`dyntheory.probes.Dissipation` (THEORY.md §10,
"Warm starts and error control"): the warm-started low-rank refresh against the cold one and
the closed form, and the adaptive schedule's refresh decisions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dyntheory import lowrank
from dyntheory import probes as P
from dyntheory.engine import Trainer
from dyntheory.engine.config import TrainConfig
from dyntheory.models import MLP, functional
from dyntheory.optim import state as optim_state
from dyntheory.probes import dissipation_refresh as refresh
from dyntheory.probes.base import ProbeContext

N, D = 24, 12
X = jax.random.normal(jax.random.key(0), (N, D))
Y = jax.random.normal(jax.random.key(1), (N, 1))
LABELS = jax.random.randint(jax.random.key(3), (N,), 0, 3)
LINEAR = lambda w, x: x @ w  # K = X Xᵀ whatever w: the kernel does not move


def _mlp(params, x):
    return jnp.tanh(x @ params["w1"]) @ params["w2"]


def _mlp_params(p_out):
    k1, k2 = jax.random.split(jax.random.key(2))
    return {
        "w1": jax.random.normal(k1, (D, 16)) / np.sqrt(D),
        "w2": jax.random.normal(k2, (16, p_out)) / 4,
    }


def _ctx(apply_fn, y):
    return ProbeContext(apply_fn, None, None, {"x": X, "y": y}, None, None, None)


def _run(probe, apply_fn, params, y, steps=6, lr=0.1):
    """GD on the probe set's own loss, the probe called after every step: the rows."""
    ctx = _ctx(apply_fn, y)
    loss = lambda w: probe_loss(probe, apply_fn, w, y)
    call = jax.jit(lambda st, w, t: probe(ctx, st, w, None, t))
    state, rows = jax.jit(lambda w: probe.init(ctx, w, None))(params), []
    for t in range(1, steps + 1):
        params = jax.tree.map(lambda w, g: w - lr * g, params, jax.grad(loss)(params))
        state, s, _ = call(state, params, jnp.int32(t))
        rows.append({k: float(v) for k, v in s.items()})
    return rows, state


def probe_loss(probe, apply_fn, w, y):
    u = apply_fn(w, X)
    if probe.loss == "squared":
        return 0.5 * jnp.mean(jnp.sum((u - y) ** 2, -1))
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(u), y[:, None], 1))


def test_warm_refresh_equals_the_cold_one_and_the_closed_form_on_a_static_kernel():
    """Linear model: K = X Xᵀ. The cold refresh (Lanczos to N steps) gives eigh's top pairs; the
    warm one, seeded with them, gives the same for 2·4 + 8 + R products instead of N + N + R."""
    probe = P.Dissipation(
        lr=0.1, query=False, method="lowrank", rank=12, lanczos_vectors=4, warm_start=True
    )
    w0 = 0.1 * jax.random.normal(jax.random.key(2), (D, 1))
    ctx, u = _ctx(LINEAR, Y), LINEAR(w0, X)
    basis = lowrank.init(N, 12)
    cold = refresh.refresh_lowrank(probe, ctx, w0, None, jnp.int32(0), basis, u)
    warm = refresh.refresh_lowrank(probe, ctx, w0, None, jnp.int32(1), basis, u, cold.ritz)
    lam, vec = np.linalg.eigh(np.asarray(X @ X.T))
    lam, vec = lam[::-1], vec[:, ::-1]
    for r in (cold, warm):
        cos = np.abs(np.sum(np.asarray(r.ritz[0]) * vec[:, :4], axis=0))
        np.testing.assert_allclose(cos, 1.0, atol=1e-10)  # eigenvectors up to sign
        np.testing.assert_allclose(r.mu[0], 0.1 * lam[0] / N, rtol=1e-12)  # λ_max(η K / n)
        np.testing.assert_allclose(np.abs(r.ritz[1] @ vec[:, 0]), 1.0, atol=1e-10)
    np.testing.assert_allclose(warm.k, cold.k, atol=1e-10)
    assert (int(cold.products), int(warm.products)) == (N + N + 12, 2 * 4 + 4 * 2 + 12)


def test_warm_start_along_a_run_on_a_static_kernel_equals_cold():
    kw = dict(lr=0.1, query=False, method="lowrank", rank=12, lanczos_vectors=4)
    w0 = 0.1 * jax.random.normal(jax.random.key(2), (D, 1))
    cold, _ = _run(P.Dissipation(**kw), LINEAR, w0, Y)
    warm, state = _run(P.Dissipation(**kw, warm_start=True), LINEAR, w0, Y)
    for a, b in zip(cold, warm, strict=True):
        for key in ("identity_rel_err", "predicted_loss_drop", "w_lambda_max", "bk_lambda_max"):
            np.testing.assert_allclose(b[key], a[key], rtol=1e-9, atol=1e-14)
    assert [r["refreshes"] for r in warm] == list(range(2, 8))
    assert warm[-1]["ntk_products"] == (N + N + 12) + 6 * (2 * 4 + 4 * 2 + 12)
    assert state.ritz[0].shape == (N, 4)


def test_adaptive_schedule_never_refreshes_a_static_kernel_after_the_first():
    probe = P.Dissipation(lr=0.1, query=False, method="lowrank", rank=12, lanczos_vectors=4,
                          refresh_tol=1e-8)  # fmt: skip
    w0 = 0.1 * jax.random.normal(jax.random.key(2), (D, 1))
    rows, _ = _run(probe, LINEAR, w0, Y)
    assert all(r["refreshes"] == 1 for r in rows)
    assert max(r["monitor"] for r in rows) < 1e-12
    # the first refresh, then one product per probe step for the monitor
    assert [r["ntk_products"] for r in rows] == [N + N + 12 + t for t in range(1, 7)]


def test_adaptive_schedule_refreshes_a_moving_kernel_where_the_monitor_passes():
    kw = dict(lr=0.5, query=False, method="lowrank", rank=12, lanczos_vectors=4)
    rows, _ = _run(P.Dissipation(**kw, refresh_tol=0.1), _mlp, _mlp_params(1), Y, steps=8, lr=0.5)
    refreshes = np.array([1] + [r["refreshes"] for r in rows])
    did = np.diff(refreshes) == 1
    monitor = np.array([r["monitor"] for r in rows])
    assert 1 < refreshes[-1] < 9  # some probe steps refresh, some hold
    assert np.all(monitor[did] > 0.1) and np.all(monitor[~did] <= 0.1)


@pytest.mark.parametrize(
    "loss,compress,method",
    [
        ("squared", "product", "lowrank"),
        pytest.param("softmax_ce", "product", "lowrank", marks=pytest.mark.slow),
        pytest.param("softmax_ce", "factors", "lowrank", marks=pytest.mark.slow),
        ("softmax_ce", "product", "dense"),
    ],
)
def test_adaptive_schedule_with_a_tiny_tolerance_is_the_every_step_refresh(loss, compress, method):
    """Where the monitor always passes, the adaptive branch computes what the plain schedule
    does: the same rows (the monitor's path through ``lax.cond``, dense and low-rank, each
    form of the held generator, with a restart before ``start`` and the dense spectrum check)."""
    p_out = 1 if loss == "squared" else 3
    y = Y if loss == "squared" else LABELS
    kw = dict(lr=0.5, loss=loss, query=False, method=method, compress=compress, rank=12, start=2)
    kw |= dict(check_spectrum=3) if method == "lowrank" else {}
    params = _mlp_params(p_out)
    plain, _ = _run(P.Dissipation(**kw), _mlp, params, y, steps=4, lr=0.5)
    adaptive, _ = _run(P.Dissipation(**kw, refresh_tol=1e-30), _mlp, params, y, steps=4, lr=0.5)
    for a, b in zip(plain, adaptive, strict=True):
        keys = ["identity_rel_err", "predicted_loss_drop", "w_lambda_max", "bk_lambda_max"]
        for key in keys + (["spectrum_rel_err"] if method == "lowrank" else []):
            np.testing.assert_allclose(b[key], a[key], rtol=1e-9, atol=1e-14)
    # rows at or before the start describe the interval before a restart (1 + this step's)
    assert [r["refreshes"] for r in adaptive] == [2, 2, 2, 3]
    assert np.isnan(adaptive[1]["identity_rel_err"]) and np.isfinite(adaptive[2]["monitor"])
    assert all(0 < r["monitor"] < 10 for r in adaptive)


def test_bad_inputs():
    with pytest.raises(ValueError, match="warm_start=True.*lowrank"):
        P.Dissipation(warm_start=True)
    with pytest.raises(ValueError, match="warm_depth"):
        P.Dissipation(method="lowrank", warm_start=True, warm_depth=0)
    with pytest.raises(ValueError, match="refresh_tol"):
        P.Dissipation(refresh_tol=-1.0)


def test_warm_adaptive_probe_checkpoints_and_resumes_with_seeds(tmp_path):
    """Warm start and adaptive schedule, 2 vmapped seeds (the refresh decision per seed, a
    select): the state with its Ritz vectors and counters checkpoints, and a resumed run ends
    bit-identical to an uninterrupted one."""
    apply_fn, _ = functional(MLP(3, (8,), 2, activation="tanh", rngs=nnx.Rngs(0)))
    x = np.random.RandomState(0).randn(16, 3)
    data = {"x": x, "y": np.stack([np.sin(x.sum(1)), x[:, 0]], 1)}
    probe = P.Dissipation(
        P.Schedule.every(5), preconditioner=optim_state.adam_preconditioner(0.02), query=False,
        method="lowrank", rank=8, lanczos_vectors=2, warm_start=True, refresh_tol=0.05,
    )  # fmt: skip

    def trainer(steps):
        return Trainer(
            TrainConfig(steps=steps, fuse=5, probe_size=16, seeds=2, checkpoint_every=10),
            apply_fn=apply_fn,
            init_params=lambda key: functional(
                MLP(3, (8,), 2, activation="tanh", rngs=nnx.Rngs(key))
            )[1],
            optimizer=optax.adam(0.02),
            data=data,
            loss="squared",
            probes=[probe],
        )

    full = trainer(20).run(tmp_path / "full", progress=False)
    trainer(10).run(tmp_path / "part", progress=False)
    resumed = trainer(20).run(tmp_path / "part", progress=False)
    state = full.probe_states["dissipation"]
    assert state.ritz[0].shape == (2, 32, 2) and state.refreshes.shape == (2,)
    for key in ("predicted_loss_drop", "refreshes", "monitor", "ntk_products"):
        h = f"probe/dissipation/{key}"
        assert np.isfinite(full.history[h][-1]).all()
        np.testing.assert_array_equal(resumed.history[h], full.history[h])
