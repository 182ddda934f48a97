r"""Scaling-law fits: ``L(x) = E + A x^{−α}`` and ``L(N, D) = E + A N^{−α} + B D^{−β}``.

**Objective.** The mean Huber loss of log residuals, ``mean_i H_δ(log L̂_i − log L_i)`` (Hoffmann
et al. 2022, App. D.2, with ``δ = 10⁻³`` by default): log residuals weigh every size alike, and
Huber keeps a few bad points from steering the exponents.

**Variable projection.** For fixed exponents the law is linear in the non-negative coefficients
``c = (E, A[, B])``, so the search runs over the exponents only (1 or 2 numbers): for each trial
exponent the coefficients are the non-negative least-squares solution of the relative residuals
``min_{c ≥ 0} Σ_i ((X c)_i / L_i − 1)²`` (``X = [1, x^{−α}, ...]``; to first order the same as the
log residuals), and the exponent's score is the Huber objective at those coefficients. The score
is minimized by L-BFGS-B (scipy) from a grid of starting exponents (multi-start); the best point
is then polished by L-BFGS-B on the exact Huber objective over all parameters jointly (positive
coefficients in log space; a coefficient the projection set to 0 stays 0). ``fit_offset=False``
fixes ``E = 0``.

**Uncertainty.** :func:`bootstrap_seeds` resamples whole seeds with replacement (a seed is one
independent repetition of the whole sweep), averages the resampled curves and refits; the
confidence interval is the percentile interval of the refits. **Extrapolation**
(:func:`extrapolation_error`): fit without the largest sizes, predict them, report the relative
error.

Shapes: ``x`` (K,) sizes, ``L`` (K,) losses; for two variables ``N``, ``D``, ``L`` all (K,) (any
set of points, not necessarily a full grid). Per-seed losses for the bootstrap are ``(S, K)``.

References:
  Hoffmann et al., "Training Compute-Optimal Large Language Models", arXiv:2203.15556, App. D.2;
  Golub & Pereyra, "The differentiation of pseudo-inverses and nonlinear least squares problems
  whose variables separate" (1973), for variable projection; Besiroglu et al., "Chinchilla
  Scaling: A replication attempt", arXiv:2404.10102, on fitting and bootstrapping these laws.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import optimize
from threadpoolctl import threadpool_limits

NAMES = {1: ("E", "A", "alpha"), 2: ("E", "A", "alpha", "B", "beta")}
_DEFAULT_STARTS = (0.1, 0.3, 0.7, 1.5, 3.0)


class Fit(NamedTuple):
    """A fitted law: ``params`` by name (``E, A, alpha[, B, beta]``) and the objective there."""

    n_vars: int  # 1: L(x) = E + A x^−α;  2: L(N, D) = E + A N^−α + B D^−β
    params: dict[str, float]
    objective: float  # mean Huber loss of the log residuals at the optimum
    n_points: int


class Bootstrap(NamedTuple):
    """Seed-bootstrap of a fit: the point fit, the refits' parameters, and percentile intervals."""

    fit: Fit  # fitted to the mean over all seeds
    samples: dict[str, np.ndarray]  # (n_boot,) per parameter
    ci: dict[str, tuple[float, float]]  # (lo, hi) per parameter
    level: float


def _single_threaded_blas():
    """Run BLAS on one thread inside the block (threadpoolctl; a no-op where none is found).

    L-BFGS-B makes many tiny LAPACK calls; on a busy 2-core machine OpenBLAS's thread hand-offs
    make each one ~10× slower than the arithmetic.
    """
    return threadpool_limits(limits=1, user_api="blas")


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """``r²/2`` for ``|r| ≤ δ``, ``δ(|r| − δ/2)`` beyond."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def predict(fit: Fit, *xs) -> np.ndarray:
    """The law at sizes ``x`` (one variable) or ``(N, D)`` (two)."""
    if len(xs) != fit.n_vars:
        raise ValueError(
            f"a {fit.n_vars}-variable law needs {fit.n_vars} size arrays, got {len(xs)}"
        )
    p = fit.params
    out = p["E"] + p["A"] * np.asarray(xs[0], float) ** (-p["alpha"])
    if fit.n_vars == 2:
        out = out + p["B"] * np.asarray(xs[1], float) ** (-p["beta"])
    return out


def _check(xs: list[np.ndarray], L) -> tuple[list[np.ndarray], np.ndarray]:
    L = np.asarray(L, float)
    if L.ndim != 1:
        raise ValueError(f"losses must be a 1-D array, got shape {L.shape}")
    out = []
    for name, x in zip(("x" if len(xs) == 1 else "N", "D"), xs, strict=False):
        x = np.asarray(x, float)
        if x.shape != L.shape:
            raise ValueError(f"{name} has shape {x.shape}, the losses {L.shape}")
        if not np.all(np.isfinite(x)) or np.any(x <= 0):
            raise ValueError(f"sizes {name} must be finite and positive")
        out.append(x)
    if not np.all(np.isfinite(L)) or np.any(L <= 0):
        raise ValueError("losses must be finite and positive (the fit is on log L)")
    need = 2 * len(xs) + 2
    if L.size < need:
        raise ValueError(f"need at least {need} points for a {len(xs)}-variable fit, got {L.size}")
    for name, x in zip(("x" if len(xs) == 1 else "N", "D"), out, strict=False):
        if np.unique(x).size < 3:
            raise ValueError(f"need at least 3 distinct values of {name} to fit its exponent")
    return out, L


def _design(xs: list[np.ndarray], exps: np.ndarray, fit_offset: bool) -> np.ndarray:
    cols = [np.ones_like(xs[0])] if fit_offset else []
    cols += [x ** (-e) for x, e in zip(xs, exps, strict=True)]
    return np.stack(cols, axis=1)


def _objective(pred: np.ndarray, L: np.ndarray, delta: float) -> float:
    if np.any(pred <= 0) or not np.all(np.isfinite(pred)):
        return 1e6
    return float(np.mean(huber(np.log(pred) - np.log(L), delta)))


def _project(xs, L, exps, fit_offset) -> np.ndarray:
    """Non-negative coefficients minimizing the relative residuals for fixed exponents."""
    X = _design(xs, exps, fit_offset)
    c, _ = optimize.nnls(X / L[:, None], np.ones_like(L))
    return c


def _fit(xs, L, delta, fit_offset, bounds, starts, n_starts) -> Fit:
    xs, L = _check(xs, L)
    if not delta > 0:
        raise ValueError(f"delta must be positive, got {delta}")
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"exponent bounds must satisfy 0 < lo < hi, got {bounds}")
    k = len(xs)
    # Rescale sizes by their geometric mean: the coefficients stay O(L), which helps NNLS.
    scale = [float(np.exp(np.mean(np.log(x)))) for x in xs]
    xs_s = [x / s for x, s in zip(xs, scale, strict=True)]

    def score(exps):
        c = _project(xs_s, L, exps, fit_offset)
        return _objective(_design(xs_s, exps, fit_offset) @ c, L, delta)

    starts = [s for s in starts if lo <= s <= hi] or [math.sqrt(lo * hi)]
    grid = [np.asarray(s, float) for s in itertools.product(starts, repeat=k)]
    grid.sort(key=score)  # multi-start from the best few points of the starting grid
    best_val, best_exps = np.inf, None
    for start in grid[: max(1, int(n_starts))]:
        res = optimize.minimize(score, start, method="L-BFGS-B", bounds=[(lo, hi)] * k)
        val = float(res.fun)
        if val < best_val:
            best_val, best_exps = val, np.asarray(res.x, float)
    c = _project(xs_s, L, best_exps, fit_offset)

    # Polish on the exact objective: positive coefficients in log space, zeros stay zero.
    free = c > 0

    def unpack(z):
        cc = np.zeros_like(c)
        cc[free] = np.exp(np.clip(z[: free.sum()], -700.0, 700.0))  # line searches can overshoot
        return cc, z[free.sum() :]

    def full(z):
        cc, ee = unpack(z)
        with np.errstate(over="ignore", invalid="ignore"):  # an overshooting step: +inf, rejected
            val = _objective(_design(xs_s, ee, fit_offset) @ cc, L, delta)
        return val if np.isfinite(val) else np.inf

    z0 = np.concatenate([np.log(c[free]), best_exps])
    bnds = [(None, None)] * int(free.sum()) + [(lo, hi)] * k
    res = optimize.minimize(full, z0, method="L-BFGS-B", bounds=bnds)
    if float(res.fun) < best_val:
        c, best_exps = unpack(np.asarray(res.x, float))
        best_val = float(res.fun)

    # Undo the size scaling: A (x/s)^−α = A s^α x^−α.
    coef = list(c) if fit_offset else [0.0, *c]
    params = {"E": float(coef[0])}
    for i, (a_name, e_name) in enumerate((("A", "alpha"), ("B", "beta"))[:k]):
        e = float(best_exps[i])
        params[a_name] = float(coef[1 + i] * scale[i] ** e)
        params[e_name] = e
    params = {name: params[name] for name in NAMES[k]}
    return Fit(k, params, best_val, int(L.size))


def fit_power_law(
    x,
    L,
    *,
    delta: float = 1e-3,
    fit_offset: bool = True,
    bounds: tuple[float, float] = (1e-3, 10.0),
    starts=_DEFAULT_STARTS,
    n_starts: int = 3,
) -> Fit:
    r"""Fit ``L(x) = E + A x^{−α}`` (``E, A ≥ 0``, ``α`` in ``bounds``); see the module doc."""
    with _single_threaded_blas():
        return _fit([x], L, delta, fit_offset, bounds, starts, n_starts)


def fit_scaling_law(
    N,
    D,
    L,
    *,
    delta: float = 1e-3,
    fit_offset: bool = True,
    bounds: tuple[float, float] = (1e-3, 10.0),
    starts=_DEFAULT_STARTS,
    n_starts: int = 3,
) -> Fit:
    r"""Fit ``L(N, D) = E + A N^{−α} + B D^{−β}`` (``E, A, B ≥ 0``); see the module docstring."""
    with _single_threaded_blas():
        return _fit([N, D], L, delta, fit_offset, bounds, starts, n_starts)


def bootstrap_seeds(
    fit_fn: Callable[[np.ndarray], Fit],
    losses,
    *,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> Bootstrap:
    r"""Percentile confidence intervals by resampling seeds.

    Args:
      fit_fn: maps a loss curve ``(K,)`` to a :class:`Fit` (e.g. ``lambda L: fit_power_law(x, L)``).
      losses: per-seed losses ``(S, K)``, ``S ≥ 2``.
      n_boot: bootstrap replicates; each draws ``S`` seeds with replacement and fits their mean.
      level: coverage of the two-sided percentile interval.
      seed: of the resampling RNG (numpy).
    """
    losses = np.asarray(losses, float)
    if losses.ndim != 2 or losses.shape[0] < 2:
        raise ValueError(f"losses must have shape (S, K) with S >= 2 seeds, got {losses.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if int(n_boot) < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    point = fit_fn(losses.mean(axis=0))
    rng = np.random.default_rng(seed)
    s = losses.shape[0]
    draws = {name: [] for name in point.params}
    for _ in range(int(n_boot)):
        f = fit_fn(losses[rng.integers(0, s, size=s)].mean(axis=0))
        for name, v in f.params.items():
            draws[name].append(v)
    samples = {k: np.asarray(v) for k, v in draws.items()}
    q = (100 * (1 - level) / 2, 100 * (1 + level) / 2)
    ci = {
        k: (float(np.percentile(v, q[0])), float(np.percentile(v, q[1])))
        for k, v in samples.items()
    }
    return Bootstrap(point, samples, ci, float(level))


def holdout_mask(*xs, n_holdout: int = 1) -> np.ndarray:
    """``True`` where a point has one of the ``n_holdout`` largest distinct values of any size."""
    if n_holdout < 1:
        raise ValueError(f"n_holdout must be >= 1, got {n_holdout}")
    mask = np.zeros(np.shape(xs[0]), bool)
    for x in xs:
        x = np.asarray(x, float)
        values = np.unique(x)
        if values.size <= n_holdout:
            raise ValueError(f"cannot hold out {n_holdout} of {values.size} distinct sizes")
        mask |= x >= values[-n_holdout]
    return mask


def extrapolation_error(fit_fn: Callable, xs: tuple, L, mask) -> dict:
    r"""Fit on the points outside ``mask``, predict the ones inside (the largest sizes).

    Args:
      fit_fn: ``fit_power_law`` or ``fit_scaling_law`` (called as ``fit_fn(*xs_fit, L_fit)``), or
        a ``functools.partial`` of one.
      xs: the size arrays ``(x,)`` or ``(N, D)``.
      L: losses ``(K,)``.
      mask: ``(K,)`` bool, the held-out points (e.g. :func:`holdout_mask`).

    Returns:
      ``{"fit", "heldout": [{sizes..., "actual", "predicted", "rel_error"}],
      "mean_abs_rel_error", "max_abs_rel_error", "mean_abs_log_error"}`` with
      ``rel_error = predicted/actual − 1``.
    """
    L = np.asarray(L, float)
    mask = np.asarray(mask, bool)
    if mask.shape != L.shape or not mask.any() or mask.all():
        raise ValueError("mask must be a (K,) bool array holding out some but not all points")
    xs = tuple(np.asarray(x, float) for x in xs)
    fit = fit_fn(*(x[~mask] for x in xs), L[~mask])
    pred = predict(fit, *(x[mask] for x in xs))
    actual = L[mask]
    rel = pred / actual - 1
    names = ("x",) if len(xs) == 1 else ("N", "D")
    held = [
        {
            **{nm: float(x[mask][i]) for nm, x in zip(names, xs, strict=True)},
            "actual": float(actual[i]),
            "predicted": float(pred[i]),
            "rel_error": float(rel[i]),
        }
        for i in range(actual.size)
    ]
    return {
        "fit": fit,
        "heldout": held,
        "mean_abs_rel_error": float(np.mean(np.abs(rel))),
        "max_abs_rel_error": float(np.max(np.abs(rel))),
        "mean_abs_log_error": float(np.mean(np.abs(np.log(np.maximum(pred, 1e-300) / actual)))),
    }


def fit_to_dict(fit: Fit) -> dict:
    """JSON-ready form of a :class:`Fit`."""
    return {"params": dict(fit.params), "objective": fit.objective, "n_points": fit.n_points}


def bootstrap_to_dict(b: Bootstrap) -> dict:
    """JSON-ready form of a :class:`Bootstrap` (without the raw samples)."""
    return {
        **fit_to_dict(b.fit),
        "ci": {k: list(v) for k, v in b.ci.items()},
        "level": b.level,
        "n_boot": int(next(iter(b.samples.values())).size),
    }
