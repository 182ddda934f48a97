"""Optimizers: PRM, the population-risk gated AdamW (paper arXiv:2605.01172, Algorithm 1), and
Grokfast-EMA (arXiv:2405.20233) as an optax transformation.

Importing the package loads no JAX: its names below load their module on first access
(:mod:`dyntheory.lazy`), so an experiment's config
(:class:`dyntheory.optim.config.OptimizerConfig`) reads without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dyntheory.lazy import lazy_package

if TYPE_CHECKING:
    from dyntheory.optim.grokfast import (
        AmplifySlowGradientsState,
        amplify_slow_gradients,
        grokfast,
    )
    from dyntheory.optim.masks import hard_gate, snr_gate, soft_gate
    from dyntheory.optim.prm import finite_dataset_alpha, prm
    from dyntheory.optim.transform import ScaleByPopulationRiskState, scale_by_population_risk

_HOMES = {
    "AmplifySlowGradientsState": "grokfast",
    "amplify_slow_gradients": "grokfast",
    "grokfast": "grokfast",
    "hard_gate": "masks",
    "snr_gate": "masks",
    "soft_gate": "masks",
    "finite_dataset_alpha": "prm",
    "prm": "prm",
    "ScaleByPopulationRiskState": "transform",
    "scale_by_population_risk": "transform",
}

__all__ = [
    "AmplifySlowGradientsState",
    "ScaleByPopulationRiskState",
    "amplify_slow_gradients",
    "finite_dataset_alpha",
    "grokfast",
    "hard_gate",
    "prm",
    "scale_by_population_risk",
    "snr_gate",
    "soft_gate",
]

lazy_package(__name__, _HOMES)
