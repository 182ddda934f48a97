"""Models: shapes and dtypes, the activation formulas, norms, residuals, causality, functional."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dyntheory import names
from dyntheory.models import (
    ACTIVATIONS,
    CNN,
    GATED_ACTIVATIONS,
    MLP,
    NORMS,
    DyT,
    EmbedMLP,
    Transformer,
    abstract,
    count_params,
    functional,
    get_activation,
)
from tests.helpers import assert_trees_all_close, tol

KEY = jax.random.key(0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gelu(x):
    return x * 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


REFERENCE = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": _gelu,
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softplus": lambda x: np.log1p(np.exp(x)),
    "identity": lambda x: x,
    "linear": lambda x: x,
}
GATES = {"glu": _sigmoid, "reglu": REFERENCE["relu"], "geglu": _gelu, "swiglu": REFERENCE["silu"]}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_formula(name):
    h = np.asarray(jax.random.normal(KEY, (3, 8), jnp.float64)) * 3.0
    got = np.asarray(ACTIVATIONS[name](jnp.asarray(h)))
    if name in GATED_ACTIVATIONS:
        want = GATES[name](h[:, :4]) * h[:, 4:]
    else:
        want = REFERENCE[name](h)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_registry_covers_the_zoo():
    zoo = {"relu", "gelu", "silu", "swish", "sigmoid", "tanh", "softplus", "identity", "linear"}
    assert set(ACTIVATIONS) == zoo | {"glu", "reglu", "geglu", "swiglu"}
    assert GATED_ACTIVATIONS == {"glu", "reglu", "geglu", "swiglu"}
    assert tuple(ACTIVATIONS) == names.ACTIVATIONS  # the JAX-free list configs validate against


@pytest.mark.parametrize("name", ["swish", "silu", "swiglu"])
def test_swish_beta(name):
    h = np.linspace(-4.0, 4.0, 10)
    got = np.asarray(get_activation(name, beta=2.5)(jnp.asarray(h)))
    if name == "swiglu":
        a, b = h[:5], h[5:]
        want = a * _sigmoid(2.5 * a) * b
    else:
        want = h * _sigmoid(2.5 * h)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_unknown_names_list_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown activation 'rleu'.*'relu'"):
        MLP(3, (4,), 2, activation="rleu", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown norm 'batchnorm'.*'layernorm', 'dyt'"):
        MLP(3, (4,), 2, norm="batchnorm", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown norm"):
        Transformer(5, 3, norm="rms", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="beta=2.0 only applies to the swish family"):
        get_activation("tanh", beta=2.0)
    assert NORMS == ("layernorm", "dyt", None)


def _models(dtype, abstract=False, only=None):
    """name -> (model, x); ``abstract`` builds them with ``nnx.eval_shape`` (no compute)."""
    r = lambda: nnx.Rngs(0)  # created inside the maker, so nnx.eval_shape can trace it
    makers = {
        "mlp": (lambda: MLP(5, (8, 8), 3, dtype=dtype, rngs=r()), jnp.ones((4, 5), dtype)),
        "mlp-geglu-dyt-res": (
            lambda: MLP(5, (8, 8), 3, activation="geglu", norm="dyt", residual=True, dtype=dtype,
                        rngs=r()),
            jnp.ones((4, 5), dtype),
        ),
        "embed": (lambda: EmbedMLP(7, n_tokens=2, embed_dim=4, hidden=(8,), dtype=dtype, rngs=r()),
                  jnp.ones((4, 2), jnp.int32)),
        "cnn": (lambda: CNN(2, 3, channels=(4, 6), dtype=dtype, rngs=r()),
                jnp.ones((4, 8, 8, 2), dtype)),
        "transformer": (lambda: Transformer(7, 4, 5, width=8, heads=2, dtype=dtype, rngs=r()),
                        jnp.ones((4, 3), jnp.int32)),
    }  # fmt: skip
    build = nnx.eval_shape if abstract else (lambda make: make())
    return {
        name: (build(make), x) for name, (make, x) in makers.items() if only is None or name == only
    }


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_output_shapes_and_dtypes(dtype):
    want = {"mlp": 3, "mlp-geglu-dyt-res": 3, "embed": 7, "cnn": 3, "transformer": 5}
    for name, (model, x) in _models(dtype, abstract=True).items():
        apply_fn, params = functional(model)
        y = jax.eval_shape(apply_fn, params, x)
        assert y.shape == (4, want[name]), name
        assert y.dtype == dtype, name
        for leaf in jax.tree.leaves(params):
            assert leaf.dtype == dtype, name


def test_gated_layer_projects_to_twice_the_width():
    model = MLP(5, (8, 6), 3, activation="swiglu", rngs=nnx.Rngs(0))
    assert model.layers[0].kernel.shape == (5, 16)
    assert model.layers[1].kernel.shape == (8, 12)
    assert model.readout.kernel.shape == (6, 3)


def test_dyt_formula_and_learnable_alpha():
    dyt = DyT(4, alpha0=0.7, dtype=jnp.float64)
    dyt.scale[...] = jnp.arange(1.0, 5.0)
    dyt.shift[...] = jnp.full((4,), -0.5)
    x = jax.random.normal(KEY, (3, 4), jnp.float64)
    want = np.arange(1.0, 5.0) * np.tanh(0.7 * np.asarray(x)) - 0.5
    np.testing.assert_allclose(np.asarray(dyt(x)), want, rtol=1e-12)
    assert float(dyt.alpha[...]) == pytest.approx(0.7)
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(dyt)
    assert grads["alpha"][...].shape == () and float(grads["alpha"][...]) != 0.0


def test_layernorm_standardizes_between_layers():
    model = MLP(5, (16, 16), 3, activation="relu", norm="layernorm", dtype=jnp.float64,
                rngs=nnx.Rngs(0))  # fmt: skip
    x = 3.0 * jax.random.normal(KEY, (6, 5), jnp.float64) + 1.0
    h = model.features(x)  # last hidden layer after its (fresh: unit scale, zero shift) norm
    np.testing.assert_allclose(np.asarray(h.mean(-1)), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(h.var(-1)), 1.0, rtol=1e-4)  # epsilon 1e-6


def test_residual_skips_a_silenced_layer():
    x = jax.random.normal(KEY, (4, 6), jnp.float64)
    outs = {}
    for residual in (False, True):
        model = MLP(6, (6, 6), 2, activation="tanh", residual=residual, dtype=jnp.float64,
                    rngs=nnx.Rngs(0))  # fmt: skip
        model.layers[1].kernel[...] = jnp.zeros((6, 6))  # tanh(0 x + 0) = 0
        outs[residual] = model.features(x)
    h1 = jnp.tanh(x @ model.layers[0].kernel[...])  # the first layer (with residual: x + h1)
    np.testing.assert_allclose(np.asarray(outs[False]), 0.0)
    np.testing.assert_allclose(np.asarray(outs[True]), np.asarray(x + h1), rtol=1e-12)


def test_residual_only_where_widths_match():
    model = nnx.eval_shape(lambda: MLP(5, (8, 8, 4), 2, residual=True, rngs=nnx.Rngs(0)))
    assert model.skips == (False, True, False)


def test_linear_mlp_is_affine():
    model = MLP(4, (), 3, dtype=jnp.float64, rngs=nnx.Rngs(0))
    x = jax.random.normal(KEY, (5, 4), jnp.float64)
    want = x @ model.readout.kernel[...] + model.readout.bias[...][None]
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(want), rtol=1e-12)


@functools.cache
def _model(name):
    """``(model, x)``: the float32 model of ``_models``, built once for the tests that run it."""
    return _models(jnp.float32, only=name)[name]


def test_transformer_is_causal():
    model = _model("transformer")[0]
    hidden_fn, params = functional(model, method="hidden_states")
    logits_fn = functional(model)[0]
    tokens = jax.random.randint(KEY, (3, 4), 0, 7)
    changed = tokens.at[:, 2].set((tokens[:, 2] + 1) % 7)
    both = jax.jit(lambda w, t: (hidden_fn(w, t), logits_fn(w, t)))
    (h, logits), (h2, _) = both(params, tokens), both(params, changed)
    np.testing.assert_allclose(np.asarray(h[:, :2]), np.asarray(h2[:, :2]), rtol=1e-6)
    assert np.abs(np.asarray(h[:, 2:] - h2[:, 2:])).max() > 1e-3
    readout = params["readout"]
    want = h[:, -1] @ readout["kernel"] + readout["bias"][None]
    np.testing.assert_allclose(np.asarray(logits), np.asarray(want), **tol(jnp.float32))


def test_transformer_readout_all_gives_every_position_and_last_matches_default():
    make = lambda readout: Transformer(7, 4, width=8, heads=2, readout=readout, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(KEY, (3, 4), 0, 7)
    fn_all, params = functional(make("all"))
    fn_last, params_last = functional(make("last"))
    hidden = functional(make("all"), method="hidden_states")[0]
    every, last = fn_all(params, tokens), fn_last(params_last, tokens)
    assert every.shape == (3, 4, 7) and last.shape == (3, 7)
    np.testing.assert_allclose(np.asarray(every[:, -1]), np.asarray(last), rtol=1e-6)
    r = params["readout"]
    want = hidden(params, tokens) @ r["kernel"] + r["bias"][None, None]
    np.testing.assert_allclose(np.asarray(every), np.asarray(want), **tol(jnp.float32))
    with pytest.raises(ValueError, match="readout must be 'last' or 'all'"):
        make("first")


def test_transformer_grokfast_reference_options():
    """``residual="normed"``: h = norm1(h); h = h + attn(h); h = h + mlp(norm2(h)) (Grokfast's
    reference block); ``embed_std`` sets the embedding init; ``readout_bias=False`` drops it."""
    model = Transformer(
        7, 4, width=8, depth=1, heads=2, embed_std=1.0, residual="normed", readout_bias=False,
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    tokens = jax.random.randint(KEY, (3, 4), 0, 7)
    b = model.blocks[0]
    h = model.token_embed(tokens) + model.pos_embed[...][None]
    h = b.norm1(h)
    h = h + b.attn(h)
    h = h + b.mlp_out(b.act(b.mlp_in(b.norm2(h))))
    want = model.readout(model.norm_f(h)[:, -1])
    np.testing.assert_allclose(np.asarray(model(tokens)), np.asarray(want), rtol=1e-6)
    assert model.readout.bias is None
    big = Transformer(4000, 4, width=64, depth=1, heads=2, embed_std=1.0, rngs=nnx.Rngs(1))
    assert abs(float(jnp.std(big.token_embed.embedding[...])) - 1.0) < 0.01
    stream = Transformer(7, 4, width=8, depth=1, heads=2, rngs=nnx.Rngs(0))
    assert not np.allclose(np.asarray(stream(tokens)), np.asarray(model(tokens)))
    with pytest.raises(ValueError, match="residual must be 'stream' or 'normed'"):
        Transformer(7, 4, width=8, heads=2, residual="post", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="embed_std must be > 0"):
        Transformer(7, 4, width=8, heads=2, embed_std=0.0, rngs=nnx.Rngs(0))


def test_input_validation():
    abstract = lambda make: nnx.eval_shape(lambda: make(nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"MLP expects inputs \(\.\.\., 5\)"):
        abstract(lambda r: MLP(5, (4,), 2, rngs=r))(jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="T <= 4"):
        abstract(lambda r: Transformer(7, 4, width=8, heads=2, rngs=r))(jnp.ones((2, 5), int))
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        abstract(lambda r: EmbedMLP(7, embed_dim=4, hidden=(8,), rngs=r))(jnp.ones((2, 3), int))
    with pytest.raises(ValueError, match="NHWC"):
        abstract(lambda r: CNN(2, 3, rngs=r))(jnp.ones((2, 8, 8, 3)))
    with pytest.raises(ValueError, match="not divisible"):
        abstract(lambda r: Transformer(7, 4, width=10, heads=4, rngs=r))


def test_functional_round_trip():
    model, x = _model("embed")  # the transformer's apply_fn is checked in the causality test
    apply_fn, params = functional(model)
    # params: a nested dict of arrays (Param leaves only, no Variable wrappers)
    assert isinstance(params, dict)
    for leaf in jax.tree.leaves(params, is_leaf=lambda v: isinstance(v, nnx.Variable)):
        assert isinstance(leaf, jax.Array)
    assert count_params(params) == count_params(model) > 0
    direct = nnx.jit(lambda m, x: m(x))(model, x)
    np.testing.assert_allclose(
        np.asarray(jax.jit(apply_fn)(params, x)), np.asarray(direct), **tol(jnp.float32)
    )
    rebuilt = nnx.merge(apply_fn.graphdef, params, apply_fn.other)
    assert_trees_all_close(nnx.to_pure_dict(nnx.state(rebuilt, nnx.Param)), params)
    # A leading params axis (an ensemble) under vmap.
    stacked = jax.tree.map(lambda a: jnp.stack([a, 2.0 * a]), params)
    ys = jax.jit(jax.vmap(apply_fn, in_axes=(0, None)))(stacked, x)
    doubled = jax.tree.map(lambda a: 2.0 * a, params)
    np.testing.assert_allclose(
        np.asarray(ys[0]), np.asarray(apply_fn(params, x)), **tol(jnp.float32)
    )
    np.testing.assert_allclose(
        np.asarray(ys[1]), np.asarray(apply_fn(doubled, x)), **tol(jnp.float32)
    )


def test_abstract_is_functional_without_initializing():
    """abstract(build): the same apply_fn and the params' shapes, and no initializer runs."""
    model, x = _model("embed")
    apply_fn, params = functional(model)
    built = []

    def build():
        built.append(1)
        return _model("embed")[0]

    apply_abs, shapes = abstract(build)
    assert jax.tree.structure(shapes) == jax.tree.structure(params)
    for s, p in zip(jax.tree.leaves(shapes), jax.tree.leaves(params), strict=True):
        assert isinstance(s, jax.ShapeDtypeStruct) and (s.shape, s.dtype) == (p.shape, p.dtype)
    assert count_params(shapes) == count_params(params)
    assert apply_abs.dense == apply_fn.dense
    np.testing.assert_array_equal(np.asarray(apply_abs(params, x)), np.asarray(apply_fn(params, x)))
    assert len(built) == 1  # traced once by nnx.eval_shape, never built for real


def test_functional_method_and_taps():
    model = _model("transformer")[0]
    apply_fn, params = functional(model, method="hidden_states")
    tokens = jnp.ones((2, 3), jnp.int32)
    np.testing.assert_array_equal(np.asarray(apply_fn(params, tokens)),
                                  np.asarray(model.hidden_states(tokens)))  # fmt: skip
    assert apply_fn.dense["blocks/0/attn/qkv"].kernel == ("blocks", 0, "attn", "qkv", "kernel")
    # Tapped forward: per-token layers see n*T rows, the readout n rows.
    _, tape = functional(model)[0].tapped(params, tokens)
    rows = {k: v.shape for k, v in tape.stacked_inputs().items()}
    assert rows["blocks/0/attn/qkv"] == (6, 8) and rows["blocks/0/mlp_out"] == (6, 32)
    assert rows["readout"] == (2, 8)


def test_tape_perturbation_shifts_the_layer_output():
    model = MLP(4, (), 3, dtype=jnp.float64, rngs=nnx.Rngs(0))
    apply_fn, params = functional(model)
    x = jax.random.normal(KEY, (5, 4), jnp.float64)
    e = jax.random.normal(jax.random.key(1), (5, 3), jnp.float64)
    y, tape = apply_fn.tapped(params, x, {"readout": e})
    np.testing.assert_allclose(np.asarray(y), np.asarray(apply_fn(params, x) + e), rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(tape.stacked_inputs()["readout"]), np.asarray(x))
