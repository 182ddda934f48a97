"""A probe of your own: how much of the label noise the network has fitted.

On a training set with noisy labels ``y = y_clean + ε``, the fraction of the noise the network's
outputs ``f`` have memorized is ``⟨f − y_clean, ε⟩ / ‖ε‖²``: 0 while ``f`` follows the clean
signal, 1 once it interpolates the noisy labels. The probe reads the engine's fixed probe subset
of the training data, ``ctx.train`` (its ``"y_clean"`` is there when the experiment knows the clean
targets), and returns it as a scalar, logged as ``probe/noise_fit/fraction``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dyntheory.engine import TrainConfig, fit
from dyntheory.models import MLP, functional
from dyntheory.probes import Probe, Schedule


@dataclasses.dataclass(frozen=True, eq=False)
class NoiseFit(Probe):
    """``⟨f(x) − y_clean, y − y_clean⟩ / ‖y − y_clean‖²`` on the probe subset of the train set."""

    schedule: Schedule = Schedule.every(100)
    name: str = "noise_fit"

    def __call__(self, ctx, state, params, opt_state, step):
        x, y, y_clean = ctx.train["x"], ctx.train["y"], ctx.train["y_clean"]
        noise = (y - y_clean).reshape(-1)
        fitted = (ctx.apply_fn(params, x) - y_clean).reshape(-1)
        fraction = jnp.vdot(fitted, noise) / jnp.vdot(noise, noise)
        return state, {"fraction": fraction}, {}  # (state, scalars, arrays)


def demo(steps: int = 300) -> dict:
    """Fit 16 noisy points with a wide MLP and return the history of the noise-fit fraction."""
    kx, kn = jax.random.split(jax.random.key(0))
    x = jax.random.uniform(kx, (16, 1), minval=-1.0, maxval=1.0)
    y_clean = jnp.sin(3 * x)
    y = y_clean + 0.3 * jax.random.normal(kn, x.shape)
    data = {k: np.asarray(v, np.float32) for k, v in {"x": x, "y": y, "y_clean": y_clean}.items()}
    model = lambda key: MLP(1, (256,), 1, activation="tanh", rngs=nnx.Rngs(key))
    result = fit(
        TrainConfig(steps=steps, log_every=50, eval_every=50, probe_size=16),
        apply_fn=functional(model(jax.random.key(0)))[0],
        init_params=lambda key: functional(model(key))[1],
        optimizer=optax.adam(1e-2),
        data=data,
        loss="squared",
        probes=[NoiseFit(Schedule.every(50))],
        progress=False,
    )
    return result.history


if __name__ == "__main__":
    history = demo()
    for step, f in zip(history["step"], history["probe/noise_fit/fraction"], strict=True):
        print(f"step {int(step):4d}: noise fitted {float(np.ravel(f)[0]):.2f}")
