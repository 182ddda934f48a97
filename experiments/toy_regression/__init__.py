"""Teacher-student MLP regression with label noise: NTK drift, W_S channel/reservoir, coupling.

The template experiment: a small, real run of the engine with the theory probes. A random tanh
MLP teacher labels Gaussian inputs, Gaussian noise is added to the training labels, and a student
MLP is trained on squared loss (full-batch GD by default, so the dissipation probe is exact:
its probe set is the training set). The probes track the NTK spectrum and its drift, the
dissipation Gramian W_S, how much of the label noise lies in its reservoir (THEORY §7, benign
overfitting), and the train→test coupling A = G_Q D† (THEORY §4).

Package layout every experiment follows (what ``dyntheory run`` needs):
``Config`` (a frozen dataclass whose ``train`` field is the engine's ``TrainConfig``),
``PRESETS`` (name -> ``Preset``), ``run(cfg, run_dir) -> dict`` (results.json), and this
docstring's first line; an entry point in ``pyproject.toml`` registers it.
"""

from typing import TYPE_CHECKING

from dyntheory.lazy import lazy_package
from experiments.toy_regression.config import DEFAULT_PRESET, PRESETS, Config

if TYPE_CHECKING:
    from experiments.toy_regression.run import run

DESCRIPTION = __doc__.splitlines()[0]

__all__ = ["DEFAULT_PRESET", "DESCRIPTION", "PRESETS", "Config", "run"]

lazy_package(__name__, {"run": "run"})
