"""The block Krylov (warm-start) eigensolver against ``eigh``, with its NTK-vector products
counted by a host-side operator."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dyntheory import krylov


def _counted(a: np.ndarray):
    """``v -> A v`` through a host callback that counts the vectors it is applied to."""
    count = [0]
    dim = a.shape[0]

    def host(v):
        v = np.asarray(v)
        count[0] += v.size // dim
        return (v.reshape(-1, dim) @ a.T).reshape(v.shape).astype(v.dtype)

    def mv(v):
        out = jax.ShapeDtypeStruct(v.shape, v.dtype)
        return jax.pure_callback(host, out, v, vmap_method="expand_dims")

    return mv, count


def _spd(seed, n, decay=1.0):
    rng = np.random.RandomState(seed)
    q, _ = np.linalg.qr(rng.randn(n, n))
    return (q * np.arange(1.0, n + 1) ** -decay * 10) @ q.T


def _align(got, want):
    """The largest ``1 − |cos|`` between matching columns (eigenvectors up to sign)."""
    return float(np.max(1 - np.abs(np.sum(np.asarray(got) * want, axis=0))))


def test_a_complete_block_space_gives_eigh():
    a = _spd(0, 24)
    lam, vec = np.linalg.eigh(a)
    v0 = jax.random.normal(jax.random.key(1), (24, 6))
    theta, v = krylov.block_krylov_topk(lambda x: a @ x, v0, 5, depth=4, key=jax.random.key(2))
    np.testing.assert_allclose(theta, lam[::-1][:5], rtol=1e-10)
    assert _align(v, vec[:, ::-1][:, :5]) < 1e-10


def test_warm_start_is_more_accurate_than_a_cold_lanczos_of_the_same_products():
    """Seeded with the top-k eigenvectors of ``A``, depth 2 resolves ``A + εE`` (ε = 1e-3) to
    ~1e-6 with 2k products (counted); a cold Lanczos of 2k steps is off by percents and needs
    the default 2k + 30 to reach round-off. The warm start is local: its error grows with ε and
    falls with the depth."""
    n, k = 60, 4
    a = _spd(3, n)
    e = np.random.RandomState(4).randn(n, n)
    seeds = np.linalg.eigh(a)[1][:, ::-1][:, :k]
    errs = {}
    for eps in (1e-3, 1e-2):
        moved = a + eps * (e + e.T)
        lam, vec = np.linalg.eigh(moved)
        lam, vec = lam[::-1][:k], vec[:, ::-1][:, :k]
        mv, count = _counted(moved)
        for depth in (2, 3):
            count[0] = 0
            theta, v = jax.jit(
                lambda s, d=depth: krylov.block_krylov_topk(
                    mv, s, k, depth=d, key=jax.random.key(0)
                )
            )(seeds)
            assert count[0] == depth * k
            errs[eps, depth] = float(np.max(np.abs(theta - lam) / lam)), _align(v, vec)
        for iters in (2 * k, 2 * k + 30):
            count[0] = 0
            theta, v = jax.jit(
                lambda m=iters: krylov.lanczos_topk(mv, n, k, key=jax.random.key(5), num_iters=m)
            )()
            assert count[0] == iters
            errs[eps, "cold", iters] = float(np.max(np.abs(theta - lam) / lam)), _align(v, vec)
    assert max(errs[1e-3, 2]) < 1e-5 < 1e-2 < min(errs[1e-3, "cold", 2 * k])
    assert max(errs[1e-3, "cold", 2 * k + 30]) < 1e-12
    assert errs[1e-2, 2][0] > 10 * errs[1e-3, 2][0]  # local: grows with the motion
    assert errs[1e-2, 3][0] < errs[1e-2, 2][0] / 3  # and falls with the depth
    # λ_max alone: a few Lanczos steps from the previous top vector
    moved = a + 1e-3 * (e + e.T)
    mv, count = _counted(moved)
    top, _ = jax.jit(
        lambda: krylov.lanczos_topk(mv, n, 1, key=jax.random.key(6), num_iters=8, v0=seeds[:, 0])
    )()
    assert count[0] == 8
    np.testing.assert_allclose(top[0], np.linalg.eigvalsh(moved)[-1], rtol=1e-12)


def test_a_static_operator_seeded_with_its_eigenvectors_is_exact_also_when_the_space_closes():
    """Rank 3, seeded with its 3 eigenvectors: ``A V ⊂ span V``, the second block is random
    (as Lanczos restarts); the Ritz pairs are exact and finite."""
    rng = np.random.RandomState(7)
    b = rng.randn(20, 3)
    a = b @ b.T
    lam, vec = np.linalg.eigh(a)
    seeds = vec[:, ::-1][:, :3]
    theta, v = krylov.block_krylov_topk(lambda x: a @ x, seeds, 3, depth=2, key=jax.random.key(1))
    assert np.all(np.isfinite(v))
    np.testing.assert_allclose(theta, lam[::-1][:3], rtol=1e-12)
    assert _align(v, seeds) < 1e-12


def test_bad_inputs():
    a = jnp.eye(8)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="block of start vectors"):
        krylov.block_krylov_topk(lambda x: a @ x, jnp.ones(8), 1, key=key)
    with pytest.raises(ValueError, match="b·depth <= dim"):
        krylov.block_krylov_topk(lambda x: a @ x, jnp.ones((8, 3)), 1, depth=3, key=key)
    with pytest.raises(ValueError, match="b·depth <= dim"):
        krylov.block_krylov_topk(lambda x: a @ x, jnp.ones((8, 2)), 5, depth=2, key=key)
