"""Spectra: dense eigh, Lanczos against eigh, summaries against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dyntheory import krylov, spectrum
from dyntheory.linear import linear_ntk


def _random_psd(seed, dim, decay=None):
    """Random orthogonal basis with eigenvalues k^(−decay) (or a Wishart matrix if None)."""
    rng = np.random.default_rng(seed)
    if decay is None:
        x = rng.normal(size=(dim, 2 * dim))
        return jnp.asarray(x @ x.T / (2 * dim))
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return jnp.asarray((q * np.arange(1, dim + 1) ** -decay) @ q.T)


def _assert_vectors_match_up_to_sign(u, v, atol):
    u, v = np.asarray(u), np.asarray(v)
    for i in range(u.shape[1]):
        err = min(np.linalg.norm(u[:, i] - v[:, i]), np.linalg.norm(u[:, i] + v[:, i]))
        assert err < atol, f"eigenvector {i}: error {err:.2e}"


# ----------------------------------------------------------------------------- eigh


def test_eigh_descending_columns_reconstruct():
    k = _random_psd(0, 30)
    lam, v = spectrum.eigh(k)
    assert lam.shape == (30,) and v.shape == (30, 30)
    assert np.all(np.diff(np.asarray(lam)) <= 0)
    np.testing.assert_allclose(v @ jnp.diag(lam) @ v.T, k, atol=1e-12)
    np.testing.assert_allclose(k @ v[:, 0], lam[0] * v[:, 0], atol=1e-12)


def test_eigh_float64_upcast():
    k32 = _random_psd(1, 20).astype(jnp.float32)
    lam, v = spectrum.eigh(k32, dtype=jnp.float64)
    assert lam.dtype == jnp.float64 and v.dtype == jnp.float64
    np.testing.assert_allclose(
        lam, np.linalg.eigvalsh(np.asarray(k32, np.float64))[::-1], rtol=1e-12
    )
    assert spectrum.eigh(k32)[0].dtype == jnp.float32


def test_eigh_float64_without_x64_says_how_to_fix():
    with jax.enable_x64(False), pytest.raises(ValueError, match="jax_enable_x64"):
        spectrum.eigh(jnp.eye(3, dtype=jnp.float32), dtype=jnp.float64)


def test_eigh_rejects_non_square_and_asymmetric():
    with pytest.raises(ValueError, match="square"):
        spectrum.eigh(jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="square"):
        spectrum.eigh(jnp.ones(3))
    with pytest.raises(ValueError, match="not symmetric"):
        spectrum.eigh(jnp.triu(jnp.ones((4, 4))))


def test_eigh_under_jit():
    k = _random_psd(2, 10)
    lam, _ = jax.jit(spectrum.eigh)(k)
    np.testing.assert_allclose(lam, spectrum.eigh(k)[0], atol=1e-12)


# ----------------------------------------------------------------------------- Lanczos


@pytest.mark.parametrize(
    ("decay", "dim", "k", "num_iters"),
    [(1.5, 200, 8, None), (1.0, 150, 5, 80), (None, 60, 6, 60)],  # power laws; Wishart, full
)
def test_lanczos_matches_dense_eigh(decay, dim, k, num_iters):
    a = _random_psd(3, dim, decay)
    lam_ref, v_ref = spectrum.eigh(a)
    lam, v = krylov.lanczos_topk(
        lambda x: a @ x, dim, k, key=jax.random.PRNGKey(0), num_iters=num_iters
    )
    assert lam.shape == (k,) and v.shape == (dim, k) and lam.dtype == jnp.float64
    np.testing.assert_allclose(lam, lam_ref[:k], rtol=1e-8, atol=1e-12)
    _assert_vectors_match_up_to_sign(v, v_ref[:, :k], atol=1e-6)
    np.testing.assert_allclose(v.T @ v, jnp.eye(k), atol=1e-12)


def test_lanczos_on_linear_model_ntk_operator():
    """Top-k of ΦΦᵀ through J(Jᵀv) of f(θ) = Φθ; the rank (40) is below num_iters (breakdown)."""
    n, p_dim, k = 150, 40, 10
    phi = (
        jax.random.normal(jax.random.PRNGKey(0), (n, p_dim))
        * jnp.arange(1.0, p_dim + 1)[None] ** -1
    )
    theta = jnp.zeros(p_dim)
    f = lambda th: phi @ th

    def ntk_matvec(v):  # J (Jᵀ v), never forming K
        (jt_v,) = jax.vjp(f, theta)[1](v)
        return jax.jvp(f, (theta,), (jt_v,))[1]

    lam_ref, v_ref = spectrum.eigh(linear_ntk(phi))
    lam, v = krylov.lanczos_topk(ntk_matvec, n, k, key=jax.random.PRNGKey(1), num_iters=60)
    np.testing.assert_allclose(lam, lam_ref[:k], rtol=1e-8)
    _assert_vectors_match_up_to_sign(v, v_ref[:, :k], atol=1e-6)
    # Past the rank the Ritz values are the zero eigenvalues, and no NaN appears.
    lam_all, v_all = krylov.lanczos_topk(ntk_matvec, n, 45, key=jax.random.PRNGKey(1), num_iters=60)
    assert np.all(np.isfinite(np.asarray(v_all)))
    np.testing.assert_allclose(lam_all[:p_dim], lam_ref[:p_dim], rtol=1e-8)
    assert np.max(np.abs(np.asarray(lam_all[p_dim:]))) < 1e-10 * float(lam_ref[0])


def test_lanczos_jits_and_runs_in_float32():
    a = _random_psd(4, 80, 1.5)
    run = jax.jit(lambda key: krylov.lanczos_topk(lambda x: a.astype(x.dtype) @ x, 80, 4, key=key))
    lam, _ = run(jax.random.PRNGKey(0))
    np.testing.assert_allclose(lam, spectrum.eigh(a)[0][:4], rtol=1e-10)
    lam32, _ = krylov.lanczos_topk(
        lambda x: a.astype(jnp.float32) @ x, 80, 4, key=jax.random.PRNGKey(0), dtype=jnp.float32
    )
    assert lam32.dtype == jnp.float32
    np.testing.assert_allclose(lam32, spectrum.eigh(a)[0][:4], rtol=1e-5)


def test_lanczos_bad_inputs():
    mv = lambda x: x
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="1 <= k <= dim"):
        krylov.lanczos_topk(mv, 5, 6, key=key)
    with pytest.raises(ValueError, match="num_iters"):
        krylov.lanczos_topk(mv, 10, 4, key=key, num_iters=3)
    with pytest.raises(ValueError, match="num_iters"):
        krylov.lanczos_topk(mv, 10, 4, key=key, num_iters=11)
    with pytest.raises(ValueError, match="matvec must map"):
        krylov.lanczos_topk(lambda x: x[:3], 10, 2, key=key)
    with jax.enable_x64(False), pytest.raises(ValueError, match="jax_enable_x64"):
        krylov.lanczos_topk(mv, 10, 2, key=key, dtype=jnp.float64)


# ----------------------------------------------------------------------------- summaries


def test_summaries_on_diagonal_matrix_by_hand():
    lam = np.array([4.0, 3.0, 2.0, 1.0, 0.0])
    k = jnp.diag(jnp.asarray(lam[::-1]))  # order must not matter
    p = lam[:4] / 10.0
    expected = {
        "lambda_max": 4.0,
        "lambda_min": 0.0,
        "trace": 10.0,
        "effective_rank_participation": 100.0 / 30.0,
        "effective_rank_entropy": np.exp(-np.sum(p * np.log(p))),
        "condition_number": 4.0,  # the zero eigenvalue is outside the numerical range
        "gd_stability_lr": 2 * 5 / 4.0,
    }
    for source in (k, jnp.asarray(lam)):
        got = spectrum.summaries(source, n=5)
        assert set(got) == set(expected)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-12, err_msg=name)
    assert float(spectrum.effective_rank(k, "entropy")) == pytest.approx(
        expected["effective_rank_entropy"], rel=1e-12
    )
    assert float(spectrum.gd_stability_lr(4.0, 5)) == pytest.approx(2.5)


def test_effective_ranks_of_flat_spectrum_equal_its_rank():
    k = jnp.diag(jnp.array([2.0, 2.0, 2.0, 0.0]))
    assert float(spectrum.participation_ratio(k)) == pytest.approx(3.0)
    assert float(spectrum.entropy_effective_rank(k)) == pytest.approx(3.0)
    assert float(spectrum.condition_number(k)) == pytest.approx(1.0)
    assert float(spectrum.condition_number(jnp.array([1.0, 1e-3]), rtol=1e-2)) == pytest.approx(1.0)


def test_kernel_target_alignment():
    y = jax.random.normal(jax.random.PRNGKey(0), (6, 3))
    v = y.reshape(-1)  # example-major
    assert float(spectrum.kernel_target_alignment(jnp.outer(v, v), y)) == pytest.approx(1.0)
    assert float(spectrum.kernel_target_alignment(jnp.outer(v, v), v)) == pytest.approx(1.0)
    # Identity: ⟨I, yyᵀ⟩ = ‖y‖², ‖I‖_F = √N, ‖yyᵀ‖_F = ‖y‖².
    assert float(spectrum.kernel_target_alignment(jnp.eye(18), y)) == pytest.approx(18**-0.5)
    # Trace kernel (n, n) with targets (n, p): T = YYᵀ.
    assert float(spectrum.kernel_target_alignment(y @ y.T, y)) == pytest.approx(1.0)
    # Integer labels: one-hot for the full kernel, "same class" for the trace kernel.
    labels = jnp.array([0, 2, 1, 2, 0, 1])
    onehot = jax.nn.one_hot(labels, 3, dtype=jnp.float64)
    u = onehot.reshape(-1)
    assert float(spectrum.kernel_target_alignment(jnp.outer(u, u), labels)) == pytest.approx(1.0)
    assert float(spectrum.kernel_target_alignment(onehot @ onehot.T, labels)) == pytest.approx(1.0)
    got = spectrum.summaries(jnp.outer(v, v), targets=y)
    assert float(got["kernel_target_alignment"]) == pytest.approx(1.0)
    assert float(got["gd_stability_lr"]) == pytest.approx(2 * 6 / float(v @ v))  # n from targets


def test_power_law_exponent():
    ranks = np.arange(1, 101)
    eigs = 3.0 * ranks**-1.7
    assert spectrum.power_law_exponent(eigs, 1, 100) == pytest.approx(1.7, rel=1e-10)
    a, c = spectrum.power_law_exponent(eigs[::-1], 10, 50, return_prefactor=True)
    assert (a, c) == (pytest.approx(1.7, rel=1e-10), pytest.approx(3.0, rel=1e-10))


def test_summary_bad_inputs():
    with pytest.raises(ValueError, match="square"):
        spectrum.summaries(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="needs the kernel matrix"):
        spectrum.summaries(jnp.ones(3), targets=jnp.ones(3))
    with pytest.raises(ValueError, match="do not match"):
        spectrum.kernel_target_alignment(jnp.eye(6), jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="do not divide"):
        spectrum.kernel_target_alignment(jnp.eye(7), jnp.array([0, 1, 1]))
    with pytest.raises(ValueError, match="unknown effective-rank kind"):
        spectrum.effective_rank(jnp.eye(3), "stable")
    with pytest.raises(ValueError, match="1-based"):
        spectrum.power_law_exponent(np.ones(5), 0, 3)
    with pytest.raises(ValueError, match="positive"):
        spectrum.power_law_exponent(np.array([3.0, 2.0, 0.0]), 1, 3)


# ----------------------------------------------------------------------------- SLQ and trace


def test_slq_density_moments_and_hutchinson_trace():
    """SLQ reproduces the spectral moments (exact for q < 2m up to the probe average) and the
    density integrates to one; Hutchinson's trace falls within 4 standard errors (fixed key)."""
    a = _random_psd(5, 300, 1.0)
    lam = np.asarray(spectrum.eigh(a)[0])
    mv = lambda x: a @ x
    grid = jnp.linspace(-0.5, lam[0] + 0.5, 2000)
    density, (theta, tau) = krylov.slq_density(
        mv, 300, key=jax.random.PRNGKey(0), grid=grid, sigma=0.05, num_probes=32, num_iters=30
    )
    assert abs(float(jnp.sum(density) * (grid[1] - grid[0])) - 1.0) < 1e-3
    np.testing.assert_allclose(np.sum(tau, axis=1), 1.0, rtol=1e-10)  # weights per probe
    for q, tol in ((1, 0.05), (2, 0.15)):  # stochastic tolerance of 32 Rademacher probes
        est = float(jnp.mean(jnp.sum(tau * theta**q, axis=1)))
        assert abs(est - np.mean(lam**q)) < tol * np.mean(lam**q)
    tr, se = krylov.hutchinson_trace(mv, 300, key=jax.random.PRNGKey(1), num_probes=64)
    assert abs(float(tr) - lam.sum()) < 4 * float(se) and float(se) < 0.1 * lam.sum()
    with pytest.raises(ValueError, match="num_probes"):
        krylov.hutchinson_trace(mv, 300, key=jax.random.PRNGKey(1), num_probes=1)
    with pytest.raises(ValueError, match="sigma"):
        krylov.slq_density(mv, 300, key=jax.random.PRNGKey(0), grid=grid, sigma=0.0)
