"""Trainability at initialization: will this network train, and at what learning rate?

- :mod:`~dyntheory.diagnostics.measures`: gradient / parameter norms per layer group, the NTK's
  spectrum and the GD stability bound ``2n/λ_max``, the frozen-NTK loss prediction;
- :mod:`~dyntheory.diagnostics.jacobian`: input–output Jacobian norms, per layer and end to end;
- :mod:`~dyntheory.diagnostics.nonlinearity`: the share of a map's output variance that no affine
  map explains;
- :mod:`~dyntheory.diagnostics.report`: :func:`diagnose`, the whole report with its warnings, and
  the one-batch overfit test;
- :mod:`~dyntheory.diagnostics.format`: tables and a comparison figure of reports.

``dyntheory diagnose`` (:mod:`dyntheory.cli.diagnose`) is the command line.
"""

from dyntheory.diagnostics.format import format_comparison, format_report
from dyntheory.diagnostics.report import diagnose, find_warnings, overfit_batch

__all__ = ["diagnose", "find_warnings", "format_comparison", "format_report", "overfit_batch"]
