"""Small pytree assertions (the role chex played for optax) and backend-aware tolerances."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np


def tol(dtype) -> dict:
    """Default rtol/atol for comparing two computations carried out in ``dtype``."""
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float64:
        return {"rtol": 1e-10, "atol": 1e-12}
    gpu = jax.default_backend() != "cpu"
    return {"rtol": 1e-4 if gpu else 1e-5, "atol": 1e-5 if gpu else 1e-6}


def assert_trees_all_close(a, b, rtol: float = 1e-6, atol: float = 0.0, err_msg: str = "") -> None:
    """Leaf-wise ``np.testing.assert_allclose`` with matching tree structure."""
    la, ta = jax.tree.flatten_with_path(a)
    lb, tb = jax.tree.flatten_with_path(b)
    assert ta == tb, f"tree structures differ:\n{ta}\n{tb}"
    for (path, x), (_, y) in zip(la, lb, strict=True):
        np.testing.assert_allclose(
            np.asarray(x),
            np.asarray(y),
            rtol=rtol,
            atol=atol,
            err_msg=f"{err_msg} at {jax.tree_util.keystr(path)}",
        )


def assert_trees_all_equal(a, b, err_msg: str = "") -> None:
    """Bit-identical leaves and tree structure."""
    la, ta = jax.tree.flatten_with_path(a)
    lb, tb = jax.tree.flatten_with_path(b)
    assert ta == tb, f"tree structures differ:\n{ta}\n{tb}"
    for (path, x), (_, y) in zip(la, lb, strict=True):
        np.testing.assert_array_equal(
            np.asarray(x), np.asarray(y), err_msg=f"{err_msg} at {jax.tree_util.keystr(path)}"
        )


def assert_tree_shapes_dtypes_equal(a, b) -> None:
    """Same structure, and each leaf has the same shape and dtype."""
    sa = jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), a)
    sb = jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), b)
    assert sa == sb, f"shape/dtype mismatch:\n{sa}\n{sb}"


def assert_tree_all_finite(a) -> None:
    for path, x in jax.tree.flatten_with_path(a)[0]:
        assert np.all(np.isfinite(np.asarray(x))), (
            f"non-finite values at {jax.tree_util.keystr(path)}"
        )


def relative_error(x, y) -> float:
    """‖x − y‖ / ‖y‖ in float64 (Frobenius for matrices)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    return float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-300))


def log_slope(xs, ys) -> float:
    """Least-squares slope of log(ys) vs log(xs): a convergence order or a power-law exponent."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


def xla_flags(devices: int) -> str:
    """The session's XLA flags (the tests' optimization level, so the compilation cache they share
    hits) with ``devices`` fake CPU devices."""
    kept = [
        f
        for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    return " ".join([*kept, f"--xla_force_host_platform_device_count={devices}"])
