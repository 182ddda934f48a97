"""The grokking experiment: modular-arithmetic data, config validation, a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dyntheory.cli import app as cli
from dyntheory.engine import rundir
from dyntheory.engine.config import ConfigError, apply_overrides
from dyntheory.engine.rundir import subrun_dir
from experiments.grokking import PRESETS, Config
from experiments.grokking.data import OPS, all_pairs, is_prime, make_data, tokens
from experiments.grokking.run import first_crossing, median_steps, prm_alpha

pytestmark = pytest.mark.one_device  # their runs on one device (tests/conftest.py)

# --------------------------------------------------------------------------- data


def test_is_prime():
    primes = [q for q in range(60) if is_prime(q)]
    assert primes == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59]


@pytest.mark.parametrize("p", [2, 5, 11, 97])
def test_division_is_multiplication_by_the_inverse(p):
    pairs, c = all_pairs(p, "div")
    a, b = pairs[:, 0], pairs[:, 1]
    assert np.all(b != 0)
    np.testing.assert_array_equal((c.astype(np.int64) * b) % p, a)  # c = a / b  <=>  c b = a


@pytest.mark.parametrize("op", sorted(OPS))
def test_all_pairs_once_with_brute_force_labels(op):
    p = 7
    pairs, c = all_pairs(p, op)
    expected = {}
    for a in range(p):
        for b in range(p):
            if op == "div" and b == 0:
                continue
            inv = next((x for x in range(p) if (b * x) % p == 1), None)
            expected[(a, b)] = {"add": a + b, "sub": a - b, "mul": a * b, "div": a * (inv or 0)}[
                op
            ] % p
    got = {(int(a), int(b)): int(y) for (a, b), y in zip(pairs, c, strict=True)}
    assert len(got) == len(pairs) == (p * (p - 1) if op == "div" else p * p)
    assert got == expected
    assert pairs.dtype == c.dtype == np.int32


@pytest.mark.parametrize("op", sorted(OPS))
def test_b_nonzero_drops_exactly_the_pairs_with_b_zero(op):
    p = 7
    full, c_full = all_pairs(p, op)
    pairs, c = all_pairs(p, op, b_nonzero=True)
    keep = full[:, 1] != 0
    np.testing.assert_array_equal(pairs, full[keep])
    np.testing.assert_array_equal(c, c_full[keep])
    assert len(pairs) == p * (p - 1)
    d = make_data(p, op, 0.5, b_nonzero=True)
    assert len(d.y_train) + len(d.y_test) == p * (p - 1)


@pytest.mark.parametrize("frac", [0.25, 0.5, 0.9])
def test_split_sizes_disjoint_and_complete(frac):
    d = make_data(p=13, op="div", train_fraction=frac, split_seed=3)
    n = 13 * 12
    assert len(d.y_train) == round(frac * n) and len(d.y_test) == n - round(frac * n)
    rows = {tuple(r) for r in np.concatenate([d.x_train, d.x_test])}
    assert len(rows) == n  # every pair exactly once, train and test disjoint
    assert d.x_train.shape == (len(d.y_train), 2) and d.vocab_size == 13


def test_split_is_deterministic_and_seeded():
    a = make_data(11, "add", 0.5, split_seed=0)
    b = make_data(11, "add", 0.5, split_seed=0)
    c = make_data(11, "add", 0.5, split_seed=1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)


def test_sequence_tokens():
    d = make_data(7, "mul", 0.5, fmt="sequence")
    assert d.x_train.shape[1] == 4 and d.vocab_size == 9
    np.testing.assert_array_equal(d.x_train[:, 1], 7)  # the operation token
    np.testing.assert_array_equal(d.x_train[:, 3], 8)  # "="
    np.testing.assert_array_equal((d.x_train[:, 0] * d.x_train[:, 2]) % 7, d.y_train)
    with pytest.raises(ValueError, match="unknown token format"):
        tokens(np.zeros((1, 2), np.int32), 7, "bytes")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(p=91, op="div"), "needs p prime.*91 is not prime.*89, 97"),
        (dict(p=1, op="add"), "integer >= 2"),
        (dict(p=7, op="pow"), "unknown operation 'pow'; valid operations: add.*sub.*mul.*div"),
        (dict(p=7, op="add", train_fraction=0.0), "strictly between 0 and 1"),
        (dict(p=7, op="add", train_fraction=1.0), "strictly between 0 and 1"),
        (dict(p=7, op="add", train_fraction=0.01), "both the train and the test set"),
    ],
)
def test_make_data_rejects_bad_tasks(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_data(**{"train_fraction": 0.5, **kwargs})


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("p=96", "needs p prime"),
        ("train_fraction=1.5", "strictly between 0 and 1"),
        ("train_fraction=0", "strictly between 0 and 1"),
        ("op=pow", "valid operations: add"),
        ("optimizers=sgd", "subset of adamw, prm"),
        ("warmup_steps=-1", "warmup_steps must be >= 0"),
        ("warmup_steps=20", "start W_S after the warm-up"),
        ("transformer_style=bert", "transformer_style"),
    ],
)
def test_bad_set_values_raise_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(PRESETS["quick"].config, [override])


def test_prm_alpha_is_b_over_n_minus_b_and_full_batch_needs_it_explicitly():
    cfg = PRESETS["quick"].config  # ÷ mod 59, half of 59·58 pairs, batch 512
    n = round(0.5 * 59 * 58)
    assert prm_alpha(cfg, n) == pytest.approx(512 / (n - 512))
    full = apply_overrides(cfg, ["batch_size=none", "prm_alpha=1"])
    assert prm_alpha(full, n) == 1.0
    with pytest.raises(ValueError, match="full batch has no sampling noise.*prm_alpha"):
        prm_alpha(apply_overrides(cfg, ["batch_size=none"]), n)


def test_cli_reports_bad_values_before_compute(tmp_path, capsys):
    out = tmp_path / "run"
    status = cli.main(["run", "grokking", "--preset", "tiny", "--set", "p=12", "--out", str(out)])
    assert status == 2
    assert "12 is not prime" in capsys.readouterr().err
    assert not (out / "config.json").exists()


def test_presets():
    paper = PRESETS["paper"].config
    assert (paper.p, paper.op, paper.train_fraction, paper.model) == (
        97,
        "div",
        0.25,
        "transformer",
    )
    assert (paper.depth, paper.width, paper.heads, paper.train.batch_size) == (2, 128, 4, 512)
    o = paper.optim
    assert (o.lr, o.weight_decay, o.b1, o.b2) == (1e-3, 1.0, 0.9, 0.98)
    quick = PRESETS["quick"].config
    assert quick.optimizers == ("adamw", "prm") and quick.train.seeds == 3
    assert "dyntheory run grokking --preset quick" in Config.__doc__


def test_first_crossing_and_median():
    steps = np.array([0, 50, 100, 150])
    acc = np.array([[0.1, 0.2], [0.96, np.nan], [0.5, 0.2], [0.97, 0.3]])
    assert first_crossing(steps, acc, 0.95) == [50, None]
    assert median_steps([100, None, 300]) == 300.0  # "not reached" counts as +inf
    assert median_steps([100, None, None]) is None


def test_sub_runs_resume_only_while_their_spec_is_unchanged(tmp_path):
    cfg = PRESETS["tiny"].config
    sub = tmp_path / "prm"
    subrun_dir(sub, {"optimizer": "prm"}, config=cfg)
    rundir.RunDir(sub).append_metrics([{"step": 0}])  # what a started engine run leaves
    # `resume --set steps=N` continues, and so does a changed optimizer hyperparameter
    for changed in (["steps=80"], ["steps=80", "lr=0.0005"]):
        subrun_dir(sub, {"optimizer": "prm"}, config=apply_overrides(cfg, changed))
        assert (sub / "metrics.jsonl").exists()
    other = apply_overrides(cfg, ["width=8"])  # a changed model starts over
    subrun_dir(sub, {"optimizer": "prm"}, config=other)
    assert not (sub / "metrics.jsonl").exists()


# --------------------------------------------------------------------------- end to end


def test_tiny_run_writes_results_that_the_figure_reads(tiny_run, tmp_path):
    out = tiny_run("grokking")
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["optimizers"].keys() == {"adamw", "prm"}
    cfg = PRESETS["tiny"].config
    for r in on_disk["optimizers"].values():
        for key in ("steps_to_train_target", "steps_to_test_target"):
            assert set(r[key]) == {"per_seed", "median"}
            assert len(r[key]["per_seed"]) == cfg.train.seeds
        assert len(r["final_test_acc"]) == cfg.train.seeds
        assert all(0.0 <= a <= 1.0 for a in r["final_train_acc"] + r["final_test_acc"])
        assert r["wall_time_s"] > 0
        assert len(r["ntk/lambda_max_final"]) == cfg.train.seeds
        d = r["dissipation"]  # the per-step reference, the default integrator, and its split
        assert d["integrator"] == "stepwise" and "augmented" in d["split_of"]
        assert len(d["max_identity_rel_err"]) == len(d["channel_dim"]) == cfg.train.seeds
        assert all(np.isfinite(e) for e in d["max_identity_rel_err"] + d["identity_rel_err"])
        for a, b, c in zip(d["g0_channel"], d["g0_reservoir"], d["channel_dim"], strict=True):
            assert a >= 0 and b >= 0 and 1 <= c <= cfg.stepwise_rank
    assert len(on_disk["optimizers"]["prm"]["gate_open_fraction_final"]) == cfg.train.seeds
    for key in (
        "ratio_adamw_over_prm",
        "ratio_adamw_over_prm_per_seed",
        "wall_time_s",
        "prm_alpha",
        "task",
        "step_resolution",
    ):
        assert key in on_disk
    assert on_disk["wall_time_s"] > 0
    from paper_figures import grokking as figure  # the figure reads the run directory only

    png, pdf = figure.draw(out, tmp_path)
    assert png.stat().st_size > 0 and pdf.exists()
    assert (out / "adamw" / "metrics.jsonl").exists() and (out / "prm" / "probes.npz").exists()


def test_tiny_run_with_the_grokfast_control(tmp_path):
    # Grokfast with the NTK / W_S probes (Adam's preconditioner); the AdamW/Grokfast ratio is
    # covered by the preset smoke runs below
    overrides = ["optimizers=grokfast", "probes_per_decade=1", "steps=20"]
    _, results = cli.run_experiment("grokking", "tiny", overrides, out=tmp_path / "run")
    assert results["optimizers"].keys() == {"grokfast"}
    assert results["ratio_adamw_over_grokfast"] is None and results["ratio_adamw_over_prm"] is None
    assert (tmp_path / "run" / "grokfast" / "probes.npz").exists()


def test_grokfast_presets_are_grokfasts_setting():
    for name, model in (("grokfast", "mlp"), ("grokfast-transformer", "transformer")):
        cfg = PRESETS[name].config
        assert (cfg.p, cfg.op, cfg.train_fraction, cfg.model) == (97, "mul", 0.5, model)
        assert cfg.optimizers == ("adamw", "grokfast") and cfg.train.batch_size == 512
        # the baseline is Adam without weight decay; only Grokfast's inner AdamW decays (0.005)
        o = cfg.optim
        assert (o.weight_decay, o.grokfast_weight_decay) == (0.0, 0.005)
        assert (o.grokfast_alpha, o.grokfast_lamb, o.lr) == (0.98, 2.0, 1e-3)
        assert cfg.probes_per_decade == 0 and cfg.b_nonzero and o.warmup_steps == 10
    t = PRESETS["grokfast-transformer"].config
    assert (t.depth, t.width, t.heads) == (2, 128, 4)
    # the reference code's decoder and torch.optim.Adam's L2 decay after the filter
    assert (t.transformer_style, t.optim.grokfast_weight_decay_mode) == ("grokfast", "l2")


def _tiny():
    return ["p=11", "width=16", "hidden=32", "steps=20", "batch_size=24", "seeds=1"] + [
        "eval_every=10",
        "log_every=10",
    ]


@pytest.mark.parametrize("preset", ["grokfast", "grokfast-transformer"])
def test_grokfast_presets_smoke(tmp_path, preset):
    overrides = _tiny() + (["depth=1", "heads=2"] if "transformer" in preset else [])
    _, results = cli.run_experiment("grokking", preset, overrides, out=tmp_path / "run")
    assert results["optimizers"].keys() == {"adamw", "grokfast"}
    assert results["task"]["op"] == "mul" and results["ratio_adamw_over_prm"] is None
    assert "ratio_adamw_over_grokfast" in results


def test_per_optimizer_weight_decay_and_gated_decay():
    import jax.numpy as jnp

    params = {"w": jnp.ones(3)}
    zero = {"w": jnp.zeros(3)}
    cfg = apply_overrides(PRESETS["grokfast"].config, ["grokfast_weight_decay=0.5"])

    def step(name, cfg, alpha=None):
        opt = cfg.optim.resolve(family=name, lr=0.1, prm_alpha=alpha, warmup_steps=0).build()
        updates, _ = opt.update(zero, opt.init(params), params)
        return np.asarray(updates["w"])

    np.testing.assert_allclose(step("adamw", cfg), 0.0)  # weight_decay=0 for the baseline
    np.testing.assert_allclose(step("grokfast", cfg), -0.1 * 0.5, rtol=1e-6)  # its own decay
    l2 = apply_overrides(cfg, ["grokfast_weight_decay_mode=l2"])
    np.testing.assert_allclose(step("grokfast", l2), -0.1, rtol=1e-3)  # Adam normalizes wd·w
    cfg = apply_overrides(PRESETS["quick"].config, ["weight_decay=0.5"])
    np.testing.assert_allclose(step("prm", cfg, 1.0), -0.1 * 0.5, rtol=1e-6)  # Algorithm 1
    gated = apply_overrides(cfg, ["prm_gate_weight_decay=true"])
    assert np.all(np.abs(step("prm", gated, 1.0)) < 0.1 * 0.5)  # zero gradient: the gate is shut


def test_warmup_is_linear_from_zero_for_every_optimizer():
    import jax.numpy as jnp

    from experiments.grokking.run import make_optimizer

    flat = apply_overrides(PRESETS["quick"].config, ["weight_decay=0"])
    warm = apply_overrides(flat, ["warmup_steps=4"])
    params = {"w": jnp.ones(2)}
    grads = [{"w": jnp.array([1.0 + 0.1 * t, -1.0])} for t in range(6)]

    def sizes(cfg, name):
        opt = make_optimizer(cfg, name, n_train=1711)
        state, out = opt.init(params), []
        for g in grads:
            updates, state = opt.update(g, state, params)
            out.append(np.asarray(updates["w"]))
        return np.stack(out)

    for name in ("adamw", "prm", "grokfast"):
        a, b = sizes(warm, name), sizes(flat, name)
        factor = np.minimum(np.arange(6) / 4, 1.0)[:, None]  # update t uses lr · min(t/4, 1)
        np.testing.assert_allclose(a, factor * b, rtol=1e-6, atol=1e-12, err_msg=name)


def test_grokfast_reference_decoder_and_b_nonzero_smoke(tmp_path):
    overrides = _tiny() + ["depth=1", "heads=2", "optimizers=grokfast"]
    _, results = cli.run_experiment(
        "grokking", "grokfast-transformer", overrides, out=tmp_path / "run"
    )
    assert results["task"]["n_train"] + results["task"]["n_test"] == 11 * 10  # no b = 0


def test_tiny_run_with_gated_weight_decay(tmp_path):
    overrides = ["optimizers=prm", "prm_gate_weight_decay=true", "steps=20", "probes_per_decade=0"]
    _, results = cli.run_experiment("grokking", "tiny", overrides, out=tmp_path / "run")
    assert results["optimizers"]["prm"]["gate_mean_final"] is not None


def test_refresh_integrator_smoke(tmp_path):
    """The refresh integrator (``dissipation_integrator=refresh``): its W_S block, split and
    validity checks land in results.json, naming the momentum-free Gramian that is split."""
    overrides = ["optimizers=prm", "steps=20", "dissipation_integrator=refresh"]
    overrides += ["ntk_spectrum=false", "dissipation_start=3"]
    _, results = cli.run_experiment("grokking", "tiny", overrides, out=tmp_path / "run")
    r = results["optimizers"]["prm"]
    assert "momentum-free" in r["dissipation"]["split_of"] and "stepwise" not in r
    assert len(r["dissipation/w_effective_rank_last_valid"]) == 2
    assert all(np.isfinite(e) for e in r["dissipation"]["identity_rel_err_augmented"])


def test_exact_spectrum_by_the_adjoint_smoke(tmp_path):
    """stepwise_exact_topk: the whole W_gg's top k by the adjoint over the recorded path, in
    results.json, with the complete basis (stepwise_check_spectrum) equal to it and the tracked
    block checked against it."""
    overrides = ["optimizers=adamw", "seeds=1", "steps=12", "dissipation_start=3"]
    overrides += ["ntk_spectrum=false", "stepwise_exact_topk=2", "stepwise_check_spectrum=2"]
    _, results = cli.run_experiment("grokking", "tiny", overrides, out=tmp_path / "run")
    d = results["optimizers"]["adamw"]["dissipation"]
    (top,) = d["exact_top_eigenvalues"]
    assert len(top) == 2 and top[0] >= top[1] > 0
    assert d["exact_vs_complete_rel_err"][0] < 1e-4  # float32 training, float64 recursions
    assert 0 <= d["exact_vs_tracked_rel_err"][0] <= 1
    with pytest.raises(ConfigError, match="stepwise_exact_topk"):
        apply_overrides(
            PRESETS["tiny"].config, ["stepwise_exact_topk=2", "dissipation_integrator=refresh"]
        )


def test_norms_option_logs_parameter_norms_at_every_eval_step(tmp_path):
    overrides = ["optimizers=adamw", "norms=true", "steps=20", "seeds=1", "probes_per_decade=0"]
    _, results = cli.run_experiment("grokking", "tiny", overrides, out=tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "adamw" / "metrics.jsonl").open()]
    rows = [r for r in rows if "probe/norms/param/global" in r]
    assert [r["step"] for r in rows] == [0, 10, 20]
    for r in rows:  # the global norm is the root of the per-tensor norms' squares
        parts = [
            v for k, v in r.items() if k.startswith("probe/norms/param/") and "global" not in k
        ]
        assert len(parts) >= 4
        np.testing.assert_allclose(
            np.sqrt(np.sum(np.square(parts))), r["probe/norms/param/global"], rtol=1e-5
        )
    assert rows[0]["probe/norms/param/global"] != rows[-1]["probe/norms/param/global"]


def test_poprisk_preset_smoke(tmp_path):
    overrides = [*_tiny()[:5], "eval_every=1", "log_every=1", "optimizers=adamw,prm"]
    _, results = cli.run_experiment("grokking", "poprisk", overrides, out=tmp_path / "run")
    for name in ("adamw", "prm"):
        (row,) = results["optimizers"][name]["poprisk_check"]  # one seed
        assert row["steps"] == 20 and row["w10"]["n_windows"] == 2 and -1 <= row["w1"]["r"] <= 1
    with pytest.raises(ConfigError, match="eval_every=1"):
        apply_overrides(PRESETS["poprisk"].config, ["eval_every=10"])
