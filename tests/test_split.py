"""Signal/reservoir split: projector algebra, energies, four cells, test invisibility."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dyntheory import losses, split
from tests.test_dissipation import D_FEAT, N, linear_problem, run_linear_gd

EPS = 1e-12


@pytest.fixture(scope="module")
def trained():
    """A linear model after 50 GD steps with label noise: W, G and the start-time residual parts."""
    prob = linear_problem()
    rng = np.random.default_rng(10)
    y_clean = prob["phi"] @ rng.normal(size=D_FEAT)  # realizable clean targets
    noise = 0.5 * rng.normal(size=N)
    prob["y"] = y_clean + noise
    st, (u0, _), _, _ = run_linear_gd(prob, 0.5, 50)
    g_clean, g_noise = split.residual_parts(u0, jnp.asarray(y_clean), jnp.asarray(prob["y"]))
    return prob, st, g_clean, g_noise


@pytest.mark.parametrize("mode,threshold", [("relative", 1e-3), ("dissipated_fraction", 0.5)])
def test_projector_algebra(trained, mode, threshold):
    _, st, _, _ = trained
    sp = split.split(st.W, threshold, mode=mode, n_examples=N)
    pc, pr = np.asarray(sp.channel_projector), np.asarray(sp.reservoir_projector)
    eye = np.eye(N)
    np.testing.assert_allclose(pc + pr, eye, atol=EPS)
    np.testing.assert_allclose(pc @ pc, pc, atol=EPS)
    np.testing.assert_allclose(pr @ pr, pr, atol=EPS)
    np.testing.assert_allclose(pc @ pr, 0, atol=EPS)
    np.testing.assert_allclose(pc, pc.T, atol=EPS)
    assert np.trace(pc) == pytest.approx(int(np.sum(sp.channel)))
    # Whole spectrum, descending, with orthonormal eigenvectors.
    assert sp.eigvals.shape == (N,) and np.all(np.diff(sp.eigvals) <= 0)
    np.testing.assert_allclose(sp.eigvecs.T @ sp.eigvecs, eye, atol=EPS)
    np.testing.assert_allclose(sp.eigvecs @ np.diag(sp.eigvals) @ sp.eigvecs.T, st.W, atol=1e-12)
    # Energies add up, for one vector and for a batch of columns.
    v = np.random.default_rng(0).normal(size=(N, 4))
    ec, er = split.energies(sp, v)
    np.testing.assert_allclose(ec + er, np.sum(v**2, axis=0), rtol=1e-13)
    np.testing.assert_allclose(ec, np.sum((pc @ v) ** 2, axis=0), rtol=1e-10)
    ec1, er1 = split.energies(sp, v[:, 0])
    np.testing.assert_allclose([ec1, er1], [ec[0], er[0]], rtol=1e-13)


def test_threshold_modes():
    W = jnp.diag(jnp.array([6.0, 3.0, 0.06, 0.0]))  # n = 12 examples: n/2 = 6
    assert split.split(W, 1e-3).channel.tolist() == [True, True, True, False]
    assert split.split(W, 0.02).channel.tolist() == [True, True, False, False]
    frac = split.split(W, 0.4, mode="dissipated_fraction", n_examples=12)
    assert frac.channel.tolist() == [True, True, False, False] and float(
        frac.threshold
    ) == pytest.approx(2.4)
    assert split.split(W, 3.5, mode="absolute").channel.tolist() == [True, False, False, False]
    # Jit-able with a traced threshold.
    sp = jax.jit(split.split)(W, 0.4)
    assert sp.channel.tolist() == [True, True, False, False]


def test_kernel_null_space_lies_in_reservoir(trained):
    prob, st, _, _ = trained
    sp = split.split(st.W, 1e-8)
    null = np.linalg.svd(prob["phi"].T)[2][D_FEAT:].T  # ker Φᵀ: directions the kernel kills
    ec, er = split.energies(sp, null)
    np.testing.assert_allclose(ec, 0, atol=1e-20)
    np.testing.assert_allclose(er, 1, rtol=1e-12)
    assert int(np.sum(sp.channel)) == D_FEAT


def test_test_invisibility_residual(trained):
    """Prop. 3.2, ker W_S ⊆ ker G_Q: ‖G_Q Π_r‖ vanishes for the exact reservoir."""
    _, st, _, _ = trained
    sp = split.split(st.W, 1e-8)
    res = split.invisibility_residual(sp, st.G)
    assert float(res) < 1e-12
    # A threshold above the weakest live eigenvalue moves it into the reservoir: residual shows it.
    loose = split.split(st.W, 1.01 * float(sp.eigvals[D_FEAT - 1]), mode="absolute")
    assert int(np.sum(loose.channel)) == D_FEAT - 1
    assert float(split.invisibility_residual(loose, st.G)) > 1e-3
    assert float(split.invisibility_residual(sp, st.G, relative=False)) < 1e-12


def test_four_cell_decomposition(trained):
    prob, st, g_clean, g_noise = trained
    sp = split.split(st.W, 1e-8)
    fc = split.four_cell(sp, st.W, g_clean, g_noise, st.G)
    assert fc.train_energy.shape == (2, 2) and fc.test_displacement.shape == (2, 2, st.G.shape[0])
    np.testing.assert_allclose(
        fc.train_energy.sum(axis=1), [g_clean @ g_clean, g_noise @ g_noise], rtol=1e-12
    )
    np.testing.assert_allclose(
        fc.dissipated.sum(axis=1), [g_clean @ st.W @ g_clean, g_noise @ st.W @ g_noise], rtol=1e-10
    )
    # The four test displacements add up to the predicted −G g(s); reservoir cells are invisible.
    g = g_clean + g_noise
    np.testing.assert_allclose(fc.test_displacement.sum(axis=(0, 1)), -st.G @ g, atol=1e-12)
    np.testing.assert_allclose(fc.test_displacement[:, 1], 0, atol=1e-12)
    np.testing.assert_allclose(
        fc.test_energy, np.sum(np.asarray(fc.test_displacement) ** 2, axis=-1), rtol=1e-12
    )
    # The clean targets are realizable (y_clean ∈ range Φ) and u(0) = 0, so g_clean ∈ range Φ:
    # it has no reservoir part; the label noise does (its ker Φᵀ component).
    assert float(fc.train_energy[0, 1]) < 1e-25
    assert float(fc.train_energy[1, 1]) > 1e-4
    # Exactness of the start-time split: g = (u − y)/n.
    np.testing.assert_allclose(g, losses.squared_out_grad(jnp.zeros(N), prob["y"]), atol=1e-15)
    no_g = split.four_cell(sp, st.W, g_clean, g_noise)
    assert no_g.test_displacement.shape == (2, 2, 0)


def test_bad_inputs(trained):
    _, st, g_clean, g_noise = trained
    with pytest.raises(ValueError, match="square"):
        split.split(jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="mode must be one of"):
        split.split(st.W, mode="fraction")
    with pytest.raises(ValueError, match="n_examples"):
        split.split(st.W, 0.5, mode="dissipated_fraction")
    sp = split.split(st.W)
    with pytest.raises(ValueError, match="v must have shape"):
        split.energies(sp, jnp.ones(N + 1))
    with pytest.raises(ValueError, match="g_noise must have shape"):
        split.four_cell(sp, st.W, g_clean, g_noise[:3])
    with pytest.raises(ValueError, match="G must have shape"):
        split.invisibility_residual(sp, jnp.ones((2, N - 1)))
    with pytest.raises(ValueError, match="one shape"):
        split.residual_parts(jnp.ones(3), jnp.ones(3), jnp.ones(4))


def test_top_rel_err():
    lam, ref = jnp.array([9.0, 4.0, 1.0]), jnp.array([10.0, 4.0, 2.0, 1.0])
    assert float(split.top_rel_err(lam, ref, 2)) == pytest.approx(0.1)
    assert float(split.top_rel_err(lam, ref, 5)) == pytest.approx(0.5)  # k cut to 3
    assert float(split.top_rel_err(ref, ref, 4)) == 0.0
    with pytest.raises(ValueError, match="k >= 1"):
        split.top_rel_err(lam, ref, 0)
