"""dyntheory._linalg: gesvd-based SVD helpers equal jnp.linalg's, and run on all devices at once."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dyntheory import _linalg
from tests.helpers import relative_error

LIBRARY = pathlib.Path(__file__).resolve().parents[1] / "dyntheory"
# Modules whose SVDs never run under the sharded engine (documented in dyntheory._linalg).
GESDD_OK = {"randfeat.py", "_linalg.py"}


@pytest.mark.parametrize("shape", [(7, 7), (3, 6, 4), (5, 9)])
def test_pinv_and_spectral_norm_equal_jnp_linalg_on_rank_deficient_matrices(shape):
    rng = np.random.default_rng(7)
    *batch, m, n = shape
    a = jnp.asarray(rng.normal(size=(*batch, m, 3)) @ rng.normal(size=(*batch, 3, n)))  # rank 3
    got = _linalg.pinv(a, 1e-8)
    assert got.shape == (*batch, n, m)
    assert relative_error(got, jnp.linalg.pinv(a, rtol=1e-8)) < 1e-10
    assert (
        relative_error(_linalg.spectral_norm(a), jnp.linalg.norm(a, ord=2, axis=(-2, -1))) < 1e-12
    )


def test_pinv_cutoff_is_relative_to_the_largest_singular_value():
    a = jnp.diag(jnp.array([1.0, 1e-3, 1e-9]))
    np.testing.assert_allclose(_linalg.pinv(a, 1e-6), jnp.diag(jnp.array([1.0, 1e3, 0.0])))


def test_runs_replicated_on_every_device():
    """The case that hung with jnp.linalg.pinv (gesdd): every CPU device runs the SVD at once
    (60 x 60 still hangs gesdd within a minute)."""
    mesh = jax.make_mesh((jax.device_count(),), ("d",))
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    a = jax.device_put(np.random.default_rng(8).normal(size=(2, 60, 60)), rep)
    f = jax.jit(jax.vmap(lambda x: _linalg.pinv(x, 1e-8)), out_shardings=rep)
    for i in range(20):
        out = jax.block_until_ready(f(a + i))
    assert relative_error(out, np.linalg.pinv(np.asarray(a) + 19)) < 1e-8


def test_library_svds_go_through_gesvd():
    pattern = re.compile(r"jnp\.linalg\.(svd|pinv|svdvals|matrix_rank|lstsq|cond)\(|ord=2\b")
    offenders = [
        f"{path.relative_to(LIBRARY)}:{i}"
        for path in LIBRARY.rglob("*.py")
        if path.name not in GESDD_OK
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, f"use dyntheory._linalg instead of gesdd-backed jnp.linalg: {offenders}"
