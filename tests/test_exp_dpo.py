"""The DPO experiment: the loss by hand, sequence log-probabilities, the flips, bad input, a run."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dyntheory.cli import app as cli
from dyntheory.engine.config import ConfigError, apply_overrides
from dyntheory.models import Transformer, functional
from experiments.dpo import PRESETS, Config
from experiments.dpo.data import Task, make_task, true_reward
from experiments.dpo.losses import (
    dpo_loss,
    make_dpo_loss,
    response_mask,
    sequence_logprob,
)
from paper_figures import dpo as dpo_figure

pytestmark = pytest.mark.one_device  # their runs on one device (tests/conftest.py)

TASK = Task(vocab=6, prompt_len=3, len_min=1, len_max=4, n_train=50, n_val=8, n_test=12)

# --------------------------------------------------------------------------- loss


def test_dpo_loss_against_a_hand_computation_on_two_pairs():
    beta = 0.5
    pi_w, pi_l = jnp.array([-1.0, -2.0]), jnp.array([-3.0, -1.0])
    ref_w, ref_l = jnp.array([-1.5, -2.0]), jnp.array([-2.5, -1.5])
    # pair 1: 0.5·((−1 + 1.5) − (−3 + 2.5)) = 0.5; pair 2: 0.5·((−2 + 2) − (−1 + 1.5)) = −0.25
    want = (math.log(1 + math.exp(-0.5)) + math.log(1 + math.exp(0.25))) / 2
    loss, rw, rl = dpo_loss(pi_w, pi_l, ref_w, ref_l, beta)
    assert float(loss) == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(np.asarray(rw), [0.25, 0.0])
    np.testing.assert_allclose(np.asarray(rl), [-0.25, 0.25])
    with pytest.raises(ValueError, match="β must be > 0"):
        dpo_loss(pi_w, pi_l, ref_w, ref_l, 0.0)
    with pytest.raises(ValueError, match="β must be > 0"):
        make_dpo_loss(-1.0, 3, 6)


def _model(task: Task):
    model = Transformer(
        task.vocab_size, task.seq_len - 1, width=8, heads=2, depth=1, readout="all",
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    return functional(model)


def test_sequence_logprob_is_the_step_by_step_sum_of_token_log_softmax():
    d = make_task(TASK)
    apply_fn, params = _model(TASK)
    seq = d.train["w"][:5]
    got = np.asarray(
        sequence_logprob(apply_fn, params, jnp.asarray(seq), TASK.prompt_len, TASK.pad)
    )
    forward = jax.jit(apply_fn)  # one program per prefix length (op by op took 20 s)
    for i, s in enumerate(seq):
        total, j = 0.0, TASK.prompt_len  # position j (SEP) predicts the first response token
        while j + 1 < len(s) and s[j + 1] != TASK.pad:
            logits = np.asarray(forward(params, jnp.asarray(s[None, : j + 1])), np.float64)[0, -1]
            top = logits.max()
            total += logits[s[j + 1]] - top - math.log(np.exp(logits - top).sum())
            j += 1
        assert s[j] == TASK.eos  # the sum ran over the response and its EOS
        assert got[i] == pytest.approx(total, rel=1e-5, abs=1e-5)


def test_response_mask_covers_the_response_and_eos():
    d = make_task(TASK)
    seq = d.train["w"]
    mask = np.asarray(response_mask(jnp.asarray(seq), TASK.prompt_len, TASK.pad))
    length = (seq[:, TASK.prompt_len + 1 :] < TASK.vocab).sum(axis=1)
    np.testing.assert_array_equal(mask.sum(axis=1), length + 1)
    assert mask[:, : TASK.prompt_len].sum() == 0


# --------------------------------------------------------------------------- data


@pytest.mark.parametrize("flip", [0.0, 0.3, 0.5])
def test_exactly_the_flip_fraction_is_swapped_and_held_out_pairs_are_clean(flip):
    clean = make_task(dataclasses.replace(TASK, flip=0.0))
    d = make_task(dataclasses.replace(TASK, flip=flip))
    f = d.train["flipped"].astype(bool)
    assert f.sum() == round(flip * TASK.n_train)
    np.testing.assert_array_equal(d.train["w"][f], clean.train["l"][f])
    np.testing.assert_array_equal(d.train["l"][f], clean.train["w"][f])
    np.testing.assert_array_equal(d.train["w"][~f], clean.train["w"][~f])
    np.testing.assert_array_equal(d.train["r_w"][f], clean.train["r_l"][f])
    for split in ("val", "test"):
        a, b = getattr(d, split), getattr(clean, split)
        assert a["flipped"].sum() == 0
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_true_reward_by_hand():
    t = dataclasses.replace(TASK, copy_weight=2.0, length_weight=0.5)
    from experiments.dpo.data import Responses, reward_weights

    theta = reward_weights(t)
    prompts = np.array([[0, 1, 2]])
    resp = Responses(np.array([[1, 5, t.pad, t.pad]], np.int32), np.array([2], np.int32))
    want = (theta[1] + theta[5]) / 2 + 2.0 * (1 / 2) + 0.5 * 2 / t.len_max
    assert true_reward(t, prompts, resp)[0] == pytest.approx(want)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("flip=1.0", r"flip .* must lie in \[0, 1\), got 1.0"),
        ("flip=-0.1", r"flip .* must lie in \[0, 1\)"),
        ("beta=0", "beta .* must be > 0, got 0"),
        ("beta=-0.1", "beta .* must be > 0"),
        ("vocab=0", "vocabulary is empty"),
        ("vocab=1", "vocab must be >= 2"),
        ("len_min=5", "len_min <= len_max"),
        ("optimizers=sgd", "subset of adamw, prm"),
        ("batch_size=64", "batch_size must be smaller than n_train=64"),
    ],
)
def test_bad_values_raise_config_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(PRESETS["tiny"].config, [override])


def test_make_task_rejects_an_empty_vocabulary():
    with pytest.raises(ValueError, match="vocabulary is empty"):
        make_task(dataclasses.replace(TASK, vocab=0))


def test_cli_reports_bad_values_before_compute(tmp_path, capsys):
    out = tmp_path / "run"
    status = cli.main(["run", "dpo", "--preset", "tiny", "--set", "flip=1", "--out", str(out)])
    assert status == 2
    assert "flip" in capsys.readouterr().err
    assert not (out / "config.json").exists()


def test_presets_open_with_their_command():
    for name, preset in PRESETS.items():
        assert preset.description.startswith(f"dyntheory run dpo --preset {name}")
    assert "dyntheory run dpo --preset quick" in Config.__doc__
    assert PRESETS["quick"].config.task.flip == 0.3 and PRESETS["quick"].config.train.seeds >= 3


# --------------------------------------------------------------------------- end to end


def test_tiny_run_writes_results_and_its_figure(tiny_run, tmp_path):
    out = tiny_run("dpo")
    on_disk = json.loads((out / "results.json").read_text())
    cfg = PRESETS["tiny"].config
    assert on_disk["best"].keys() == {"adamw", "prm"}
    assert on_disk["task"]["flipped_train_pairs"] == round(cfg.task.flip * cfg.task.n_train)
    for b in on_disk["best"].values():
        for k in ("test_acc", "test_true_acc", "test_drift", "train_flip_fit", "val_acc"):
            assert len(b[k]) == cfg.train.seeds and all(np.isfinite(b[k]))
        assert all(0.0 <= a <= 1.0 for a in b["test_acc"])
    assert len(on_disk["best"]["prm"]["gate_mean final"]) == cfg.train.seeds
    assert on_disk["claims"]["verdict"] in {"reproduced", "partly", "not reproduced"}
    assert on_disk["claims"]["paper"]["prm_acc"] == 0.641
    # step 0 is the reference itself: every implicit reward 0, accuracy exactly ½
    m = [json.loads(line) for line in (out / "adamw_lr0.001" / "metrics.jsonl").open()]
    first = next(r for r in m if r["step"] == 0 and "eval/test_acc" in r)
    assert first["eval/test_acc"] == 0.5 and first["eval/test_drift"] < 1e-4
    paths = dpo_figure.draw(out, tmp_path / "fig")
    assert [p.name for p in paths] == ["dpo.png", "dpo.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
