"""Grokking on modular arithmetic: does PRM generalize in fewer steps than AdamW?

The paper (Litman & Guo 2026, THEORY.md §7–8) claims that PRM's gate, by refusing noise-dominated
(memorizing) updates, makes a network grok sooner: on ``a ÷ b mod 97`` with 25 % of the pairs for
training, 95 % test accuracy at step 5,950 with PRM vs 29,450 with AdamW (4.9×). This experiment
trains both optimizers on the same split, the same initializations and the same batch order
(seed ``s`` of both runs uses the same keys), and records, per seed, the first evaluated step with
99 % accuracy on the whole train split ("memorized") and 95 % on the test split ("generalized").

Choices, and why:

- Minibatches (batch 512, Power et al.'s), not full batch. The gate compares the squared mean
  gradient ``m̂²`` with the variance ``α ŝ`` of the batch-mean gradient; only sampling noise gives
  that variance a meaning. With full batch (b = n) there is no sampling noise: ``ŝ`` measures how
  the deterministic gradient drifts from step to step, and the paper's ``α = b/(n − b)`` is
  infinite, so full batch needs an explicit ``prm_alpha`` and is not the default.
- ``α = b/(n − b)`` (paper Sec. 6, for a fixed dataset of ``n``): ŝ estimates the variance of a
  batch mean, ``Σ (n − b)/(b n)``; times ``b/(n − b)`` it is ``Σ/n``, the sampling variance of the
  *train-set* mean gradient around the population gradient — the question the gate asks.
- PRM's other knobs at the reference package's defaults (mask ``snr``, softness 1, ρ = 0.99), and
  AdamW's settings (lr 1e-3, betas (0.9, 0.98), weight decay 1, decoupled and not gated) shared.
- ``quick`` is the embedding MLP on ÷ mod 59 with half the pairs: it groks in a few thousand steps
  (THEORY.md §8), so three seeds of both optimizers fit in minutes on a 2-core CPU. ``paper`` is
  the paper's task and Power et al.'s 2-layer transformer.

Results (commands, numbers, verdicts): ``docs/results/grokking.md``.


Run directory: see :mod:`experiments.grokking.run`; figure: ``paper_figures/grokking.py``.
"""

from typing import TYPE_CHECKING

from dyntheory.lazy import lazy_package
from experiments.grokking.config import PRESETS, Config

if TYPE_CHECKING:
    from experiments.grokking.run import run

DESCRIPTION = __doc__.splitlines()[0]
DEFAULT_PRESET = "quick"

__all__ = ["DEFAULT_PRESET", "DESCRIPTION", "PRESETS", "Config", "run"]

lazy_package(__name__, {"run": "run"})
