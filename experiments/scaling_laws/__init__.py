"""Scaling laws: L(N, D, t) fits with bootstrap CIs and extrapolation, beside spectral exponents.

Teacher-student regression on power-law data (covariance ``λ_k ∝ k^{−a}``, target power
``∝ k^{−b}``), where kernel theory predicts the data, model and time exponents (``b − 1``,
``b − 1``, ``(b − 1)/a``), swept exactly (seeds vmapped); and an MLP classification sweep over
width and data size trained by the engine, with the NTK spectrum's decay exponent from the probes.
Fits: :mod:`dyntheory.scaling` (variable projection, Huber loss on log residuals, seed bootstrap,
held-out extrapolation). THEORY.md §7: the project's own result, not the paper's.
"""

from typing import TYPE_CHECKING

from dyntheory.lazy import lazy_package
from experiments.scaling_laws.config import DEFAULT_PRESET, PRESETS, Config

if TYPE_CHECKING:
    from experiments.scaling_laws.run import run

DESCRIPTION = __doc__.splitlines()[0]

__all__ = ["DEFAULT_PRESET", "DESCRIPTION", "PRESETS", "Config", "run"]

lazy_package(__name__, {"run": "run"})
