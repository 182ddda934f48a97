"""Wiring of the toy teacher-student regression: data, model, optimizer, probes, ``fit``."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dyntheory import probes
from dyntheory.engine import fit
from dyntheory.models import MLP, abstract, count_params, functional
from dyntheory.optim import prm
from dyntheory.optim import state as optim_state
from experiments.toy_regression.config import Config


def teacher(cfg: Config):
    """The fixed teacher ``x -> f*(x)``, a random tanh MLP (its weights depend on data_seed)."""
    model = MLP(
        cfg.d_in,
        (cfg.teacher_width,),
        1,
        activation="tanh",
        rngs=nnx.Rngs(jax.random.key(cfg.data_seed)),
    )
    apply_fn, params = functional(model)
    return lambda x: apply_fn(params, x)


def make_data(cfg: Config) -> tuple[dict, dict]:
    """Train set ``{"x", "y", "y_clean"}`` and test set ``{"x", "y"}`` (clean test labels)."""
    if cfg.data_file:
        path = Path(cfg.data_file)
        if not path.is_file():
            raise FileNotFoundError(f"data_file {str(path)!r} does not exist.")
        with np.load(path) as z:
            train = {
                "x": z["x"],
                "y": z["y"],
                "y_clean": z["y_clean"] if "y_clean" in z else z["y"],
            }
            test = {"x": z["x_test"], "y": z["y_test"]} if "x_test" in z else None
        if test is None:
            raise ValueError(f"data_file {path} must hold x_test and y_test too.")
        return (
            {k: np.asarray(v, np.float32) for k, v in train.items()},
            {k: np.asarray(v, np.float32) for k, v in test.items()},
        )
    f = teacher(cfg)
    kx, kt, kn = jax.random.split(jax.random.key(cfg.data_seed + 1), 3)
    x = jax.random.normal(kx, (cfg.n_train, cfg.d_in), jnp.float32)
    xt = jax.random.normal(kt, (cfg.n_test, cfg.d_in), jnp.float32)
    y_clean = f(x)
    y = y_clean + cfg.noise * jax.random.normal(kn, y_clean.shape, jnp.float32)
    as_np = lambda d: {k: np.asarray(v) for k, v in d.items()}
    return as_np({"x": x, "y": y, "y_clean": y_clean}), as_np({"x": xt, "y": f(xt)})


def sampler(cfg: Config):
    """Fresh noisy teacher samples ``(key, b) -> batch`` for ``fresh=true``."""
    f = teacher(cfg)

    def sample(key, b):
        kx, kn = jax.random.split(key)
        x = jax.random.normal(kx, (b, cfg.d_in), jnp.float32)
        y_clean = f(x)
        y = y_clean + cfg.noise * jax.random.normal(kn, y_clean.shape, jnp.float32)
        return {"x": x, "y": y, "y_clean": y_clean}

    return sample


def make_optimizer(cfg: Config):
    if cfg.optimizer == "sgd":
        return optax.sgd(cfg.lr), None
    if cfg.optimizer == "adam":
        return optax.adam(cfg.lr), optim_state.adam_preconditioner(cfg.lr)
    return prm(
        cfg.lr, weight_decay=0.0, alpha=1.0, gate_stats=True
    ), optim_state.prm_preconditioner(cfg.lr, alpha=1.0)


def make_probes(cfg: Config, precond) -> list[probes.Probe]:
    sched = probes.Schedule.parse(cfg.probe_schedule)
    table = {
        "ntk": lambda: probes.NTKSpectrum(sched, top_k=16),
        "dissipation": lambda: probes.Dissipation(
            sched,
            lr=cfg.lr,
            preconditioner=precond,
            threshold=cfg.split_threshold,
            mode=cfg.split_mode,
            method=cfg.dissipation_method,
            rank=cfg.dissipation_rank,
            lanczos_vectors=cfg.dissipation_vectors,
        ),
        "norms": lambda: probes.Norms(sched),
        "gate": lambda: probes.GateStats(sched),
        "poprisk": lambda: probes.PopulationRisk(sched, lr=cfg.lr, preconditioner=precond),
    }
    return [table[name]() for name in cfg.probes]


def _columns(history: dict, key: str) -> np.ndarray | None:
    """``history[key]`` as ``(T, S)``; ``None`` if it was never logged."""
    return probes.seed_columns(history[key]) if key in history else None


def _per_seed(values: list | None):
    return values[0] if values is not None and len(values) == 1 else values


def _noise_reservoir_fraction(history: dict, row: int, seed: int) -> float | None:
    """‖Π_r noise‖² / ‖noise‖² at the last probe line at or before ``row``."""
    c = _columns(history, "probe/dissipation/noise_channel")
    r = _columns(history, "probe/dissipation/noise_reservoir")
    if c is None:
        return None
    rows = [i for i in range(row + 1) if np.isfinite(c[i, seed])]
    if not rows:
        return None
    i = rows[-1]
    return float(r[i, seed] / (c[i, seed] + r[i, seed]))


def summarize(history: dict) -> dict:
    """Headline numbers per seed: final and best test loss, where the label noise sits."""
    test = _columns(history, "test/loss")
    best_rows = [int(np.nanargmin(col)) for col in test.T]
    last_row = len(history["step"]) - 1
    seeds = range(test.shape[1])
    return {
        "final_train_loss": probes.last_value(history, "train/loss"),
        "final_test_loss": probes.last_value(history, "test/loss"),
        "best_test_loss": _per_seed(
            [float(test[r, s]) for s, r in zip(seeds, best_rows, strict=True)]
        ),
        "best_test_step": _per_seed([int(history["step"][r]) for r in best_rows]),
        "noise_reservoir_fraction_at_best": _per_seed(
            [
                _noise_reservoir_fraction(history, r, s)
                for s, r in zip(seeds, best_rows, strict=True)
            ]
        ),
        "noise_reservoir_fraction": _per_seed(
            [_noise_reservoir_fraction(history, last_row, s) for s in seeds]
        ),
        "ntk_drift": probes.last_value(history, "probe/ntk/drift"),
        "w_effective_rank": probes.last_value(history, "probe/dissipation/w_effective_rank"),
        "channel_dim": probes.last_value(history, "probe/dissipation/channel_dim"),
        "coupling_corr": probes.last_value(history, "probe/dissipation/coupling_corr"),
        # the LOO predicted change of population risk against the realized change of the clean
        # test loss, per step and summed over windows (probe and eval every step; else None)
        # split at the validation-optimal step: before it the test loss falls, after it rises
        "poprisk_check": probes.population_risk_check(
            history, "test/loss", split_at=[int(history["step"][r]) for r in best_rows]
        ),
        "stopping": probes.stopping_rules(history, "test/loss"),
        "time_train_s": probes.last_value(history, "time/train_s"),
        "time_probe_s": probes.last_value(history, "time/probe_s"),
    }


def run(cfg: Config, run_dir) -> dict:
    """Train the student; return the headline numbers (the CLI writes them to results.json)."""
    train, test = make_data(cfg)
    data = sampler(cfg) if cfg.fresh else train
    model = lambda key: MLP(
        cfg.d_in, (cfg.width,) * cfg.depth, 1, activation=cfg.activation, rngs=nnx.Rngs(key)
    )
    apply_fn, params0 = abstract(lambda: model(jax.random.key(0)))
    optimizer, precond = make_optimizer(cfg)
    result = fit(
        cfg.train,
        apply_fn=apply_fn,
        init_params=lambda key: functional(model(key))[1],
        optimizer=optimizer,
        data=data,
        loss="squared",
        eval_sets={"test": test},
        probes=make_probes(cfg, precond),
        probe_data={"train": train, "test": test} if cfg.fresh else None,
        run_dir=run_dir,
    )
    return {
        "experiment": "toy_regression",
        "steps": int(result.history["step"][-1]),
        "seeds": [cfg.train.seed + s for s in range(cfg.train.seeds)],
        "params": count_params(params0),
        **summarize(result.history),
    }
