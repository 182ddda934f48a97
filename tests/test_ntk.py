"""Empirical NTK: every implementation against the per-example Jacobian contraction, tiling,
the operator form, the linear-model closed form, neural-tangents, and bad input."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dyntheory import ntk
from dyntheory._compat import import_neural_tangents
from dyntheory.models import CNN, MLP, EmbedMLP, Linear, Transformer, functional
from dyntheory.ntk import (
    IMPLEMENTATIONS,
    choose_implementation,
    effective_ntk,
    empirical_ntk,
    ntk_matvec,
    output_jvp,
)
from tests.helpers import relative_error

N1, N2 = 5, 3
RTOL32 = 1e-5  # float32 agreement with "jacobian" (relative Frobenius error)


def _build(name: str):
    """``(make, x)``: a model constructor and ``N1 + N2`` inputs."""
    r = lambda: nnx.Rngs(0)
    key = jax.random.key(1)
    normal = lambda *s: jax.random.normal(key, (N1 + N2, *s), jnp.float32)
    tokens = lambda v, t: jax.random.randint(key, (N1 + N2, t), 0, v)
    return {
        "mlp-tanh-layernorm": (
            lambda: MLP(4, (16, 16), 3, activation="tanh", norm="layernorm", rngs=r()),
            normal(4),
        ),
        "mlp-swiglu-dyt-residual": (
            lambda: MLP(4, (16, 16), 3, activation="swiglu", norm="dyt", residual=True, rngs=r()),
            normal(4),
        ),
        "mlp-gelu": (lambda: MLP(4, (16,), 3, activation="gelu", rngs=r()), normal(4)),
        "cnn": (lambda: CNN(2, 3, channels=(4, 6), rngs=r()), normal(6, 6, 2)),
        # width 16, T = 3: the qkv layer takes the Gram path, the others the Jacobian-block path
        "transformer": (
            lambda: Transformer(11, 4, 3, width=16, depth=1, heads=2, rngs=r()),
            tokens(11, 3),
        ),
        "embed-mlp": (lambda: EmbedMLP(7, 5, embed_dim=4, hidden=(16,), rngs=r()), tokens(7, 2)),
    }[name]


MODELS = [
    "mlp-tanh-layernorm",
    "mlp-swiglu-dyt-residual",
    "mlp-gelu",
    "cnn",
    "transformer",
    "embed-mlp",
]


@functools.cache
def case(name: str):
    """``(apply_fn, params, x1, x2)``, cached so compiled kernels are reused across tests."""
    make, x = _build(name)
    apply_fn, params = functional(nnx.jit(make)())  # one compiled init instead of eager ops
    return apply_fn, params, x[:N1], x[N1:]


@functools.cache
def reference(name: str) -> np.ndarray:
    """The "jacobian" kernel of x1 ∪ x2, ``(N, p, N, p)``."""
    apply_fn, params, x1, x2 = case(name)
    k = empirical_ntk(apply_fn, params, jnp.concatenate([x1, x2]), implementation="jacobian")
    n = N1 + N2
    return np.asarray(k, np.float64).reshape(n, k.shape[0] // n, n, -1)


def expected(name: str, trace: bool, cross: bool) -> np.ndarray:
    k = reference(name)
    k = k[:N1, :, N1:] if cross else k[:N1, :, :N1]
    if trace:
        return np.einsum("iaja->ij", k)
    return k.reshape(k.shape[0] * k.shape[1], -1)


def _run(name, implementation, trace, cross, **kw):
    apply_fn, params, x1, x2 = case(name)
    return empirical_ntk(
        apply_fn, params, x1, x2 if cross else None, implementation=implementation, trace=trace,
        **kw,
    )  # fmt: skip


# (trace, cross): each value of each flag on every model; all four combinations on one model.
VARIANTS = [(False, True), (True, False)]
ALL_VARIANTS = [(False, False), (False, True), (True, False), (True, True)]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("implementation", ["ntvp", "structured"])
def test_agrees_with_jacobian(implementation, name):
    variants = VARIANTS
    if name == "mlp-swiglu-dyt-residual":
        variants = ALL_VARIANTS
    elif implementation == "ntvp":  # model-agnostic code: its trace path is checked above
        variants = VARIANTS[:1]
    for trace, cross in variants:
        k = _run(name, implementation, trace, cross)
        want = expected(name, trace, cross)
        assert k.shape == want.shape and k.dtype == jnp.float32
        err = relative_error(k, want)
        assert err <= RTOL32, f"{implementation} trace={trace} cross={cross}: {err:.2e}"


@pytest.mark.parametrize("name", MODELS)
def test_auto_picks_structured(name):
    apply_fn, params, x1, x2 = case(name)
    p = reference(name).shape[1]
    assert choose_implementation(apply_fn, params, n=N1, p=p) == "structured"
    err = relative_error(_run(name, "auto", False, True), expected(name, False, True))
    assert err <= RTOL32


def _neural_tangents_or_skip(name, trace, cross):
    try:
        import_neural_tangents()
    except ImportError as e:
        pytest.skip(str(e))
    return _run(name, "neural_tangents", trace, cross)


@pytest.mark.parametrize("name", MODELS)
def test_agrees_with_neural_tangents(name):
    variants = ALL_VARIANTS[1:3] if name == "mlp-tanh-layernorm" else [(False, True)]
    for trace, cross in variants:
        k = _neural_tangents_or_skip(name, trace, cross)
        err = relative_error(k, expected(name, trace, cross))
        assert err <= RTOL32, f"trace={trace} cross={cross}: {err:.2e}"


@pytest.mark.parametrize("implementation", ["jacobian", "structured"])  # tiling is generic
def test_block_tiling_equals_untiled(implementation):
    name = "mlp-swiglu-dyt-residual"  # its untiled kernels are cached from the tests above
    # N1 = 5 rows in blocks of 2, so the last block is padded. With x2=None only the upper block
    # triangle is computed, then mirrored.
    for trace, cross in [(False, False), (True, True)]:
        tiled = _run(name, implementation, trace, cross, block_size=2)
        if implementation == "jacobian":  # the untiled reference itself
            untiled = expected(name, trace, cross)
        else:
            untiled = _run(name, implementation, trace, cross)
        assert tiled.shape == untiled.shape
        assert relative_error(tiled, untiled) <= 1e-6, (trace, cross)
        if not cross:
            k, p = np.asarray(tiled), tiled.shape[0] // N1
            np.testing.assert_array_equal(k[: 2 * p, 2 * p :], k[2 * p :, : 2 * p].T)


def _linear_features(x, a):
    return jnp.tanh(x @ a)


def test_linear_model_kernel_is_phi_phi_t():
    """f(x) = φ(x)ᵀθ: K = ΦΦᵀ ⊗ I_p exactly (float64), for every implementation that applies."""
    key1, key2, key3 = jax.random.split(jax.random.key(2), 3)
    x1 = jax.random.normal(key1, (6, 3), jnp.float64)
    x2 = jax.random.normal(key2, (4, 3), jnp.float64)
    a = jax.random.normal(key3, (3, 7), jnp.float64)
    apply_fn = lambda theta, x: _linear_features(x, a) @ theta["w"]
    params = {"w": jnp.zeros((7, 2), jnp.float64)}
    phi1, phi2 = _linear_features(x1, a), _linear_features(x2, a)
    gram = np.asarray(phi1 @ phi2.T)
    full = np.kron(gram, np.eye(2))
    for implementation in ["jacobian", "ntvp", "neural_tangents"]:
        k = empirical_ntk(apply_fn, params, x1, x2, implementation=implementation)
        np.testing.assert_allclose(np.asarray(k), full, rtol=1e-12, atol=1e-12)
    kt = empirical_ntk(apply_fn, params, x1, x2, trace=True)  # "auto": jacobian
    np.testing.assert_allclose(np.asarray(kt), 2.0 * gram, rtol=1e-12, atol=1e-12)


def test_linear_mlp_structured_is_exact():
    """MLP with no hidden layer, f(x) = Wᵀx + b: K = (XXᵀ + 1) ⊗ I_p to float64 round-off."""
    model = MLP(3, (), 2, dtype=jnp.float64, rngs=nnx.Rngs(0))
    apply_fn, params = functional(model)
    x = jax.random.normal(jax.random.key(3), (6, 3), jnp.float64)
    want = np.kron(np.asarray(x @ x.T) + 1.0, np.eye(2))
    for implementation in ["structured", "jacobian", "neural_tangents"]:
        k = empirical_ntk(apply_fn, params, x, implementation=implementation)
        np.testing.assert_allclose(np.asarray(k), want, rtol=1e-12, atol=1e-12)


def test_ntk_matvec_equals_k_times_v():
    apply_fn, params, x1, _ = case("mlp-tanh-layernorm")
    k = expected("mlp-tanh-layernorm", False, False)
    v = jax.random.normal(jax.random.key(5), (k.shape[0],), jnp.float32)
    mv = ntk_matvec(apply_fn, params, x1)
    want = k @ np.asarray(v, np.float64)
    assert relative_error(mv(v), want) <= RTOL32
    assert relative_error(jax.jit(mv)(v), want) <= RTOL32


@pytest.mark.parametrize("chunk_size", [None, 1, 4])
def test_ntk_matvec_cross_block_preconditioned_and_chunked(chunk_size):
    """``J(x) diag(p) J(x2)ᵀ v`` against the dense effective kernel; chunking (with a padded last
    chunk) changes nothing."""
    apply_fn, params, x1, x2 = case("mlp-tanh-layernorm")
    p = jax.tree.map(
        lambda w: jax.random.uniform(jax.random.key(w.size), w.shape, w.dtype, 0.1, 2.0), params
    )
    k = np.asarray(effective_ntk(apply_fn, params, p, x1, x2, implementation="jacobian"))
    v = jax.random.normal(jax.random.key(6), (k.shape[1],), jnp.float32)
    mv = ntk_matvec(apply_fn, params, x1, x2, precond=p, chunk_size=chunk_size)
    assert relative_error(jax.jit(mv)(v), k @ np.asarray(v, np.float64)) <= RTOL32
    with pytest.raises(ValueError, match="chunk_size"):
        ntk_matvec(apply_fn, params, x1, chunk_size=0)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_output_jvp_is_the_jacobian_times_the_tangent(chunk_size):
    apply_fn, params, x1, _ = case("mlp-tanh-layernorm")
    t = jax.tree.map(lambda w: jax.random.normal(jax.random.key(w.size), w.shape, w.dtype), params)
    jac = jax.jacrev(lambda w: apply_fn(w, x1).reshape(-1))(params)
    want = sum(
        np.asarray(j, np.float64).reshape(j.shape[0], -1) @ np.asarray(v, np.float64).reshape(-1)
        for j, v in zip(jax.tree.leaves(jac), jax.tree.leaves(t), strict=True)
    )
    got = jax.jit(lambda w, v: output_jvp(apply_fn, w, x1, v, chunk_size=chunk_size))(params, t)
    assert relative_error(got, want) <= RTOL32
    with pytest.raises(ValueError, match="chunk_size"):
        output_jvp(apply_fn, params, x1, t, chunk_size=0)


def test_callable_inside_jit_and_symmetric_psd():
    apply_fn, params, x1, _ = case("mlp-tanh-layernorm")
    k = jax.jit(lambda w, x: empirical_ntk(apply_fn, w, x))(params, x1)
    np.testing.assert_allclose(np.asarray(k), expected("mlp-tanh-layernorm", False, False),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    k = np.asarray(k, np.float64)
    np.testing.assert_allclose(k, k.T, rtol=1e-6, atol=1e-6)
    assert np.linalg.eigvalsh((k + k.T) / 2).min() > -1e-4 * np.abs(k).max()


def test_auto_falls_back_by_size(monkeypatch):
    apply_fn, params, x1, x2 = case("mlp-gelu")
    plain = lambda w, x: apply_fn(w, x)  # no taps
    assert choose_implementation(plain, params, n=N1, p=3) == "jacobian"
    monkeypatch.setattr(ntk, "JACOBIAN_BYTES", 0)
    assert choose_implementation(plain, params, n=N1, p=3) == "ntvp"
    err = relative_error(empirical_ntk(plain, params, x1, x2), expected("mlp-gelu", False, True))
    assert err <= RTOL32


def test_bad_input_errors():
    apply_fn, params, x1, x2 = case("mlp-gelu")
    with pytest.raises(ValueError, match="unknown implementation 'fast'.*'structured'"):
        empirical_ntk(apply_fn, params, x1, implementation="fast")
    with pytest.raises(ValueError, match=r"same per-example shape.*\(5, 4\).*\(3, 5\)"):
        empirical_ntk(apply_fn, params, x1, jnp.ones((3, 5)))
    with pytest.raises(ValueError, match=r"rejects inputs of per-example shape \(6,\)"):
        empirical_ntk(apply_fn, params, jnp.ones((2, 6)))
    with pytest.raises(ValueError, match="block_size must be a positive integer"):
        empirical_ntk(apply_fn, params, x1, block_size=0)
    with pytest.raises(ValueError, match="leading example axis"):
        empirical_ntk(apply_fn, params, jnp.float32(1.0))
    with pytest.raises(ValueError, match=r"\(n, p\) outputs"):
        empirical_ntk(lambda w, x: apply_fn(w, x)[:, 0], params, x1)
    with pytest.raises(ValueError, match=r"needs the dense-layer taps.*functional\(model\)"):
        empirical_ntk(lambda w, x: apply_fn(w, x), params, x1, implementation="structured")
    plain_model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), jnp.tanh,
                                 nnx.Linear(8, 2, rngs=nnx.Rngs(1)))  # fmt: skip
    no_taps, p2 = functional(plain_model)
    with pytest.raises(ValueError, match="no dyntheory.models.Linear layer"):
        empirical_ntk(no_taps, p2, x1, implementation="structured")
    assert choose_implementation(no_taps, p2, n=N1, p=2) == "jacobian"
    with pytest.raises(ValueError, match=r"v must have shape \(15,\)"):
        ntk_matvec(apply_fn, params, x1)(jnp.ones(14))
    assert set(IMPLEMENTATIONS) == {"auto", "jacobian", "ntvp", "structured", "neural_tangents"}


class _Tied(nnx.Module):
    """One bias-free Linear applied twice (weight sharing), then a readout."""

    def __init__(self, rngs):
        self.shared = Linear(3, 3, use_bias=False, dtype=jnp.float64, rngs=rngs)
        self.out = Linear(3, 2, dtype=jnp.float64, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.shared(jnp.tanh(self.shared(x)))))


def test_structured_weight_sharing_and_no_bias():
    """A layer called twice is one layer seen at two positions (the double sum over s, s')."""
    apply_fn, params = functional(_Tied(nnx.Rngs(0)))
    assert apply_fn.dense["shared"].bias is None
    x1 = jax.random.normal(jax.random.key(6), (4, 3), jnp.float64)
    x2 = jax.random.normal(jax.random.key(7), (3, 3), jnp.float64)
    want = empirical_ntk(apply_fn, params, x1, x2, implementation="jacobian")
    got = empirical_ntk(apply_fn, params, x1, x2, implementation="structured")
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-10, atol=1e-12)
    got = empirical_ntk(apply_fn, params, x1, x2, implementation="structured", trace=True)
    want = np.einsum("iaja->ij", np.asarray(want).reshape(4, 2, 3, 2))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-12)
