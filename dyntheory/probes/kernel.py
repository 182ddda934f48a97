"""The NTK spectrum probe: the empirical kernel of the train probe set over training.

``method="dense"`` forms the ``(np, np)`` kernel and takes its full spectrum; ``method="lanczos"``
never forms it (NTK-vector products, :func:`dyntheory.ntk.ntk_matvec`), so the probe set can be a
whole training set: top-k eigenvalues by Lanczos, the trace by Hutchinson's estimator and the
spectral density by stochastic Lanczos quadrature (:mod:`dyntheory.spectrum`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from dyntheory import krylov, ntk, spectrum
from dyntheory.probes.base import Probe, Schedule, f64


@dataclasses.dataclass(frozen=True, eq=False)
class NTKSpectrum(Probe):
    """Empirical NTK of the train probe set: spectrum summaries, top-k eigenvalues, kernel drift.

    Scalars (``"dense"``): :func:`dyntheory.spectrum.summaries` of ``K_SS`` (λ_max, λ_min,
    trace, effective ranks, condition number, 2n/λ_max), ``kernel_target_alignment`` and, with
    ``drift``, ``drift = ‖K_t − K_0‖_F / ‖K_0‖_F``. Arrays: ``eigenvalues`` (top_k,), descending.

    Scalars (``"lanczos"``): ``lambda_max``, ``gd_stability_lr`` = 2n/λ_max, ``trace`` and its
    standard error ``trace_se`` (Hutchinson, ``trace_probes`` vectors), ``top_k_share`` =
    Σ top-k / trace. Arrays: ``eigenvalues`` (top_k,), and the SLQ density ``density`` on
    ``density_grid`` (``density_points`` points on ``[−4σ, 1.05 λ_max]``, Gaussian width
    ``σ = λ_max/100``, ``slq_probes`` vectors of ``slq_iters`` steps). No drift (K_0 is not kept).
    """

    schedule: Schedule = Schedule.log(4)
    name: str = "ntk"
    top_k: int = 16
    drift: bool = True  # keep K_0 (np × np) and report ‖K_t − K_0‖_F / ‖K_0‖_F
    implementation: str = "auto"
    method: str = "dense"
    lanczos_iters: int | None = None
    trace_probes: int = 16
    slq_probes: int = 8
    slq_iters: int = 30
    density_points: int = 256
    chunk_size: int | None = None

    def __post_init__(self):
        if self.method not in ("dense", "lanczos"):
            raise ValueError(f"unknown NTKSpectrum method {self.method!r}; use dense or lanczos.")

    def _k(self, ctx, params):
        return ntk.kernel(ctx.apply_fn, params, ctx.train["x"], implementation=self.implementation)

    def init(self, ctx, params, opt_state):
        if self.method == "lanczos":
            return {}
        return {"k0": self._k(ctx, params)} if self.drift else {}

    def _lanczos(self, ctx, params, step):
        x = ctx.train["x"]
        mv = ntk.ntk_matvec(ctx.apply_fn, params, x, chunk_size=self.chunk_size)
        dim = x.shape[0] * jax.eval_shape(ctx.apply_fn, params, x[:1]).shape[-1]
        k = min(self.top_k, dim)
        key = jax.random.fold_in(jax.random.key(1), step)
        iters = min(dim, self.lanczos_iters or 2 * k + 20)
        lam, _ = krylov.lanczos_topk(mv, dim, k, key=key, num_iters=iters)
        trace, se = krylov.hutchinson_trace(
            mv, dim, key=jax.random.fold_in(key, 1), num_probes=self.trace_probes
        )
        sigma = lam[0] / 100
        grid = jnp.linspace(-4 * sigma, 1.05 * lam[0], self.density_points)
        density, _ = krylov.slq_density(
            mv, dim, key=jax.random.fold_in(key, 2), grid=grid, sigma=sigma,
            num_probes=self.slq_probes, num_iters=min(dim, self.slq_iters),
        )  # fmt: skip
        scalars = {
            "lambda_max": lam[0],
            "gd_stability_lr": spectrum.gd_stability_lr(lam[0], x.shape[0]),
            "trace": trace,
            "trace_se": se,
            "top_k_share": jnp.sum(lam) / trace,
        }
        return scalars, {"eigenvalues": lam, "density": density, "density_grid": grid}

    def __call__(self, ctx, state, params, opt_state, step):
        if self.method == "lanczos":
            return state, *self._lanczos(ctx, params, step)
        k = self._k(ctx, params)
        lam = jnp.linalg.eigvalsh(k.astype(f64()))[::-1]
        scalars = spectrum.summaries(lam, n=ctx.train["x"].shape[0])
        scalars["kernel_target_alignment"] = spectrum.kernel_target_alignment(k, ctx.train["y"])
        if self.drift:
            k0 = state["k0"]
            scalars["drift"] = jnp.linalg.norm(k - k0) / jnp.linalg.norm(k0)
        return state, scalars, {"eigenvalues": lam[: self.top_k]}
