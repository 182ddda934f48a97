"""Reading a run's history (``metrics_table``'s ``{"step": (T,), key: (T,) or (T, S)}``).

Numpy only, no held-out data unless a function says so:

- :func:`seed_columns`, :func:`last_finite`, :func:`value_at`: a metrics column per seed;
  :func:`last_value` (one seed's, or the per-seed list) and :func:`ratio` (``a/b`` or None) for
  results files.
- :func:`population_risk_check`: the :class:`~dyntheory.probes.PopulationRisk` probe's predicted
  change against the held-out loss's realized change (THEORY.md §6).
- :func:`loo_stopping_step`, :func:`ws_stopping_step`: stopping rules from the training set alone;
  :func:`stopping_rules` sets them against the validation-optimal step (THEORY.md §6).
"""

from __future__ import annotations

import numpy as np

from dyntheory import poprisk


def seed_columns(v) -> np.ndarray:
    """A metrics column as float ``(T, S)``: a seed axis even for a one-seed run's ``(T,)``."""
    v = np.asarray(v, dtype=float)
    if v.ndim not in (1, 2):
        raise ValueError(f"a metrics column is (T,) or (T, S), got shape {v.shape}")
    return v[:, None] if v.ndim == 1 else v


def value_at(history: dict, key: str, step: int | None, seed: int) -> float | None:
    """The last finite value of ``key`` at or before ``step`` (``None``: the end) for one seed;
    ``None`` if there is none."""
    col = seed_columns(history[key])[:, seed]
    limit = np.inf if step is None else step
    ok = np.isfinite(col) & (np.asarray(history["step"]) <= limit)
    return float(col[np.flatnonzero(ok)[-1]]) if ok.any() else None


def last_finite(history: dict, key: str) -> list[float | None] | None:
    """The last logged finite value of ``key`` per seed (``None`` for a seed that never logged
    it); ``None`` if the history has no ``key`` at all."""
    if key not in history:
        return None
    return [value_at(history, key, None, s) for s in range(seed_columns(history[key]).shape[1])]


def last_value(history: dict, key: str, seed: int | None = None):
    """The last finite value of ``key``: for ``seed`` (a float or None), or with ``seed=None`` per
    seed (a float for a one-seed history, else a list); None if ``key`` was never logged."""
    per_seed = last_finite(history, key)
    if per_seed is None:
        return None
    if seed is not None:
        return per_seed[seed]
    return per_seed[0] if len(per_seed) == 1 else per_seed


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or non-finite or ``b`` is not positive."""
    if a is None or b is None or not (np.isfinite(a) and np.isfinite(b)) or b <= 0:
        return None
    return a / b


WINDOWS = (1, 10, 100, 1000)


def _check_block(p: np.ndarray, a: np.ndarray, windows) -> dict:
    out: dict = {"sum_predicted": float(p.sum()), "sum_actual": float(a.sum())}
    for w in windows:
        if len(p) // w >= 2:
            c = poprisk.window_correlation(p, a, w)
            out[f"w{w}"] = {k: getattr(c, k) for k in ("r", "ci_low", "ci_high", "n_windows")}
    return out


def population_risk_check(
    history: dict,
    heldout: str,
    name: str = "poprisk",
    windows=WINDOWS,
    split_at: list[int] | None = None,
) -> list[dict] | None:
    """The :class:`PopulationRisk` probe's predicted change against the held-out loss's change.

    For every step ``t`` whose line has the probe's ``predicted_change`` and the held-out loss
    ``heldout`` (a metrics key, e.g. ``"test/loss"``) at ``t`` and ``t + 1``, the pair
    (predicted_t, ``L(t + 1) − L(t)``) enters :func:`dyntheory.poprisk.window_correlation`; the
    steps must be consecutive, so run the probe and the evaluation every step. Returns, per seed,
    ``{"steps": T, "first_step", "sum_predicted", "sum_actual", "w<k>": {"r", "ci_low",
    "ci_high", "n_windows"}}`` for each window ``k`` that leaves at least 2 windows; with
    ``split_at`` (a step per seed) the same blocks again as ``"before"`` (``t <`` the step) and
    ``"after"``. ``None`` when the history has no such pairs.
    """
    key = f"probe/{name}/predicted_change"
    if key not in history or heldout not in history:
        return None
    steps = np.asarray(history["step"])
    pred, held = seed_columns(history[key]), seed_columns(history[heldout])
    row_of = {int(t): i for i, t in enumerate(steps)}
    out = []
    for s in range(pred.shape[1]):
        loss_at = {int(t): v for t, v in zip(steps, held[:, s], strict=True) if np.isfinite(v)}
        ts = [int(t) for t, v in zip(steps, pred[:, s], strict=True) if np.isfinite(v)]
        ts = [t for t in ts if t in loss_at and t + 1 in loss_at]
        if len(ts) < 2:
            return None
        if np.any(np.diff(ts) != 1):
            raise ValueError(
                f"{key} and {heldout} are not on consecutive steps: run the probe and the "
                "evaluation every step (probe schedule every:1, eval_every=1)."
            )
        p = np.array([pred[row_of[t], s] for t in ts])
        a = np.array([loss_at[t + 1] - loss_at[t] for t in ts])
        row: dict = {"steps": len(ts), "first_step": ts[0], **_check_block(p, a, windows)}
        if split_at is not None:
            before = np.asarray(ts) < split_at[s]
            row["split_step"] = int(split_at[s])
            row["before"] = _check_block(p[before], a[before], windows)
            row["after"] = _check_block(p[~before], a[~before], windows)
        out.append(row)
    return out


def loo_stopping_step(history: dict, window: int = 100, name: str = "poprisk") -> list:
    """A stopping rule from the training set alone: stop once the gradient signal is gone.

    Per seed, the first step ``t ≥ window − 1`` at which the mean of the probe's ``loo_sum``
    (``Σ_k (μ_k² − Σ_{B,k}/(b − 1))``, unbiased for ``‖∇R‖²``, THEORY.md §6) over the last
    ``window`` probed steps is ``≤ 0``: the minibatch gradients no longer agree on any direction
    of population descent. ``None`` for a seed where that never happens. Needs the probe every
    step; no held-out data is read.
    """
    key = f"probe/{name}/loo_sum"
    if key not in history:
        raise ValueError(f"the history has no {key!r}: run the PopulationRisk probe every step.")
    if not (isinstance(window, int) and window >= 1):
        raise ValueError(f"window must be a positive integer, got {window!r}")
    steps = np.asarray(history["step"])
    loo = seed_columns(history[key])
    out = []
    for col in loo.T:
        ok = np.isfinite(col)
        t, v = steps[ok], col[ok]
        if len(v) < window:
            out.append(None)
            continue
        means = np.convolve(v, np.ones(window) / window, mode="valid")
        hit = np.flatnonzero(means <= 0)
        out.append(int(t[hit[0] + window - 1]) if hit.size else None)
    return out


def ws_stopping_step(history: dict, name: str = "dissipation") -> list:
    """A stopping rule from ``W_S``'s split of the training set alone (THEORY.md §6).

    Per seed, the first probe step ``s > 0`` with a non-empty channel at which the remaining
    training residual lies mostly in the reservoir: ``g_reservoir(s) ≥ g_channel(s)``, the
    energies of ``g(s)`` outside and inside the directions that training has already
    dissipated (:func:`dyntheory.split.split`). What the run can fit quickly is then fitted;
    what is left is being fitted through the directions that carry the label noise. ``None``
    for a seed where that never happens. No held-out data is read; its one threshold (1:1) and
    the split's are fixed in advance.
    """
    keys = [f"probe/{name}/{k}" for k in ("g_channel", "g_reservoir", "channel_dim")]
    missing = [k for k in keys if k not in history]
    if missing:
        raise ValueError(f"the history has no {missing[0]!r}: run the Dissipation probe.")
    steps = np.asarray(history["step"])
    ch, res, dim = (seed_columns(history[k]) for k in keys)
    out = []
    for s in range(ch.shape[1]):
        fire = np.isfinite(ch[:, s]) & (steps > 0) & (dim[:, s] > 0) & (res[:, s] >= ch[:, s])
        out.append(int(steps[np.argmax(fire)]) if fire.any() else None)
    return out


def stopping_rules(history: dict, heldout: str = "test/loss", window: int = 100) -> dict | None:
    """The training-set-only stopping rules against the validation-optimal step, per seed.

    The LOO rule (:func:`loo_stopping_step`, ``window`` fixed in advance, not tuned on the
    held-out set) when the PopulationRisk probe ran; the W_S rule (:func:`ws_stopping_step`)
    when the Dissipation probe ran. For each rule: the step it picks and the held-out loss there
    (the last evaluation at or before it; a rule that never fires trains to the end), next to
    the validation-optimal step (lowest ``heldout``), its loss, and the loss at the end. With
    the W_S rule, its probe's validity (THEORY.md §10) per seed: ``ws_identity_rel_err`` (and
    ``…_augmented`` when logged) at the last probe step, and ``ws_stability_max``, the largest
    ``stability`` over the run (``> 1``: a propagator expanded and ``W_S`` is not to be
    trusted). ``None`` when neither probe ran.
    """
    if heldout not in history:
        raise ValueError(f"the history has no {heldout!r}: evaluate a held-out set.")
    rules = {}
    if "probe/poprisk/loo_sum" in history:
        rules["loo_rule"] = loo_stopping_step(history, window)
    if "probe/dissipation/g_channel" in history:
        rules["ws_rule"] = ws_stopping_step(history)
    if not rules:
        return None
    test = seed_columns(history[heldout])
    best = [int(np.nanargmin(col)) for col in test.T]
    out: dict = {"window": window} if "loo_rule" in rules else {}
    for name, at in rules.items():
        out[f"{name}_step"] = at
        out[f"{name}_test_loss"] = [value_at(history, heldout, t, s) for s, t in enumerate(at)]
    if "ws_rule" in rules:
        pre = "probe/dissipation/"
        for key in ("identity_rel_err", "identity_rel_err_augmented"):
            if pre + key in history:
                out[f"ws_{key}"] = last_finite(history, pre + key)
        if pre + "stability" in history:
            stab = seed_columns(history[pre + "stability"])
            out["ws_stability_max"] = [
                float(np.max(c[np.isfinite(c)])) if np.isfinite(c).any() else None for c in stab.T
            ]
    return out | {
        "validation_optimal_step": [int(history["step"][r]) for r in best],
        "validation_optimal_test_loss": [float(test[r, s]) for s, r in enumerate(best)],
        "final_test_loss": last_finite(history, heldout),
    }
