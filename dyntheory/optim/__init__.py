"""Optimizers: PRM, the population-risk gated AdamW (paper arXiv:2605.01172, Algorithm 1), and
Grokfast-EMA (arXiv:2405.20233) as an optax transformation."""

from dyntheory.optim.grokfast import AmplifySlowGradientsState, amplify_slow_gradients, grokfast
from dyntheory.optim.masks import hard_gate, snr_gate, soft_gate
from dyntheory.optim.prm import finite_dataset_alpha, prm
from dyntheory.optim.transform import ScaleByPopulationRiskState, scale_by_population_risk

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
