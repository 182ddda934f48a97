"""The dissipation accumulator: closed forms, exact discrete identities, first-order convergence.

Reference problem: a linear model ``u = Φ w`` (its NTK is exactly ``K = ΦΦᵀ``), squared loss,
full-batch GD; with fewer features than examples ``Φᵀ`` has a null space that the kernel kills.
"""

import decimal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dyntheory import dissipation, losses
from tests.helpers import assert_tree_shapes_dtypes_equal, log_slope, relative_error

N, D_FEAT, M = 12, 7, 6  # train examples, features (< N: Φᵀ has a null space), query examples


def linear_problem(seed: int = 0, n: int = N, d: int = D_FEAT, m: int = M):
    """Features, targets and kernels of a linear model, float64."""
    rng = np.random.default_rng(seed)
    phi = rng.normal(size=(n, d)) / np.sqrt(d)
    phi_q = rng.normal(size=(m, d)) / np.sqrt(d)
    y = rng.normal(size=n)
    return dict(phi=phi, phi_q=phi_q, y=y, K=phi @ phi.T, KQ=phi_q @ phi.T)


def run_linear_gd(prob, lr: float, steps: int):
    """Full-batch GD on the linear model from w = 0, with the accumulator refreshed every step.

    Returns the final state, the outputs at start and end, and V = η Σ_t P_tᵀ K B K P_t (the
    second-order term of the exact discrete loss identity).
    """
    n = prob["phi"].shape[0]
    B = losses.squared_out_hessian(n)
    K, KQ = jnp.asarray(prob["K"]), jnp.asarray(prob["KQ"])
    phi, phi_q, y = map(jnp.asarray, (prob["phi"], prob["phi_q"], prob["y"]))

    def step(carry, _):
        st, w, V = carry
        V = V + lr * st.P.T @ K @ (B * K) @ st.P
        st = dissipation.update(st, K, lr, out_hessian=B, k_query_train=KQ)
        w = w - lr * phi.T @ losses.squared_out_grad(phi @ w, y)
        return (st, w, V), None

    st0 = dissipation.init(n, phi_q.shape[0])
    w0 = jnp.zeros(phi.shape[1])
    (st, w, V), _ = jax.lax.scan(step, (st0, w0, jnp.zeros((n, n))), None, length=steps)
    return st, (phi @ w0, phi_q @ w0), (phi @ w, phi_q @ w), V


def naive_updates(st, K, lr, B, KQ, k):
    for _ in range(k):
        st = dissipation.update(st, K, lr, out_hessian=B, k_query_train=KQ)
    return st


def assert_states_close(a, b, atol):
    """Fields agree to ``atol`` times the field's scale (round-off of sums of O(scale) terms)."""
    for name, x, y in zip(a._fields, a, b, strict=True):
        scale = max(1.0, float(np.max(np.abs(y), initial=0.0)))
        np.testing.assert_allclose(x, y, rtol=0, atol=atol * scale, err_msg=name)


def random_psd(rng, n, rank=None):
    J = rng.normal(size=(n, rank or n + 3))
    return J @ J.T / J.shape[1]


def test_init_shapes_and_dtype():
    st = dissipation.init(5, 3)
    assert st.P.shape == st.W.shape == st.D.shape == (5, 5) and st.G.shape == (3, 5)
    assert st.P.dtype == jnp.float64  # conftest enables x64
    np.testing.assert_array_equal(st.P, np.eye(5))
    assert dissipation.init(5, dtype=jnp.float32).W.dtype == jnp.float32
    assert dissipation.init(4).G.shape == (0, 4)
    with jax.enable_x64(False), pytest.warns(UserWarning, match="float32"):
        assert dissipation.init(3).P.dtype == jnp.float32


@pytest.mark.parametrize("k", [0, 1, 2, 7, 40])
def test_closed_form_equals_naive_recursion_squared(k):
    rng = np.random.default_rng(1)
    K, K2, KQ = random_psd(rng, N), random_psd(rng, N, rank=4), rng.normal(size=(M, N))
    B = 1.0 / N
    st = dissipation.update(dissipation.init(N, M), K2, 0.4, out_hessian=B, k_query_train=KQ)
    fast = dissipation.update(st, K, 0.4, out_hessian=B, steps=k, k_query_train=KQ)
    traced = jax.jit(dissipation.update)(
        st, K, 0.4, out_hessian=B, steps=jnp.asarray(k), k_query_train=KQ
    )
    slow = naive_updates(st, K, 0.4, B, KQ, k)
    assert_states_close(fast, slow, atol=1e-13)
    assert_states_close(traced, slow, atol=1e-13)


@pytest.mark.parametrize("k", [0, 1, 3, 8, 37])
def test_closed_form_equals_naive_recursion_softmax(k):
    rng = np.random.default_rng(2)
    n_ex, p = 4, 3
    logits = jnp.asarray(rng.normal(size=(n_ex, p)))
    B = losses.softmax_out_hessian(logits)
    K, KQ = random_psd(rng, n_ex * p), rng.normal(size=(5, n_ex * p))
    st = dissipation.update(
        dissipation.init(n_ex * p, 5),
        random_psd(rng, n_ex * p),
        2.0,
        out_hessian=B,
        steps=2,
        k_query_train=KQ,
    )
    fast = dissipation.update(st, K, 2.0, out_hessian=B, steps=k, k_query_train=KQ)
    traced = jax.jit(dissipation.update)(
        st, K, 2.0, out_hessian=B, steps=jnp.asarray(k, jnp.int32), k_query_train=KQ
    )
    slow = naive_updates(st, K, 2.0, B, KQ, k)
    assert_states_close(fast, slow, atol=1e-13)
    assert_states_close(traced, slow, atol=1e-13)
    # Exact discrete identity for any B: P_{t+1} = P_t − η B K P_t telescopes to B D = I − P.
    np.testing.assert_allclose(B @ fast.D, np.eye(n_ex * p) - fast.P, atol=1e-13)


def test_matrix_out_hessian_cI_equals_scalar_path():
    rng = np.random.default_rng(3)
    K, KQ = random_psd(rng, N), rng.normal(size=(M, N))
    st = dissipation.init(N, M)
    a = dissipation.update(st, K, 0.3, out_hessian=0.25, steps=13, k_query_train=KQ)
    b = dissipation.update(st, K, 0.3, out_hessian=0.25 * jnp.eye(N), steps=13, k_query_train=KQ)
    assert_states_close(a, b, atol=1e-13)


def _decimal_sums(x: float, k: int):
    """Σ_{j<k} r^j, Σ_{j<k} r^{2j}, r^k for r = 1 − x with 60 significant digits."""
    decimal.getcontext().prec = 60
    r = 1 - decimal.Decimal(x)
    if k == 0:
        return 0.0, 0.0, 1.0
    if r == 1:
        return float(k), float(k), 1.0
    rk = r**k
    s1 = (1 - rk) / (1 - r)
    s2 = (1 - rk * rk) / (1 - r * r) if r * r != 1 else decimal.Decimal(k)
    return float(s1), float(s2), float(rk)


@pytest.mark.parametrize("k", [0, 1, 2, 3, 10, 1_000_001])
def test_geometric_sums_match_high_precision(k):
    # x = ηcλ: zero, tiny (r → 1 where the naive formula cancels), the oscillating range
    # 1 < x < 2 (r < 0), r = 0, r = −1, divergent x > 2 (only for small k), tiny negative
    # (eigh round-off).
    xs = [0.0, 1e-300, 1e-14, 1e-9, 1e-3, 0.3, 0.999, 1.0, 1.5, 1.999999, 2.0, -1e-13]
    if k < 100:
        xs += [2.5, -0.5]
    s1, s2, rk = dissipation._geometric_sums(jnp.asarray(xs), k, jnp.float64)
    # Relative precision, except an absolute k·eps where an alternating sum (r < 0) cancels.
    close = dict(rtol=1e-12, atol=1e-15 * max(k, 1))
    for i, x in enumerate(xs):
        e1, e2, erk = _decimal_sums(x, k)
        np.testing.assert_allclose(s1[i], e1, **close, err_msg=f"S1 x={x}")
        np.testing.assert_allclose(s2[i], e2, **close, err_msg=f"S2 x={x}")
        np.testing.assert_allclose(rk[i], erk, **close, err_msg=f"r^k x={x}")
    # Near r = 1 the relative precision is kept (a naive (1 − r^k)/(1 − r) would lose it).
    for i, x in enumerate(xs[:5]):
        e1, e2, _ = _decimal_sums(x, k)
        np.testing.assert_allclose([s1[i], s2[i]], [e1, e2], rtol=1e-13, err_msg=f"x={x}")


def test_linear_model_exact_discrete_identities():
    prob = linear_problem()
    lr, k = 0.5, 60
    st, (u0, uq0), (uT, uqT), V = run_linear_gd(prob, lr, k)
    g0 = losses.squared_out_grad(u0, prob["y"])
    eye = np.eye(N)
    # D = n(I − P) and the displacements are exact in discrete time for a linear model.
    np.testing.assert_allclose(st.D, N * (eye - st.P), atol=1e-13)
    np.testing.assert_allclose(uT - u0, -st.D @ g0, atol=1e-13)
    np.testing.assert_allclose(uqT - uq0, -st.G @ g0, atol=1e-13)
    np.testing.assert_allclose(losses.squared_out_grad(uT, prob["y"]), st.P @ g0, atol=1e-15)
    # Exactly: (n/2)(I − PᵀP) = W − (η/2) V,  V = η Σ_t P_tᵀ K B K P_t (telescoping sum), so the
    # loss identity Φ(s) − Φ(T) = g(s)ᵀ (W − (η/2)V) g(s) holds to round-off.
    np.testing.assert_allclose(st.W - lr / 2 * V, N / 2 * (eye - st.P.T @ st.P), atol=1e-13)
    drop = losses.squared_loss(u0, prob["y"]) - losses.squared_loss(uT, prob["y"])
    np.testing.assert_allclose(drop, g0 @ (st.W - lr / 2 * V) @ g0, rtol=1e-12)
    # One call with steps=k (closed form) gives the same state as k single steps.
    one = dissipation.update(
        dissipation.init(N, M), prob["K"], lr, out_hessian=1 / N, steps=k, k_query_train=prob["KQ"]
    )
    assert_states_close(one, st, atol=1e-13)


def test_linear_model_first_order_convergence_in_lr():
    """W → (n/2)(I − PᵀP) and Φ(s) − Φ(T) → g(s)ᵀ W g(s) at first order in η, at fixed ηk."""
    prob = linear_problem()
    T = 6.0
    lam, V = np.linalg.eigh(prob["K"])
    w_flow = V @ np.diag(N / 2 * -np.expm1(-2 * T * lam / N)) @ V.T  # gradient-flow Gramian
    lrs, err_w, err_flow, err_loss = [], [], [], []
    for k in (40, 80, 160, 320, 640):
        lr = T / k
        st, (u0, _), (uT, _), _ = run_linear_gd(prob, lr, k)
        g0 = losses.squared_out_grad(u0, prob["y"])
        drop = losses.squared_loss(u0, prob["y"]) - losses.squared_loss(uT, prob["y"])
        lrs.append(lr)
        err_w.append(np.linalg.norm(st.W - N / 2 * (np.eye(N) - st.P.T @ st.P)))
        err_flow.append(np.linalg.norm(st.W - w_flow))
        err_loss.append(abs(float(drop - g0 @ st.W @ g0)))
    for name, errs in (("W vs (n/2)(I-PtP)", err_w), ("W vs flow", err_flow), ("loss", err_loss)):
        slope = log_slope(lrs, errs)
        print(f"{name}: errors {np.array(errs)}, order {slope:.3f}")
        assert abs(slope - 1) < 0.1, (name, slope)


def test_kernel_null_space_is_dissipation_free():
    """Directions the kernel kills (ker Φᵀ) are in ker W, ker D and ker G: ker W ⊆ ker G."""
    prob = linear_problem()
    st, *_ = run_linear_gd(prob, 0.5, 50)
    null = np.linalg.svd(prob["phi"].T)[2][D_FEAT:].T  # (N, N − d) orthonormal basis of ker Φᵀ
    for name, op in (("W", st.W), ("D", st.D), ("G", st.G)):
        np.testing.assert_allclose(op @ null, 0, atol=1e-13, err_msg=name)
    np.testing.assert_allclose(st.P @ null, null, atol=1e-13)
    # ker W ⊆ ker G in full: every eigenvector of W with a (numerically) zero eigenvalue.
    lam, vecs = np.linalg.eigh(st.W)
    ker = vecs[:, lam < 1e-12 * lam.max()]
    assert ker.shape[1] == N - D_FEAT
    np.testing.assert_allclose(st.G @ ker, 0, atol=1e-12)


def test_W_symmetric_psd_after_many_updates():
    rng = np.random.default_rng(4)
    st = dissipation.init(N)
    for _ in range(200):
        K = random_psd(rng, N, rank=rng.integers(2, N + 1))
        st = dissipation.update(st, K, 0.5, out_hessian=1 / N, steps=int(rng.integers(0, 5)))
    assert st.W.dtype == jnp.float64
    np.testing.assert_array_equal(st.W, st.W.T)
    assert np.linalg.eigvalsh(np.asarray(st.W)).min() > -1e-12 * np.abs(st.W).max()


def test_jit_no_recompilation_when_lr_or_steps_change():
    traces = []

    @jax.jit
    def f(st, K, lr, k):
        traces.append(None)
        return dissipation.update(st, K, lr, out_hessian=1 / N, steps=k)

    rng = np.random.default_rng(5)
    st = dissipation.init(N)
    st1 = f(st, random_psd(rng, N), 0.1, jnp.asarray(3))
    st2 = f(st1, random_psd(rng, N), 0.2, jnp.asarray(5))
    assert len(traces) == 1
    assert_tree_shapes_dtypes_equal(st, st2)
    assert int(st2.count) == 8 and float(st2.time) == pytest.approx(0.3 + 1.0)


def test_coupling_frozen_kernel_is_kqs_kss_inverse():
    """Constant invertible kernel: G = K_QS S, D = K S with S a function of K, so A = K_QS K⁻¹."""
    rng = np.random.default_rng(6)
    K, KQ = random_psd(rng, N), rng.normal(size=(M, N))
    st = dissipation.update(
        dissipation.init(N, M), K, 0.2, out_hessian=1 / N, steps=30, k_query_train=KQ
    )
    A = dissipation.coupling(st)
    assert relative_error(A, KQ @ np.linalg.inv(K)) < 1e-10


def test_bad_inputs():
    st = dissipation.init(4, 2)
    K, KQ = jnp.eye(4), jnp.ones((2, 4))
    upd = lambda **kw: dissipation.update(
        **{"state": st, "k_train_train": K, "lr": 0.1, "out_hessian": 0.25, "k_query_train": KQ}
        | kw
    )
    with pytest.raises(ValueError, match="k_train_train must be a square matrix"):
        upd(k_train_train=jnp.ones((4, 3)))
    with pytest.raises(ValueError, match="k_train_train has shape .* 4 train outputs"):
        upd(k_train_train=jnp.eye(5))
    with pytest.raises(ValueError, match="k_query_train has shape"):
        upd(k_query_train=jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="pass k_query_train"):
        upd(k_query_train=None)
    with pytest.raises(ValueError, match="k_query_train has shape"):
        dissipation.update(dissipation.init(4), K, 0.1, out_hessian=0.25, k_query_train=KQ)
    with pytest.raises(ValueError, match="lr must be non-negative"):
        upd(lr=-0.1)
    with pytest.raises(ValueError, match="lr must be a scalar"):
        upd(lr=jnp.ones(2))
    with pytest.raises(ValueError, match="steps must be non-negative"):
        upd(steps=-1)
    with pytest.raises(ValueError, match="steps must be non-negative"):
        upd(steps=jnp.asarray(-2))
    with pytest.raises(ValueError, match="steps must be an integer"):
        upd(steps=2.0)
    with pytest.raises(ValueError, match="out_hessian must be a square matrix"):
        upd(out_hessian=jnp.ones(4))
    with pytest.raises(ValueError, match="out_hessian has shape"):
        upd(out_hessian=jnp.eye(3))
    with pytest.raises(ValueError, match="scalar out_hessian must be non-negative"):
        upd(out_hessian=-1.0)
    with pytest.raises(ValueError, match="n_train_out must be positive"):
        dissipation.init(0)
