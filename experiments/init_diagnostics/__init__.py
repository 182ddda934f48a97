"""Trainability at initialization: do the init diagnostics predict short GD runs (max lr, fit)?

A sweep over MLP depth × activation × (LayerNorm, residual): every configuration is diagnosed at
init with :mod:`dyntheory.diagnostics.report` (suggested max learning rate ``2n/λ_max`` of the NTK,
gradient / Jacobian / NTK warnings, the frozen-NTK prediction of the overfit test), then trained
with full-batch GD on the same batch at multiples of the predicted learning rate.
``results.json`` lists, per configuration, the predicted and the measured (bracketed) maximum
stable learning rate, the warnings, and whether GD at half the prediction fit the batch.
"""

from typing import TYPE_CHECKING

from dyntheory.lazy import lazy_package
from experiments.init_diagnostics.config import DEFAULT_PRESET, PRESETS, VARIANTS, Config

if TYPE_CHECKING:
    from experiments.init_diagnostics.run import run

DESCRIPTION = __doc__.splitlines()[0]

__all__ = ["DEFAULT_PRESET", "DESCRIPTION", "PRESETS", "VARIANTS", "Config", "run"]

lazy_package(__name__, {"run": "run"})
