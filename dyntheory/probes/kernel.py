"""The NTK spectrum probe: the empirical kernel of the train probe set over training."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from dyntheory import ntk, spectrum
from dyntheory.probes.base import Probe, Schedule, f64


@dataclasses.dataclass(frozen=True, eq=False)
class NTKSpectrum(Probe):
    """Empirical NTK of the train probe set: spectrum summaries, top-k eigenvalues, kernel drift.

    Scalars: :func:`dyntheory.spectrum.summaries` of ``K_SS`` (λ_max, λ_min, trace, effective
    ranks, condition number, 2n/λ_max), ``kernel_target_alignment`` and, with ``drift``,
    ``drift = ‖K_t − K_0‖_F / ‖K_0‖_F``. Arrays: ``eigenvalues`` (top_k,), descending.
    """

    schedule: Schedule = Schedule.log(4)
    name: str = "ntk"
    top_k: int = 16
    drift: bool = True  # keep K_0 (np × np) and report ‖K_t − K_0‖_F / ‖K_0‖_F
    implementation: str = "auto"

    def _k(self, ctx, params):
        return ntk.kernel(ctx.apply_fn, params, ctx.train["x"], implementation=self.implementation)

    def init(self, ctx, params, opt_state):
        return {"k0": self._k(ctx, params)} if self.drift else {}

    def __call__(self, ctx, state, params, opt_state, step):
        k = self._k(ctx, params)
        lam = jnp.linalg.eigvalsh(k.astype(f64()))[::-1]
        scalars = spectrum.summaries(lam, n=ctx.train["x"].shape[0])
        scalars["kernel_target_alignment"] = spectrum.kernel_target_alignment(k, ctx.train["y"])
        if self.drift:
            k0 = state["k0"]
            scalars["drift"] = jnp.linalg.norm(k - k0) / jnp.linalg.norm(k0)
        return state, scalars, {"eigenvalues": lam[: self.top_k]}
