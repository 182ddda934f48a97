"""Optimizers: PRM, the population-risk gated AdamW (paper arXiv:2605.01172, Algorithm 1)."""

from dyntheory.optim.masks import hard_gate, snr_gate, soft_gate
from dyntheory.optim.prm import (
    ScaleByPopulationRiskState,
    finite_dataset_alpha,
    prm,
    scale_by_population_risk,
)

__all__ = [
    "ScaleByPopulationRiskState",
    "finite_dataset_alpha",
    "hard_gate",
    "prm",
    "scale_by_population_risk",
    "snr_gate",
    "soft_gate",
]
