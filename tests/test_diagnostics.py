"""Trainability diagnostics at init: closed forms, dense cross-checks, warnings, CLI."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dyntheory import linear, spectrum
from dyntheory.cli import diagnose as dcli
from dyntheory.diagnostics import format as dfmt
from dyntheory.diagnostics import measures as dg
from dyntheory.diagnostics import report as dr
from dyntheory.diagnostics.jacobian import per_example_norms
from dyntheory.models import ACTIVATIONS, MLP, functional
from tests.helpers import log_slope

F64 = jnp.float64
RELU_NL = (np.pi - 2) / (2 * np.pi - 2)  # 1 − (1/4)/(1/2 − 1/(2π)) for z ~ N(0, σ²)


def _mlp(d_in, hidden, p, act="tanh", dtype=F64, seed=0, **kw):
    return functional(MLP(d_in, hidden, p, activation=act, dtype=dtype, rngs=nnx.Rngs(seed), **kw))


def _normal(seed, shape, dtype=F64):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


# ----------------------------------------------------------------------------- stability bound


def test_stability_bound_is_the_closed_form_on_a_linear_model():
    """f(x) = W x + b: K = (X̃X̃ᵀ) ⊗ I_p with X̃ = [x, 1]; GD converges below 2n/λ_max, not above."""
    n, d, p = 24, 5, 2
    apply_fn, params = _mlp(d, (), p)
    x, y = _normal(1, (n, d)), _normal(2, (n, p))
    out = dg.ntk_diagnostics(apply_fn, params, x, y)
    xt = np.concatenate([np.asarray(x), np.ones((n, 1))], axis=1)
    lam = np.linalg.eigvalsh(xt @ xt.T)[-1]
    np.testing.assert_allclose(out["suggested_max_lr"], 2 * n / lam, rtol=1e-10)
    np.testing.assert_allclose(out["lambda_max"], lam, rtol=1e-10)
    assert out["numerical_rank"] == (d + 1) * p  # rank of (X̃X̃ᵀ) ⊗ I_p with n > d + 1

    eta = out["suggested_max_lr"]
    steps = 1500
    curves = dr.train_losses(apply_fn, params, x, y, lrs=[0.98 * eta, 1.02 * eta], steps=steps)
    # The loss curve is the closed form r_t = (I − ηK/n)^t r_0 (exact: the model is linear).
    k = np.kron(xt @ xt.T, np.eye(p))
    r0 = (np.asarray(apply_fn(params, x)) - np.asarray(y)).reshape(-1)
    for t in (1, 10, 100):
        r_t = linear.gd_residual(jnp.asarray(k), jnp.asarray(r0), 0.98 * eta, t, n)
        np.testing.assert_allclose(curves[0, t], np.sum(np.asarray(r_t) ** 2) / (2 * n), rtol=1e-8)
    coef = np.linalg.lstsq(xt, np.asarray(y), rcond=None)[0]
    min_loss = np.sum((xt @ coef - np.asarray(y)) ** 2) / (2 * n)
    np.testing.assert_allclose(curves[0, -1], min_loss, rtol=1e-8)
    below, above = dr.classify_run(curves[0], 1e-3), dr.classify_run(curves[1], 1e-3)
    assert below["status"] != "diverged" and below["peak_ratio"] == 1.0
    assert above["status"] == "diverged"
    assert not np.isfinite(curves[1, -1]) or curves[1, -1] > 1e6 * curves[1, 0]


def test_linearized_loss_ratio_matches_linear_reference():
    apply_fn, params = _mlp(4, (16,), 1)
    x, y = _normal(3, (12, 4)), _normal(4, (12, 1))
    out = dg.ntk_diagnostics(apply_fn, params, x, y)
    k = dg.ntk.empirical_ntk(apply_fn, params, x, implementation="jacobian")
    r0 = (apply_fn(params, x) - y).reshape(-1)
    lr = 0.7 * out["suggested_max_lr"]
    for t in (0, 5, 50):
        want = jnp.sum(linear.gd_residual(k, r0, lr, t, 12) ** 2) / jnp.sum(r0**2)
        got = dg.linearized_loss_ratio(out["eigenvalues"], out["residual_energy"], lr, t, 12)
        np.testing.assert_allclose(got, want, rtol=1e-8)
    np.testing.assert_allclose(
        out["kernel_target_alignment"], spectrum.kernel_target_alignment(k, y), rtol=1e-10
    )


def test_cross_entropy_bound_is_two_over_lambda_max_of_bk():
    apply_fn, params = _mlp(4, (8,), 3)
    x = _normal(5, (6, 4))
    labels = jnp.array([0, 1, 2, 0, 1, 2])
    out = dg.ntk_diagnostics(apply_fn, params, x, labels, loss="softmax_ce")
    k = np.asarray(dg.ntk.empirical_ntk(apply_fn, params, x, implementation="jacobian"))
    b = np.asarray(dg.losses.softmax_out_hessian(apply_fn(params, x)))
    lam = np.max(np.linalg.eigvals(b @ k).real)  # B K is similar to B^½ K B^½
    np.testing.assert_allclose(out["suggested_max_lr"], 2 / lam, rtol=1e-8)


# ----------------------------------------------------------------------------- nonlinearity


def test_activation_nonlinearity_closed_forms():
    assert abs(dg.activation_nonlinearity("identity")) < 1e-12
    for scale in (0.3, 1.0, 4.0):  # relu is positively homogeneous: the same share at every σ
        np.testing.assert_allclose(dg.activation_nonlinearity("relu", scale), RELU_NL, atol=1e-6)
    # reglu: 1 − E[relu(a)]²/E[relu(a)²] = 1 − (σ²/2π)/(σ²/2) = 1 − 1/π.
    np.testing.assert_allclose(dg.activation_nonlinearity("reglu"), 1 - 1 / np.pi, atol=1e-6)
    # tanh z = z − z³/3 + ...: the unexplained share is (2/3)σ⁴ + O(σ⁶).
    scales = np.array([0.025, 0.05, 0.1])
    vals = np.array([dg.activation_nonlinearity("tanh", s) for s in scales])
    assert abs(log_slope(scales, vals) - 4) < 0.05
    np.testing.assert_allclose(vals[0] / (2 / 3 * scales[0] ** 4), 1.0, rtol=0.01)
    for name in ACTIVATIONS:
        v = dg.activation_nonlinearity(name)
        assert (v == pytest.approx(0, abs=1e-12)) if name in ("identity", "linear") else 0 < v < 1


def test_affine_unexplained_is_zero_for_affine_and_unbiased_with_noise():
    x = np.asarray(_normal(6, (4000, 10)))
    m = np.asarray(_normal(7, (10, 3)))
    assert abs(dg.affine_unexplained(x, x @ m + 2.0)) < 1e-12
    noise = 0.5 * np.asarray(_normal(8, (4000, 3)))
    share = 3 * 0.25 / (np.sum(m**2) + 3 * 0.25)  # Σ_j s² / Σ_j (‖M_j‖² + s²)
    np.testing.assert_allclose(dg.affine_unexplained(x, x @ m + noise), share, rtol=0.05)
    with pytest.raises(ValueError, match="more rows"):
        dg.affine_unexplained(x[:11], x[:11] @ m)
    with pytest.raises(ValueError, match="same rows"):
        dg.affine_unexplained(x[:5], x[:6])
    with pytest.raises(ValueError, match="constant"):
        dg.affine_unexplained(x, np.ones((4000, 2)))


def test_layer_nonlinearity_zero_for_identity_positive_for_relu():
    x = _normal(9, (512, 6))
    lin_fn, lin_params = _mlp(6, (16, 16), 2, act="identity")
    out = dg.layer_nonlinearity(lin_fn, lin_params, x, activation="identity")
    assert len(out["blocks"]) == 2 and len(out["activation"]) == 2
    for item in out["blocks"] + out["activation"]:
        assert abs(item["nonlinearity"]) < 1e-10
    relu_fn, relu_params = _mlp(6, (16, 16), 2, act="relu")
    out = dg.layer_nonlinearity(relu_fn, relu_params, x, activation="relu")
    assert all(b["nonlinearity"] > 0.05 for b in out["blocks"][:2])
    # Layer 0's pre-activations x W₀ are Gaussian: the sample share matches the quadrature.
    np.testing.assert_allclose(out["activation"][0]["nonlinearity"], RELU_NL, atol=0.03)
    with pytest.raises(ValueError, match="taps"):
        dg.layer_nonlinearity(lambda p, z: relu_fn(p, z), relu_params, x)
    small = dg.layer_nonlinearity(relu_fn, relu_params, x[:10], activation="relu")
    assert {s["from"] for s in small["skipped"]} >= {"layers/1"}


# ----------------------------------------------------------------------------- Jacobians


def _dense(fn, x):
    """Per-example Jacobians (n, M, D) by jacrev."""
    j = jax.vmap(jax.jacrev(lambda xi: fn(xi[None])[0]))(x)
    return np.asarray(j).reshape(x.shape[0], -1, x[0].size)


def _norms(j):
    return (np.linalg.norm(j, axis=(1, 2)), np.linalg.norm(j, ord=2, axis=(1, 2)))


@pytest.mark.parametrize("kw", [{}, {"norm": "layernorm", "residual": True}])
def test_jacobian_norms_match_dense_jacrev(kw):
    apply_fn, params = _mlp(5, (6, 6), 3, **kw)
    x = _normal(10, (4, 5))
    want_fro, want_spec = _norms(_dense(lambda z: apply_fn(params, z), x))
    for limit in (0, 64):  # power iteration; exact from the basis passes
        fro, spec = per_example_norms(
            lambda z: apply_fn(params, z), x, num_iters=300, exact_limit=limit
        )
        np.testing.assert_allclose(fro, want_fro, rtol=1e-10)
        np.testing.assert_allclose(spec, want_spec, rtol=1e-8 if limit == 0 else 1e-10)
    out = dg.jacobian_norms(apply_fn, params, x, num_iters=300)
    np.testing.assert_allclose(out["end_to_end"]["frobenius"], np.sqrt(np.mean(want_fro**2)))
    np.testing.assert_allclose(out["end_to_end"]["spectral"], np.mean(want_spec), rtol=1e-8)
    layers = [r["layer"] for r in out["input_to_layer"]]
    assert layers == ["layers/0", "layers/1", "readout"]
    for row in out["input_to_layer"]:
        f = lambda z, k=row["layer"]: apply_fn.tapped(params, z)[1].stacked_inputs()[k]
        wf, ws = _norms(_dense(f, x))
        np.testing.assert_allclose(row["frobenius"], np.sqrt(np.mean(wf**2)), rtol=1e-10)
        np.testing.assert_allclose(row["spectral"], np.mean(ws), rtol=1e-10)
    first = out["input_to_layer"][0]  # A_0 = x: J = I
    np.testing.assert_allclose([first["frobenius"], first["spectral"]], [np.sqrt(5), 1.0])
    readout = out["layer_to_output"][-1]  # ∂f/∂Z_readout = I_p
    np.testing.assert_allclose([readout["frobenius"], readout["spectral"]], [np.sqrt(3), 1.0])
    if not kw:  # no norm: ∂f/∂Z_1 = W_outᵀ diag(tanh'(Z_1)), per example
        a1 = np.asarray(apply_fn.tapped(params, x)[1].stacked_inputs()["layers/1"])
        z1 = a1 @ np.asarray(params["layers"][1]["kernel"]) + np.asarray(
            params["layers"][1]["bias"]
        )
        w_out = np.asarray(params["readout"]["kernel"])
        j = w_out.T[None, :, :] * (1 - np.tanh(z1) ** 2)[:, None, :]
        wf, ws = _norms(j)
        row = out["layer_to_output"][1]
        np.testing.assert_allclose(
            [row["frobenius"], row["spectral"]], [np.sqrt(np.mean(wf**2)), np.mean(ws)], rtol=1e-10
        )


def test_token_inputs_skip_the_input_jacobian():
    from dyntheory.models import EmbedMLP

    apply_fn, params = functional(
        EmbedMLP(7, embed_dim=4, hidden=(8,), dtype=F64, rngs=nnx.Rngs(0))
    )
    tokens = jnp.array([[0, 1], [2, 3], [4, 5]])
    out = dg.jacobian_norms(apply_fn, params, tokens)
    assert out["end_to_end"] is None and out["input_to_layer"] == []
    assert [r["layer"] for r in out["layer_to_output"]] == ["mlp/layers/0", "mlp/readout"]
    with pytest.raises(ValueError, match="float inputs"):
        per_example_norms(lambda z: z, tokens)


# ----------------------------------------------------------------------------- gradients, warnings


def test_gradient_norms_match_direct_gradients_and_vanishing_warning():
    apply_fn, params = _mlp(4, (8,) * 6, 1, act="sigmoid")
    x, y = _normal(11, (16, 4)), _normal(12, (16, 1))
    g = jax.grad(lambda w: dg.losses.squared_loss(apply_fn(w, x), y))(params)
    out = dg.gradient_norms(apply_fn, params, x, y)
    rows = {r["name"]: r for r in out["layers"]}
    want = np.sqrt(
        np.sum(np.asarray(g["layers"][2]["kernel"]) ** 2)
        + np.sum(np.asarray(g["layers"][2]["bias"]) ** 2)
    )
    np.testing.assert_allclose(rows["layers/2"]["grad_norm"], want, rtol=1e-6)
    assert out["depth_layers"][0] == "layers/0" and out["depth_layers"][-1] == "readout"
    rho = [rows[k]["relative_grad"] for k in out["depth_layers"][:-1]]
    np.testing.assert_allclose(out["grad_ratio"], rho[0] / rho[-1], rtol=1e-12)
    # Sigmoid backpropagates at most 1/4 per layer: six layers lose more than two decades.
    assert out["grad_ratio"] < dr.Thresholds().grad_ratio_low


def _fake_report(**over):
    t = dr.Thresholds()
    rep = {
        "gradients": {"grad_ratio": 1.0},
        "jacobian": {"end_to_end": {"spectral": 1.0}},
        "ntk": {
            "condition_number": 10.0,
            "effective_rank_participation": 5.0,
            "numerical_rank": 3,
            "eigenvalues": [3.0, 2.0, 0.3],
        },
        "linearized": {"lr": 0.1, "steps": 10, "tol": 1e-3, "loss_ratio": 1e-4},
        "overfit": {
            "status": "fit",
            "final_ratio": 1e-4,
            "tol": 1e-3,
            "optimizer": "gd",
            "lr": 0.1,
            "steps": 10,
        },
    }
    for path, value in over.items():
        a, b = path.split("__")
        rep[a][b] = value
    return rep, t


def test_warnings_fire_at_their_thresholds():
    rep, t = _fake_report()
    assert dr.find_warnings(rep) == []
    cases = {
        "vanishing_gradients": {"gradients__grad_ratio": t.grad_ratio_low / 2},
        "exploding_gradients": {"gradients__grad_ratio": t.grad_ratio_high * 2},
        "vanishing_jacobian": {"jacobian__end_to_end": {"spectral": t.jacobian_low / 2}},
        "exploding_jacobian": {"jacobian__end_to_end": {"spectral": t.jacobian_high * 2}},
        "ill_conditioned": {"ntk__condition_number": t.condition_max * 2},
        "rank_collapse": {"ntk__effective_rank_participation": t.effective_rank_min / 2},
        "overfit_failed": {"overfit__status": "not_fit"},
    }
    for name, over in cases.items():
        rep, _ = _fake_report(**over)
        assert [w["name"] for w in dr.find_warnings(rep)] == [name]
    rep, _ = _fake_report(linearized__loss_ratio=0.5)
    assert [w["name"] for w in dr.find_warnings(rep)] == ["linearized_no_fit"]
    rep, _ = _fake_report(ntk__condition_number=float("nan"))  # a NaN is not "fine"
    assert [w["name"] for w in dr.find_warnings(rep)] == ["ill_conditioned"]
    rep, _ = _fake_report(ntk__numerical_rank=2)  # a mode below round-off
    assert [w["name"] for w in dr.find_warnings(rep)] == ["ill_conditioned"]


def test_classify_run():
    assert dr.classify_run([1.0, 0.5, 1e-4, 5e-5], 1e-3) == {
        "status": "fit",
        "steps_to_fit": 2,
        "final_ratio": 5e-5,
        "peak_ratio": 1.0,
    }
    assert dr.classify_run([1.0, 3.0, 0.5], 1e-3)["status"] == "not_fit"
    assert dr.classify_run([1.0, 3.0, 0.5], 1e-3)["peak_ratio"] == 3.0
    assert dr.classify_run([1.0, 2.0, np.nan], 1e-3)["status"] == "diverged"
    assert dr.classify_run([1.0, 0.5, 2.0], 1e-3)["status"] == "diverged"
    assert dr.classify_run([1.0, 0.5, 1.5], 1e-3)["status"] == "not_fit"  # stalled, not diverged
    with pytest.raises(ValueError, match="curve"):
        dr.classify_run([1.0], 1e-3)
    with pytest.raises(ValueError, match="tol > 0"):
        dr.classify_run([1.0, 0.5], 0.0)


# ----------------------------------------------------------------------------- report, bad inputs


def test_diagnose_report_table_and_json(tmp_path):
    apply_fn, params = _mlp(4, (12, 12), 1, act="relu", dtype=jnp.float32)
    x, y = _normal(13, (32, 4), jnp.float32), _normal(14, (32, 1), jnp.float32)
    rep = dr.diagnose(
        apply_fn,
        params,
        x,
        y,
        activation="relu",
        overfit_steps=200,
        overfit_tol=1e-2,
        power_iters=10,
    )
    assert rep["overfit"]["lr"] == pytest.approx(0.5 * rep["ntk"]["suggested_max_lr"])
    assert len(rep["overfit"]["losses"]) == 201
    assert rep["linearized"]["steps"] == 200
    text = dfmt.format_report(rep, "mlp")
    for token in ("layers/0", "layers/1", "readout", "suggested max lr", "overfit test"):
        assert token in text
    path = tmp_path / "r.json"
    path.write_text(json.dumps(rep))  # plain json: the report is JSON-ready as it is
    assert json.loads(path.read_text())["ntk"]["n"] == 32
    comp = dfmt.format_comparison({"a": rep, "b": rep})
    assert comp.count("\n") == 2 and "suggested" not in comp


def test_bad_inputs_raise_clear_errors():
    apply_fn, params = _mlp(3, (4,), 2)
    x, y = _normal(15, (6, 3)), _normal(16, (6, 2))
    with pytest.raises(ValueError, match="6 examples"):
        dg.gradient_norms(apply_fn, params, x, y[:5])
    with pytest.raises(ValueError, match="unknown loss"):
        dg.gradient_norms(apply_fn, params, x, y, loss="hinge")
    with pytest.raises(ValueError, match="outputs' shape"):
        dg.ntk_diagnostics(apply_fn, params, x, y[:, :1])
    with pytest.raises(ValueError, match="integer labels"):
        dg.ntk_diagnostics(apply_fn, params, x, y[:, 0], loss="softmax_ce")
    with pytest.raises(ValueError, match=r"lie in \[0, 2\)"):
        dg.ntk_diagnostics(apply_fn, params, x, jnp.arange(6), loss="softmax_ce")
    with pytest.raises(ValueError, match="n >= 2"):
        dg.check_batch(apply_fn, params, x[:1], y[:1], "squared")
    with pytest.raises(ValueError, match="positive and finite"):
        dr.train_losses(apply_fn, params, x, y, lrs=[0.1, -1.0], steps=5)
    with pytest.raises(ValueError, match="steps"):
        dr.train_losses(apply_fn, params, x, y, lrs=[0.1], steps=0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        dr.diagnose(apply_fn, params, x, y, overfit_optimizer="lbfgs")
    with pytest.raises(ValueError, match="unknown activation"):
        dg.activation_nonlinearity("swoosh")
    with pytest.raises(ValueError, match="scale"):
        dg.activation_nonlinearity("tanh", 0.0)
    with pytest.raises(ValueError, match="num_iters"):
        per_example_norms(lambda z: z, x, num_iters=0)
    with pytest.raises(ValueError, match="must match"):
        dg.linearized_loss_ratio([1.0, 2.0], [1.0], 0.1, 3, 2)


# ----------------------------------------------------------------------------- CLI


def _args(*argv):
    return dcli.build_parser().parse_args(list(argv))


SMALL = (
    "--depth",
    "2",
    "--width",
    "8",
    "--n",
    "16",
    "--d-in",
    "4",
    "--overfit-steps",
    "30",
    "--power-iters",
    "5",
)


def test_cli_handler_writes_json(tmp_path, capsys):
    assert dcli.handler(_args(*SMALL, "--out", str(tmp_path), "--activation", "tanh")) == 0
    rep = json.loads((tmp_path / "diagnostics.json").read_text())
    assert rep["spec"]["activation"] == "tanh" and rep["ntk"]["n"] == 16
    assert "suggested max lr" in capsys.readouterr().out


def test_cli_compare_draws_a_figure(tmp_path, capsys):
    args = _args(*SMALL, "--out", str(tmp_path), "--compare", "depth=1,3", "--quiet")
    assert dcli.handler(args) == 0
    out = json.loads((tmp_path / "diagnostics.json").read_text())
    assert list(out["reports"]) == ["depth=1", "depth=3"]
    assert (tmp_path / "compare.png").stat().st_size > 1000
    assert "depth=3" in capsys.readouterr().out


def test_cli_token_model_and_bad_flags(tmp_path, capsys):
    args = _args(
        "--model",
        "embed_mlp",
        "--depth",
        "1",
        "--width",
        "4",
        "--vocab",
        "5",
        "--n",
        "8",
        "--no-overfit",
        "--out",
        str(tmp_path),
    )
    assert dcli.handler(args) == 0
    rep = json.loads((tmp_path / "diagnostics.json").read_text())
    assert rep["loss"] == "softmax_ce" and rep["overfit"] is None and rep["p"] == 5
    assert rep["jacobian"]["end_to_end"] is None  # token inputs
    with pytest.raises(ValueError, match="cannot vary"):
        dcli.compare_specs(_args("--compare", "lr=1,2"))
    with pytest.raises(ValueError, match="KEY=V1"):
        dcli.compare_specs(_args("--compare", "depth"))
    with pytest.raises(ValueError, match="cannot parse"):
        dcli.compare_specs(_args("--compare", "depth=2,x"))
    assert dcli.main(["--activation", "swoosh", "--out", str(tmp_path)]) == 2
    assert "unknown activation" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--residual"):
        dcli.build(_args("--model", "cnn", "--residual"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dcli.build(_args("--data", str(tmp_path / "missing.npz")))


@pytest.mark.slow
def test_cli_transformer(tmp_path):
    args = _args(
        "--model",
        "transformer",
        "--depth",
        "1",
        "--width",
        "8",
        "--heads",
        "2",
        "--vocab",
        "5",
        "--seq-len",
        "3",
        "--n",
        "8",
        "--overfit-steps",
        "20",
        "--overfit-optimizer",
        "adam",
        "--out",
        str(tmp_path),
    )
    assert dcli.handler(args) == 0
    rep = json.loads((tmp_path / "diagnostics.json").read_text())
    assert rep["loss"] == "softmax_ce" and rep["overfit"]["optimizer"] == "adam"
    layers = [r["layer"] for r in rep["jacobian"]["layer_to_output"]]
    assert layers[0] == "blocks/0/attn/qkv" and layers[-1] == "readout"
    assert [a["layer"] for a in rep["nonlinearity"]["activation"]] == ["blocks/0/mlp_in"]
