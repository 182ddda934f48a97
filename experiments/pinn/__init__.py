"""PINN: advection u_t + β u_x = 0 with a noisy initial condition, AdamW (lr sweep) vs PRM.

The paper's claim (THEORY §8): on advection with β = 5 and a noisy initial condition, PRM reaches
relative L2 error ≤ 0.40 in 2.4× fewer iterations than the best-tuned AdamW.

Setting (:mod:`experiments.pinn.problem`, :class:`~experiments.pinn.config.Config`): the
"failure-mode" advection benchmark of Krishnapriyan et al. (2021) — x ∈ [0, 2π) periodic,
t ∈ [0, 1], u(x, 0) = sin x, exact solution sin(x − βt) — with the initial condition observed at
256 equispaced points with Gaussian noise σ = 0.1. A tanh MLP 4×50 (LeCun-normal init) on
(x, t) rescaled to [−1, 1]² (no periodic embedding by default: periodicity is learned through the
boundary term, as in the benchmark; ``--set embedding=periodic`` makes it exact). Loss = mean
squared PDE residual (one ``jax.jvp`` along (β, 1)) on 1,024 collocation points drawn fresh every
step + IC misfit + periodic-boundary gap on 128 times, weights 1. Both optimizers share betas
(0.9, 0.999), eps 1e-8 and weight decay 0.01 and run the same lr grid; PRM uses the package
defaults (snr mask, softness 1, ρ = 0.99) with α = 1, THEORY §6's value for fresh batches. The
"iterations to 0.40" is the first eval step (every 10) at which the error on a 128×51 grid is
≤ 0.40, the median over seeds.

Results (commands, numbers, verdict): ``docs/results/pinn.md``.
"""

from typing import TYPE_CHECKING

from dyntheory.lazy import lazy_package
from experiments.pinn.config import PRESETS, Config

if TYPE_CHECKING:
    from experiments.pinn.run import run

DESCRIPTION = __doc__.splitlines()[0]

__all__ = ["DESCRIPTION", "PRESETS", "Config", "run"]

lazy_package(__name__, {"run": "run"})
