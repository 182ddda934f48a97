"""Config and presets of the trainability-at-initialization sweep."""

from __future__ import annotations

import dataclasses

from dyntheory.engine.config import ConfigError, Preset, check_numbers
from dyntheory.names import ACTIVATIONS

VARIANTS = ("plain", "layernorm", "residual", "layernorm+residual")


@dataclasses.dataclass(frozen=True)
class Config:
    r"""Depth × activation × (LayerNorm, residual) sweep of MLPs: diagnostics vs short GD runs.

    Command and expected result (``quick``, about 5 min on a loaded 2-core CPU)::

        dyntheory run init_diagnostics --preset quick

    Every configuration is diagnosed at init (:func:`dyntheory.diagnostics.report.diagnose`:
    NTK, suggested max lr ``η_max = 2n/λ_max``, gradient and Jacobian norms, warnings), then trained
    with full-batch GD on the same batch at ``m·η_max`` for every multiplier ``m``. Expected: no
    net diverges exactly at the bound; nets that train are stable beyond it (catapult), and the
    init-time warnings mostly match whether GD at 0.5·η_max fits the batch. Numbers:
    ``docs/results/init_diagnostics.md``.

    Attributes:
      d_in, n, width: input size, batch (= training set) size, hidden width.
      depths, activations, variants: the sweep (``variants`` from :data:`VARIANTS`).
      multipliers: learning rates as multiples of the predicted ``η_max``; ``train_multiplier``
        (added if missing) is the run that decides "trained" (the overfit test).
      steps, tol: GD budget; a run is *fit* when the loss reaches ``tol`` × its initial value,
        *diverged* when it ends non-finite or at twice its initial value or more.
      power_iters: power iterations of the Jacobian spectral norm.
      seed, data_seed: model init and data/teacher seeds.
    """

    d_in: int = 16
    n: int = 128
    width: int = 32
    depths: tuple[int, ...] = (2, 8, 32)
    activations: tuple[str, ...] = ("relu", "tanh", "sigmoid")
    variants: tuple[str, ...] = ("plain", "layernorm+residual")
    multipliers: tuple[float, ...] = (0.5, 0.9, 1.1, 2.0, 3.0, 4.0)
    train_multiplier: float = 0.5
    steps: int = 400
    tol: float = 1e-2
    power_iters: int = 30
    seed: int = 0
    data_seed: int = 1234

    def __post_init__(self):
        check_numbers(self)
        for name in ("d_in", "n", "width", "steps", "power_iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.n < 2:
            raise ConfigError(f"n must be >= 2, got {self.n}.")
        for name in ("depths", "activations", "variants", "multipliers"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must not be empty.")
        if any(d < 1 for d in self.depths):
            raise ConfigError(f"depths must be >= 1, got {self.depths}.")
        bad = [a for a in self.activations if a not in ACTIVATIONS]
        if bad:
            raise ConfigError(f"unknown activation(s) {bad}; choose from {sorted(ACTIVATIONS)}.")
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad:
            raise ConfigError(f"unknown variant(s) {bad}; choose from {list(VARIANTS)}.")
        if any(not m > 0 for m in (*self.multipliers, self.train_multiplier)):
            raise ConfigError(f"multipliers must be positive, got {self.multipliers}.")
        if not 0 < self.tol < 1:
            raise ConfigError(f"tol must lie in (0, 1), got {self.tol}.")

    def all_multipliers(self) -> tuple[float, ...]:
        """The sorted multipliers, ``train_multiplier`` included."""
        return tuple(sorted({*self.multipliers, self.train_multiplier}))


PRESETS = {
    "tiny": Preset(
        Config(
            n=24,
            width=8,
            d_in=4,
            depths=(1, 3),
            activations=("tanh",),
            variants=("plain",),
            steps=60,
            power_iters=10,
        ),
        "smoke-test size: 2 configurations, width 8, 60 GD steps (seconds)",
    ),
    "quick": Preset(
        Config(),
        "depth 2/8/32 x relu/tanh/sigmoid x plain/LN+residual, width 32, 400 GD steps (~5 min)",
    ),
    "paper": Preset(
        Config(
            n=256,
            width=128,
            depths=(2, 4, 8, 16, 32),
            activations=("relu", "gelu", "tanh", "sigmoid", "swiglu"),
            variants=VARIANTS,
            multipliers=(0.25, 0.5, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 4.0, 8.0),
            steps=2000,
            power_iters=50,
        ),
        "5 depths x 5 activations x 4 variants, width 128, 2,000 GD steps (an hour+; GPU advised)",
    ),
}
DEFAULT_PRESET = "quick"
