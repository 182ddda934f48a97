"""The low-rank dissipation accumulator against the dense one, its truncation bound, and the
Dissipation probe's two methods on an MLP (squared loss and cross-entropy, GD and Adam)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dyntheory import dissipation, lowrank
from dyntheory import probes as P
from dyntheory.engine import TrainConfig, Trainer
from dyntheory.models import MLP, functional
from dyntheory.optim import state as optim_state
from dyntheory.probes.dissipation import PARTS, SUBS


def _psd(seed, n, decay=1.0):
    a = jax.random.normal(jax.random.key(seed), (n, n)) * jnp.arange(1.0, n + 1)[None] ** -decay
    return a @ a.T


def test_complete_basis_equals_the_dense_accumulator():
    """R = N: compressing by an orthogonal Q is a similarity transform, so every operator agrees
    with the dense recursion to round-off, for B = I/n and for a general PSD B, over intervals
    with different kernels."""
    n_out, n_q = 12, 5
    rng = np.random.RandomState(0)
    b = _psd(9, n_out) / n_out
    for hess in (1.0 / n_out, b):
        st = lowrank.extend(lowrank.init(n_out, n_out, n_q), jnp.asarray(rng.randn(n_out, n_out)))
        assert int(st.size) == n_out
        ref = dissipation.init(n_out, n_q)
        for i, steps in enumerate((1, 3, 7)):
            k, kq = _psd(i, n_out), jnp.asarray(rng.randn(n_q, n_out))
            h_r = hess if jnp.ndim(hess) == 0 else lowrank.compress(st, lambda v: hess @ v)
            st = lowrank.update(
                st, lowrank.compress(st, lambda v: k @ v), 0.3, out_hessian=h_r, steps=steps,
                kq_r=lowrank.compress_cross(st, lambda v: kq @ v),
            )  # fmt: skip
            ref = dissipation.update(ref, k, 0.3, out_hessian=hess, steps=steps, k_query_train=kq)
        got = lowrank.dense(st)
        for name in ("P", "W", "D", "G"):
            np.testing.assert_allclose(getattr(got, name), getattr(ref, name), atol=1e-10)


@pytest.mark.parametrize("r", [2, 5, 9])
def test_truncation_stays_within_the_stated_bound(r):
    """Frozen kernel, squared loss, Q = top-r eigenvectors: the missed gᵀ W g is non-negative
    and at most min(n/2, T λ_{r+1}) ‖g_⊥‖²."""
    n = 16
    k = _psd(3, n, 0.7)
    lam, vecs = jnp.linalg.eigh(k)
    lam, vecs = lam[::-1], vecs[:, ::-1]
    g = jax.random.normal(jax.random.key(4), (n,))
    lr, steps = 0.5, 40
    ref = dissipation.update(dissipation.init(n), k, lr, out_hessian=1 / n, steps=steps)
    st = lowrank.extend(lowrank.init(n, r), vecs[:, :r])
    st = lowrank.update(
        st, lowrank.compress(st, lambda v: k @ v), lr, out_hessian=1 / n, steps=steps
    )
    c = lowrank.coords(st, g)
    missed = float(g @ ref.W @ g - c @ st.acc.W @ c)
    bound = float(lowrank.truncation_bound(st, g, lam[r], lr * steps, n))
    assert -1e-10 <= missed <= bound + 1e-10
    assert missed > 0.1 * bound * 0 or r == n  # the bound is not vacuous: it is attained below
    assert bound <= 0.5 * n * float(jnp.sum((g - st.Q @ c) ** 2)) + 1e-12


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"rank must lie in \[1, n_out = 4\]"):
        lowrank.init(4, 5)
    with pytest.raises(ValueError, match="unknown Dissipation method 'sparse'"):
        P.Dissipation(method="sparse")
    with pytest.raises(ValueError, match="rank must be >= 1"):
        P.Dissipation(method="lowrank", rank=0)
    with pytest.raises(ValueError, match="n >= 1"):
        P.Schedule.every(0)


# ----------------------------------------------------------------------------- on an MLP

N, P_OUT, STEPS = 16, 2, 12
# float64 models: the two methods then differ by round-off, not by float32 kernels
MODEL = dict(activation="tanh", dtype=jnp.float64)
APPLY, _ = functional(MLP(3, (16,), P_OUT, rngs=nnx.Rngs(0), **MODEL))


def _init(key):
    return functional(MLP(3, (16,), P_OUT, rngs=nnx.Rngs(key), **MODEL))[1]


def _data(loss):
    rng = np.random.RandomState(1)
    x = rng.randn(N, 3)
    if loss == "squared":
        return {"x": x, "y": np.stack([np.sin(x.sum(1)), x[:, 0]], 1)}
    return {"x": x, "y": (x[:, 0] > 0).astype(np.int32)}


def _logged(history, key):
    """The values of ``key`` on the lines where it was logged."""
    v = history[key]
    return v[np.isfinite(v)]


def _run(loss, optimizer, devices=1, rank=N * P_OUT):
    lr = 0.05 if optimizer == "gd" else 0.005  # Adam's first steps are large: stay stable
    opt = optax.sgd(lr) if optimizer == "gd" else optax.adam(lr)
    precond = None if optimizer == "gd" else optim_state.adam_preconditioner(lr)
    common = dict(lr=lr, preconditioner=precond, loss=loss, query=False)
    sched = P.Schedule.every(3)
    tr = Trainer(
        TrainConfig(steps=STEPS, fuse=4, probe_size=N, devices=devices),
        apply_fn=APPLY,
        init_params=_init,
        optimizer=opt,
        data=_data(loss),
        loss=loss,
        probes=[
            P.Dissipation(sched, name="dense", implementation="jacobian", **common),
            # lanczos_vectors=rank: the basis is filled at the first refresh
            P.Dissipation(
                sched, name="low", method="lowrank", rank=rank, lanczos_vectors=rank, **common
            ),
        ],
    )
    return tr.run(progress=False)


@pytest.mark.parametrize("loss", ["squared", "softmax_ce"])
@pytest.mark.parametrize("optimizer", ["gd", "adam"])
def test_lowrank_equals_dense_on_an_mlp_with_a_complete_basis(loss, optimizer):
    res = _run(loss, optimizer)
    h = res.history
    for key in ("w_lambda_max", "g0_channel", "g_channel", "predicted_loss_drop", "loss_drop"):
        np.testing.assert_allclose(
            h[f"probe/low/{key}"][1:], h[f"probe/dense/{key}"][1:], rtol=1e-6, atol=1e-12
        )
    top_d, top_l = res.arrays["dense/w_eigenvalues"][-1], res.arrays["low/w_eigenvalues"][-1]
    np.testing.assert_allclose(top_l[:8], top_d[:8], rtol=1e-6, atol=1e-12 * top_d[0])
    np.testing.assert_allclose(
        h["probe/low/bk_lambda_max"][1:], h["probe/dense/bk_lambda_max"][1:], rtol=1e-4
    )
    # the compressed step's μ_min (not a fixed 0): the stability of a complete basis is dense's
    for key in ("stability", "stability_max"):
        np.testing.assert_allclose(h[f"probe/low/{key}"], h[f"probe/dense/{key}"], rtol=1e-4)
    if loss == "squared" and optimizer == "gd":  # B = I/n invertible: every μ > 0, stable < 1
        assert np.all(_logged(h, "probe/dense/stability") < 1)
    # softmax: the basis lies in range(Π), the complement of the N per-example logit shifts
    full = N * P_OUT if loss == "squared" else N * (P_OUT - 1)
    assert np.all(_logged(h, "probe/low/basis_size") == full)
    err = _logged(h, "probe/dense/identity_rel_err")
    assert len(err) == STEPS // 3 + 1 and err[0] == 0  # the empty interval at step 0 reads 0


def test_lowrank_truncated_on_an_mlp_reports_what_it_tracks():
    res = _run("squared", "gd", rank=6)
    h = res.history
    assert np.all(_logged(h, "probe/low/basis_size") == 6)
    assert np.all(_logged(h, "probe/low/predicted_loss_drop") >= 0)  # W_r is PSD
    assert np.all(np.isfinite(_logged(h, "probe/low/identity_rel_err")))
    tracked = _logged(h, "probe/low/g0_tracked")
    assert np.all((tracked > 0) & (tracked <= 1 + 1e-9))


def test_lowrank_on_8_devices_equals_1_device():
    one, eight = _run("softmax_ce", "adam", devices=1), _run("softmax_ce", "adam", devices=8)
    for key in ("w_lambda_max", "g0_channel", "predicted_loss_drop"):
        np.testing.assert_allclose(
            eight.history[f"probe/low/{key}"], one.history[f"probe/low/{key}"], rtol=1e-5
        )


def test_ntk_spectrum_lanczos_matches_dense_on_the_probe_set():
    """The matrix-free spectrum (Lanczos top-k, Hutchinson trace, SLQ density) against eigh."""
    sched = P.Schedule.every(6)
    tr = Trainer(
        TrainConfig(steps=6, fuse=3, probe_size=N),
        apply_fn=APPLY,
        init_params=_init,
        optimizer=optax.sgd(0.05),
        data=_data("squared"),
        probes=[
            P.NTKSpectrum(sched, name="dense", top_k=8),
            P.NTKSpectrum(sched, name="lz", top_k=8, method="lanczos", lanczos_iters=N * P_OUT),
        ],
    )
    res = tr.run(progress=False)
    np.testing.assert_allclose(
        res.arrays["lz/eigenvalues"], res.arrays["dense/eigenvalues"], rtol=1e-6
    )
    h = res.history
    trace, se = _logged(h, "probe/lz/trace"), _logged(h, "probe/lz/trace_se")
    assert np.all(np.abs(trace - _logged(h, "probe/dense/trace")) < 4 * se)
    grid, density = res.arrays["lz/density_grid"][-1], res.arrays["lz/density"][-1]
    assert abs(np.sum(density) * (grid[1] - grid[0]) - 1.0) < 0.05


def test_dissipation_start_restarts_until_the_start_step():
    sched = P.Schedule.every(3)
    common = dict(lr=0.05, query=False)
    tr = Trainer(
        TrainConfig(steps=9, fuse=3, probe_size=N),
        apply_fn=APPLY,
        init_params=_init,
        optimizer=optax.sgd(0.05),
        data=_data("squared"),
        probes=[
            P.Dissipation(sched, name="d0", **common),
            P.Dissipation(sched, name="d3", start=3, **common),
        ],
    )
    res = tr.run(progress=False)
    h = res.history
    t0, t3 = _logged(h, "probe/d0/time"), _logged(h, "probe/d3/time")  # steps 0, 3, 6, 9
    # step 3 reports [0, 3) and restarts the accumulator there: later values are W_S(3, t)
    np.testing.assert_allclose(t3[:2], t0[:2], atol=1e-12)
    np.testing.assert_allclose(t3[2:], t0[2:] - 0.15, atol=1e-12)
    assert int(res.probe_states["d3"].t) == 9
    # the rows at or before the start are flagged and show no checks; later rows start at s = 3
    before = _logged(h, "probe/d3/before_start")
    np.testing.assert_array_equal(before, [1, 1, 0, 0])
    err = h["probe/d3/identity_rel_err"][np.isfinite(h["probe/d3/before_start"])]
    assert np.all(np.isnan(err[:2])) and np.all(np.isfinite(err[2:]))
    np.testing.assert_array_equal(_logged(h, "probe/d3/start_step")[2:], [3, 3])
    assert np.all(_logged(h, "probe/d0/before_start") == 0)


@pytest.mark.parametrize("rank", [N * P_OUT, 8])
def test_lowrank_four_cells_equal_dense_with_a_complete_basis_and_add_up_truncated(rank):
    """``cells=True`` in the low-rank basis: a complete basis gives dense's four cells; a truncated
    one still splits ``‖g_part‖²`` exactly (the untracked part counts as reservoir)."""
    data = _data("squared")
    rng = np.random.RandomState(2)
    data = dict(data, y_clean=data["y"], y=data["y"] + 0.3 * rng.randn(*data["y"].shape))
    test = {"x": rng.randn(8, 3), "y": np.zeros((8, P_OUT))}
    common = dict(lr=0.05, cells=True, mode="dissipated_fraction", threshold=0.5)
    sched = P.Schedule.every(4)
    tr = Trainer(
        TrainConfig(steps=8, fuse=4, probe_size=N),
        apply_fn=APPLY, init_params=_init, optimizer=optax.sgd(0.05), data=data,
        eval_sets={"test": test},
        probes=[
            P.Dissipation(sched, name="dense", implementation="jacobian", **common),
            P.Dissipation(
                sched, name="low", method="lowrank", rank=rank, lanczos_vectors=rank, **common
            ),
        ],
    )  # fmt: skip
    h = tr.run(progress=False).history
    cells = [f"{w}_{p}_{s}" for w in ("train", "dissipated", "test") for p in PARTS for s in SUBS]
    if rank == N * P_OUT:
        for key in cells:
            d = _logged(h, f"probe/dense/{key}")
            np.testing.assert_allclose(
                _logged(h, f"probe/low/{key}"), d, rtol=1e-6, atol=1e-10 * np.abs(d).max()
            )
    for part in PARTS:
        low = sum(_logged(h, f"probe/low/train_{part}_{s}") for s in SUBS)
        dense = sum(_logged(h, f"probe/dense/train_{part}_{s}") for s in SUBS)
        np.testing.assert_allclose(low, dense, rtol=1e-9)


def test_compressed_product_is_exact_on_a_span_that_b_k_maps_into_itself():
    """Softmax-like ``B`` (per-example blocks with ``B 1 = 0``): on ``Q = orth(B^{1/2} V)``, ``V``
    leading eigenvectors of ``B^{1/2} K B^{1/2}``, the compressed product ``Qᵀ B K Q`` gives
    ``gᵀ W g`` of the dense recursion for every ``g`` in the span; the product of the compressed
    factors ``(QᵀBQ)(QᵀKQ)`` does not."""
    from dyntheory import losses

    n, p, r, lr, steps = 5, 3, 4, 0.5, 7
    rng = np.random.RandomState(0)
    logits = rng.randn(n, p)
    b = np.asarray(losses.softmax_out_hessian(jnp.asarray(logits)))
    k = _psd(3, n * p)
    lam_b, v_b = np.linalg.eigh(b)
    root = (v_b * np.sqrt(np.maximum(lam_b, 0))) @ v_b.T
    v = np.linalg.eigh(root @ k @ root)[1][:, -r:]
    q = np.linalg.qr(root @ v)[0]
    dense = dissipation.update(dissipation.init(n * p), k, lr, out_hessian=b, steps=steps)
    st = lowrank.extend(lowrank.init(n * p, r), q)
    k_r, b_r, bk_r = lowrank.compress_product(st, lambda x: k @ x, lambda x: b @ x)
    np.testing.assert_allclose(bk_r, q.T @ b @ k @ q, atol=1e-12)
    prod = lowrank.update(st, k_r, lr, out_hessian=b_r, steps=steps, generator=bk_r)
    fact = lowrank.update(st, k_r, lr, out_hessian=b_r, steps=steps)
    c = rng.randn(r, 3)
    g = np.asarray(st.Q) @ c
    want = np.diag(g.T @ np.asarray(dense.W) @ g)
    np.testing.assert_allclose(np.diag(c.T @ np.asarray(prod.acc.W) @ c), want, rtol=1e-10)
    assert np.max(np.abs(np.diag(c.T @ np.asarray(fact.acc.W) @ c) / want - 1)) > 1e-3


def test_logit_shift_free_projects_out_softmax_ker_b():
    from dyntheory import losses

    rng = np.random.RandomState(1)
    logits, v = jnp.asarray(rng.randn(4, 3)), jnp.asarray(rng.randn(12, 2))
    pv = losses.logit_shift_free(v, 3)
    np.testing.assert_allclose(np.asarray(pv).reshape(4, 3, 2).sum(1), 0, atol=1e-12)
    np.testing.assert_allclose(losses.logit_shift_free(pv, 3), pv, atol=1e-12)  # a projector
    b = losses.softmax_out_hessian(logits)
    np.testing.assert_allclose(b @ pv, b @ v, atol=1e-12)  # only ker B was removed


@pytest.mark.parametrize("rank", [N * (P_OUT - 1), 5])
def test_check_spectrum_reports_the_low_rank_spectrum_against_a_dense_probe(rank):
    """``check_spectrum=k`` (softmax, Adam): its ``spectrum_rel_err`` is the top-k comparison with
    a separate dense probe's spectrum (cross-implementation); 0 to round-off with a basis that
    spans range(Π) (modulo the logit shifts), > 0 and reported when truncated."""
    lr = 0.005
    common = dict(
        lr=lr, preconditioner=optim_state.adam_preconditioner(lr), loss="softmax_ce",
        query=False, start=3,
    )  # fmt: skip
    sched = P.Schedule.every(3)
    tr = Trainer(
        TrainConfig(steps=9, fuse=3, probe_size=N),
        apply_fn=APPLY, init_params=_init, optimizer=optax.adam(lr), data=_data("softmax_ce"),
        loss="softmax_ce",
        probes=[
            P.Dissipation(sched, name="dense", implementation="jacobian", **common),
            P.Dissipation(sched, name="low", method="lowrank", rank=rank, lanczos_vectors=rank,
                          check_spectrum=3, **common),
        ],
    )  # fmt: skip
    res = tr.run(progress=False)
    h = res.history
    after = _logged(h, "probe/low/before_start") == 0
    err = _logged(h, "probe/low/spectrum_rel_err")
    assert len(err) == after.sum() == 2  # NaN (not shown) at and before the start
    d, lo = res.arrays["dense/w_eigenvalues"][-1][:3], res.arrays["low/w_eigenvalues"][-1][:3]
    np.testing.assert_allclose(err[-1], np.max(np.abs(lo - d) / d), rtol=1e-6)
    np.testing.assert_allclose(_logged(h, "probe/low/w_lambda_max_dense")[-1], d[0], rtol=1e-9)
    if rank == N * (P_OUT - 1):
        assert err.max() < 1e-6
    else:
        assert err.max() > 1e-6
