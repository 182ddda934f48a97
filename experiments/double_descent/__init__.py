"""Double descent: min-norm random features through N = n and a width-swept MLP, channel terms.

THEORY.md §7: near the interpolation threshold small kernel eigenvalues collapse and label noise
enters the signal channel with a large gain to the test outputs; more capacity lifts them again.
The exact part sweeps minimum-norm random-features regression (ReLU and Fourier features) through
``N = n`` and accounts for the solution with the dissipation Gramian of gradient flow run to
convergence, ``W_∞ = (n/2)Π_range(K)`` (:mod:`dyntheory.randfeat`); the trained part sweeps the
width of an MLP trained by the engine, with and without label noise, with the four-cell
decomposition from the dissipation probe.
"""

from typing import TYPE_CHECKING

from dyntheory.lazy import lazy_package
from experiments.double_descent.config import DEFAULT_PRESET, PRESETS, Config

if TYPE_CHECKING:
    from experiments.double_descent.run import run

DESCRIPTION = __doc__.splitlines()[0]

__all__ = ["DEFAULT_PRESET", "DESCRIPTION", "PRESETS", "Config", "run"]

lazy_package(__name__, {"run": "run"})
