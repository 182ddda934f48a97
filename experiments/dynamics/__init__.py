"""Output-space dynamics of a teacher-student MLP: W_S spectrum, four cells, coupling, drift/noise.

The run the theory figures of ``paper_figures/`` draw (THEORY §3–5): full-batch GD probed for the
NTK and ``W_S`` spectra, the channel/reservoir split, the four-cell decomposition of the train
residual and test displacement, and the train→test coupling ``A = G_Q D†``; then minibatch SGD on
the same data with the minibatch gradient split into coherent drift and sampling noise every step,
accumulated on the top and bottom NTK eigendirections (slopes 1 and ½ on log-log axes).
"""

from typing import TYPE_CHECKING

from dyntheory.lazy import lazy_package
from experiments.dynamics.config import DEFAULT_PRESET, PRESETS, Config

if TYPE_CHECKING:
    from experiments.dynamics.run import run

DESCRIPTION = __doc__.splitlines()[0]

__all__ = ["DEFAULT_PRESET", "DESCRIPTION", "PRESETS", "Config", "run"]

lazy_package(__name__, {"run": "run"})
