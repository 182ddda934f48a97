"""Reading a run's history: seed columns, the population-risk check, the stopping rules."""

import numpy as np
import pytest

from dyntheory import probes as P


def test_seed_columns_last_finite_and_value_at():
    nan = np.nan
    np.testing.assert_array_equal(P.seed_columns([1, 2]), [[1.0], [2.0]])
    assert P.seed_columns(np.ones((3, 2))).shape == (3, 2)
    with pytest.raises(ValueError, match=r"\(T,\) or \(T, S\)"):
        P.seed_columns(np.ones((2, 2, 2)))
    h = {"step": np.array([0, 10, 20]), "a": np.array([[1, nan], [2, nan], [nan, nan]])}
    assert P.last_finite(h, "a") == [2.0, None]
    assert P.last_finite(h, "missing") is None
    assert P.value_at(h, "a", 5, 0) == 1.0
    assert P.value_at(h, "a", 10, 0) == 2.0
    assert P.value_at(h, "a", None, 1) is None


def test_stopping_rules_pick_the_heldout_loss_at_each_rules_step():
    steps = np.arange(0, 60, 10)
    pre = "probe/dissipation/"
    h = {
        "step": steps,
        f"{pre}g_channel": np.array([[0, 5, 4, 3, 2, 1], [0, 5, 5, 5, 5, 5]], float).T,
        f"{pre}g_reservoir": np.array([[9, 1, 4.5, 3, 2, 1], [9, 8, 6, 6, 6, 6]], float).T,
        f"{pre}channel_dim": np.array([[0, 2, 3, 3, 4, 4], [0, 1, 1, 1, 1, 1]], float).T,
        "test/loss": np.array([[5, 4, 3, 1, 2, 2.5], [5, 2, 3, 4, 5, 6]], float).T,
    }
    out = P.stopping_rules(h)
    # W_S rule: seed 0 at step 20 (4.5 >= 4), seed 1 at step 10 (8 >= 5)
    assert out["ws_rule_step"] == [20, 10]
    assert out["ws_rule_test_loss"] == [3.0, 2.0]
    assert out["validation_optimal_step"] == [30, 10]
    assert out["validation_optimal_test_loss"] == [1.0, 2.0]
    assert out["final_test_loss"] == [2.5, 6.0]
    assert "loo_rule_step" not in out and "window" not in out
    assert "ws_stability_max" not in out  # reported when the probe logged it
    h[f"{pre}stability"] = np.array([[np.nan, 0.5, 1.2, 0.9, 0.1, 0.2], [0.3] * 6]).T
    h[f"{pre}identity_rel_err"] = np.array([[np.nan] * 5 + [0.01], [0.02] * 6]).T
    out = P.stopping_rules(h)
    assert out["ws_stability_max"] == [1.2, 0.3]
    assert out["ws_identity_rel_err"] == [0.01, 0.02]
    assert P.stopping_rules({"step": steps, "test/loss": h["test/loss"]}) is None
    with pytest.raises(ValueError, match="test/loss"):
        P.stopping_rules({"step": steps})


def test_ws_stopping_step_on_a_hand_history():
    nan = np.nan
    steps = np.arange(0, 60, 10)
    ch = np.array([[0, 5, 4, 3, 2, 1], [0, 5, 5, 5, 5, 5]], float).T
    res = np.array([[9, 8, 4.5, 3, 2, nan], [9, 8, 6, 6, 6, 6]], float).T
    dim = np.array([[0, 2, 3, 3, 4, 4], [0, 0, 0, 0, 0, 0]], float).T
    pre = "probe/dissipation/"
    h = {"step": steps, f"{pre}g_channel": ch, f"{pre}g_reservoir": res, f"{pre}channel_dim": dim}
    # seed 0: step 0 is excluded (no dissipation yet), step 10 has res 8 >= ch 5; seed 1: the
    # channel stays empty, so the rule never fires
    assert P.ws_stopping_step(h) == [10, None]
    h[f"{pre}g_reservoir"] = np.array([[9, 1, 4.5, 3, 2, nan], [9, 1, 1, 1, 1, 1]], float).T
    assert P.ws_stopping_step(h) == [20, None]
    with pytest.raises(ValueError, match="run the Dissipation probe"):
        P.ws_stopping_step({"step": steps})


def test_loo_stopping_step_and_the_heldout_check_on_a_hand_history():
    steps = np.arange(8)
    loo = np.array([[5, 4, 3, -1, -10, 2, 2, 2], [5, 5, 5, 5, 5, 5, 5, 5]], float).T
    hist = {"step": steps, "probe/poprisk/loo_sum": loo}
    # window 2: means 4.5, 3.5, 1, −5.5, …: the first ≤ 0 ends at step 4; seed 2 never stops
    assert P.loo_stopping_step(hist, window=2) == [4, None]
    assert P.loo_stopping_step(hist, window=1) == [3, None]
    with pytest.raises(ValueError, match="PopulationRisk"):
        P.loo_stopping_step({"step": steps})
    # the held-out check pairs predicted_t with L(t + 1) − L(t)
    test = np.array([1.0, 0.9, 0.85, 0.8, 0.8, 0.7, 0.72, 0.71, 0.7])
    pred = np.array([-0.1, -0.05, -0.05, 0.0, -0.1, 0.02, -0.01, -0.01, np.nan])
    h = {"step": np.arange(9), "probe/poprisk/predicted_change": pred, "test/loss": test}
    (row,) = P.population_risk_check(h, "test/loss", windows=(1, 2))
    assert row["steps"] == 8 and row["first_step"] == 0
    np.testing.assert_allclose(row["w1"]["r"], np.corrcoef(pred[:8], np.diff(test))[0, 1])
    assert row["w2"]["n_windows"] == 4
    gap = {**h, "step": np.array([0, 1, 2, 3, 5, 6, 7, 8, 9])}
    with pytest.raises(ValueError, match="consecutive"):
        P.population_risk_check(gap, "test/loss")
    assert P.population_risk_check({"step": steps}, "test/loss") is None
