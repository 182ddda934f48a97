"""Width sweep: does a wider MLP keep more of the label noise out of its test predictions?

A single-file experiment, run without an entry point or a reinstall:

    dyntheory run docs/examples/width_sweep.py --preset tiny

Each width trains in its own sub-run directory (RUN/width-<w>/), which a rerun or
``dyntheory resume RUN`` continues where it stopped.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dyntheory.engine import Preset, TrainConfig, fit, rundir
from dyntheory.engine.config import check_numbers, check_range, replace
from dyntheory.models import MLP, functional
from dyntheory.probes import NTKSpectrum, Schedule, last_finite


@dataclasses.dataclass(frozen=True)
class Config:
    """A noisy 1-D regression fitted by tanh MLPs of several widths (full-batch GD)."""

    widths: tuple[int, ...] = (8, 32, 128)
    n_train: int = 32
    noise: float = 0.3
    lr: float = 0.05
    train: TrainConfig = TrainConfig(steps=1000, eval_every=100, log_every=100, probe_size=32)

    def __post_init__(self):
        check_numbers(self)
        check_range(self, "lr", 0.0, low_open=True)
        check_range(self, "noise", 0.0)


PRESETS = {
    "tiny": Preset(
        replace(Config(), widths=(4, 16), n_train=8, steps=40, eval_every=20, probe_size=8),
        "smoke test: widths 4 and 16, 8 points, 40 steps (seconds)",
    ),
    "quick": Preset(Config(), "widths 8/32/128, 32 noisy points, 1,000 GD steps"),
}


def make_data(cfg: Config, key: jax.Array) -> tuple[dict, dict]:
    """``y = sin(3x) + noise`` on the train set; clean labels on a 256-point test grid."""
    kx, kn = jax.random.split(key)
    x = jax.random.uniform(kx, (cfg.n_train, 1), minval=-1.0, maxval=1.0)
    y = jnp.sin(3 * x) + cfg.noise * jax.random.normal(kn, x.shape)
    xt = jnp.linspace(-1.0, 1.0, 256)[:, None]
    as_np = lambda d: {k: np.asarray(v, np.float32) for k, v in d.items()}
    return as_np({"x": x, "y": y}), as_np({"x": xt, "y": jnp.sin(3 * xt)})


def run(cfg: Config, run_dir: rundir.RunDir | None) -> dict:
    """Train every width; the results are the final losses and the NTK's growth per width."""
    train, test = make_data(cfg, jax.random.key(0))
    results = {"experiment": "width_sweep", "widths": {}}
    for width in cfg.widths:
        model = lambda key, w=width: MLP(1, (w, w), 1, activation="tanh", rngs=nnx.Rngs(key))
        apply_fn, _ = functional(model(jax.random.key(0)))
        sub = rundir.subrun_dir(
            run_dir and run_dir.path / f"width-{width}", {"width": width}, config=cfg
        )
        out = fit(
            cfg.train,
            run_dir=sub,
            apply_fn=apply_fn,
            init_params=lambda key, m=model: functional(m(key))[1],
            optimizer=optax.sgd(cfg.lr),
            data=train,
            loss="squared",
            eval_sets={"test": test},
            probes=[NTKSpectrum(Schedule.log(2))],
        )
        h = out.history
        results["widths"][str(width)] = {
            "train_loss": last_finite(h, "train/loss"),
            "test_loss": last_finite(h, "test/loss"),
            "ntk_drift": last_finite(h, "probe/ntk/drift"),
        }
    return results
