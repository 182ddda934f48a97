"""neural-tangents through dyntheory._compat: imports, all NtkImplementations agree with J Jᵀ."""

import importlib.abc
import sys
import types

import jax
import jax.numpy as jnp
import pytest

from dyntheory._compat import import_neural_tangents
from dyntheory._compat import neural_tangents as compat
from tests.helpers import relative_error

N1, N2, D_IN, WIDTH, P = 5, 3, 4, 16, 3


def _mlp_init(key, sizes=(D_IN, WIDTH, WIDTH, P), dtype=jnp.float32):
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {
            "w": jax.random.normal(k, (a, b), dtype) * a**-0.5,
            "b": 0.1 * jax.random.normal(jax.random.fold_in(k, 1), (b,), dtype),
        }
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def _mlp_apply(params, x):
    """Plain-JAX MLP: (n, D_IN) -> (n, P)."""
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"][None])
    return x @ params[-1]["w"] + params[-1]["b"][None]


def _reference_ntk(apply_fn, params, x1, x2):
    """Full (n1*p, n2*p) NTK by plain Jacobian contraction, in float64."""
    params, x1, x2 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (params, x1, x2))

    def flat_jacobian(x):
        jac = jax.jacobian(lambda p: apply_fn(p, x))(params)
        n, p = apply_fn(params, x).shape
        return jnp.concatenate([j.reshape(n * p, -1) for j in jax.tree.leaves(jac)], axis=1)

    return jax.jit(lambda a, b: jnp.einsum("iP,jP->ij", flat_jacobian(a), flat_jacobian(b)))(x1, x2)


def _nt_full_kernel(nt, apply_fn, params, x1, x2, implementation):
    fn = nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, implementation=implementation)
    if implementation != nt.NtkImplementation.AUTO:  # AUTO lowers each candidate itself
        fn = jax.jit(fn)
    k = fn(x1, x2, params)  # (n1, n2, p, p)
    assert k.shape == (x1.shape[0], x2.shape[0], P, P)
    return k.transpose(0, 2, 1, 3).reshape(x1.shape[0] * P, x2.shape[0] * P)


@pytest.fixture(scope="module")
def nt():
    return import_neural_tangents()


@pytest.fixture(scope="module")
def inputs():
    x1 = jax.random.normal(jax.random.PRNGKey(1), (N1, D_IN), jnp.float32)
    x2 = jax.random.normal(jax.random.PRNGKey(2), (N2, D_IN), jnp.float32)
    return x1, x2


def test_import_is_patched_and_tensorflow_free(nt):
    assert nt.__version__ == compat.NT_VERSION
    assert "tensorflow" not in sys.modules
    assert {impl.name for impl in nt.NtkImplementation} == {
        "AUTO",
        "JACOBIAN_CONTRACTION",
        "NTK_VECTOR_PRODUCTS",
        "STRUCTURED_DERIVATIVES",
    }
    # The restored names are jax's own objects, not copies.
    import jax.extend.core as jex_core

    assert jax.core.Jaxpr is jex_core.Jaxpr and jax.core.Primitive is jex_core.Primitive
    with pytest.raises(AttributeError, match="TensorFlow"):
        nt.experimental.empirical_ntk_fn_tf  # noqa: B018


def test_second_import_is_cached(nt):
    assert import_neural_tangents() is nt
    assert sys.modules["neural_tangents"] is nt


def test_patches_never_overwrite():
    obj = types.SimpleNamespace(existing="jax's own")
    compat._add_missing(obj, "existing", "patch")
    compat._add_missing(obj, "missing", "patch")
    assert obj.existing == "jax's own" and obj.missing == "patch"


@pytest.mark.parametrize(
    "implementation",
    ["JACOBIAN_CONTRACTION", "NTK_VECTOR_PRODUCTS", "STRUCTURED_DERIVATIVES", "AUTO"],
)
def test_implementations_match_jacobian_contraction_plain_mlp(nt, inputs, implementation):
    x1, x2 = inputs
    params = _mlp_init(jax.random.PRNGKey(0))
    k = _nt_full_kernel(nt, _mlp_apply, params, x1, x2, nt.NtkImplementation[implementation])
    assert k.dtype == jnp.float32
    assert relative_error(k, _reference_ntk(_mlp_apply, params, x1, x2)) <= 1e-5


@pytest.mark.parametrize(
    "implementation",
    ["JACOBIAN_CONTRACTION", "NTK_VECTOR_PRODUCTS", "STRUCTURED_DERIVATIVES", "AUTO"],
)
def test_implementations_match_jacobian_contraction_stax_mlp(nt, inputs, implementation):
    x1, x2 = inputs
    stax = nt.stax
    init_fn, apply_fn, _ = stax.serial(
        stax.Dense(WIDTH), stax.Relu(), stax.Dense(WIDTH), stax.Erf(), stax.Dense(P)
    )
    _, params = init_fn(jax.random.PRNGKey(0), (-1, D_IN))
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    k = _nt_full_kernel(nt, apply_fn, params, x1, x2, nt.NtkImplementation[implementation])
    assert relative_error(k, _reference_ntk(apply_fn, params, x1, x2)) <= 1e-5


@pytest.mark.parametrize(
    "window",
    [((1, 0), (4, 5), None), ((0, 1), (5, 5), (2, 3)), ((2, 0), (3, 1), (1, 1))],
    ids=["contiguous", "strided", "thin"],
)
def test_restored_slice_transposes_equal_jax_vjp(nt, window):
    """The old-form slice / dynamic_slice rules equal jax's own cotangents (its vjp)."""
    from jax import lax
    from jax.interpreters import ad

    start, limit, strides = window
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 5))
    out, vjp = jax.vjp(lambda a: lax.slice(a, start, limit, strides), x)
    ct = jax.random.normal(jax.random.PRNGKey(1), out.shape)
    rule = ad.get_primitive_transpose(lax.slice_p)
    got = rule(ct, ad.UndefinedPrimal(jax.core.ShapedArray(x.shape, x.dtype)),
               start_indices=start, limit_indices=limit, strides=strides)[0]  # fmt: skip
    assert jnp.array_equal(got, vjp(ct)[0])

    sizes = tuple(b - a for a, b in zip(start, limit, strict=True))
    _, dvjp = jax.vjp(lambda a: lax.dynamic_slice(a, start, sizes), x)
    ct = jax.random.normal(jax.random.PRNGKey(2), sizes)
    rule = ad.get_primitive_transpose(lax.dynamic_slice_p)
    got = rule(ct, ad.UndefinedPrimal(jax.core.ShapedArray(x.shape, x.dtype)),
               *map(jnp.int32, start), slice_sizes=sizes)  # fmt: skip
    assert jnp.array_equal(got[0], dvjp(ct)[0]) and got[1:] == [None, None]


@pytest.fixture
def uncached(monkeypatch):
    monkeypatch.setattr(compat, "_nt_module", None)


def test_missing_package_via_sys_modules(monkeypatch, uncached):
    monkeypatch.setitem(sys.modules, "neural_tangents", None)  # what `import` treats as absent
    with pytest.raises(ImportError) as info:
        import_neural_tangents()
    msg = str(info.value)
    assert "pip install --no-deps neural-tangents==0.6.5 frozendict" in msg
    assert "bash scripts/setup.sh" in msg


def test_missing_package_via_import_machinery(monkeypatch, uncached):
    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "neural_tangents" or name.startswith("neural_tangents."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    for name in [m for m in sys.modules if m.split(".")[0] == "neural_tangents"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [Hide(), *sys.meta_path])
    with pytest.raises(ImportError, match="neural-tangents 0.6.5 is not installed"):
        import_neural_tangents()
