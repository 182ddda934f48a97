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

What was measured (÷ mod 59, half the pairs, embedding MLP, batch 512, α = 0.427; first
evaluated step, resolution 50; ``—`` = not reached):

- ``quick``, 3 seeds: steps to 99 % train 300/300/300 (AdamW) vs 800/800/800 (PRM); steps to
  95 % test 2,900/3,700/3,600 (median 3,600) vs 3,600/3,850/4,750 (median 3,850). AdamW/PRM =
  0.94 on the medians (per seed 0.81, 0.96, 0.76): PRM is **not** 2× faster; it memorizes later
  and generalizes slightly later. Both memorize long before they generalize.
- PRM sensitivity, seed 0, 8,000 steps (99 % train / 95 % test): AdamW 300 / 2,900;
  snr λ = 0.3: 500 / 2,950; snr λ = 1 (default): 800 / 3,600; snr λ = 3: 1,750 / 5,000;
  snr λ = 10: — / — (64 % train); hard: 600 / 3,800; soft λ = 0.3: 2,200 / 6,150; soft λ = 1, 3,
  10: — / — (91 %, 33 %, 11 % train); snr with α = 1: 1,350 / 4,600. The more the gate closes,
  the later the network memorizes *and* the later it generalizes; no setting beats AdamW, and the
  softest gate (snr λ = 0.3) comes closest by being closest to AdamW.
- Weight decay, seed 0 (95 % test, AdamW vs PRM): wd 2: 1,900 vs 2,650; wd 1: 2,900 vs 3,600;
  wd 0.5: 5,100 vs 5,700; wd 0: PRM memorizes (99 % train at 550) and is still at chance on the
  test set after 6,000 steps, its gate closed (mean q 0.0005).
- Full batch (the gate then measures step-to-step drift; α = 1): 2,500 (AdamW) vs 2,400 (PRM).
- The paper's task with this MLP (``--preset paper --set model=mlp --set seeds=1``: ÷ mod 97,
  25 % of the pairs, α = 0.28, seed 0, 40,000 steps, 11 min): AdamW memorizes at 500 and reaches
  95 % test at 18,400; PRM memorizes at 1,300 but is still at chance (1.5 % test) at 40,000, its
  train loss parked at ≈ 0.08 (AdamW's: 1e-6) with the gate mostly shut (mean q ≈ 0.1): the gate
  and the ungated weight decay balance in a memorizing state.

Why, from the same runs:

1. The grokking clock is the (decoupled, ungated) weight decay: halving or doubling it moves both
   optimizers' grokking step together, and without it PRM never generalizes — its gate alone does
   not turn a memorizing network into a generalizing one; the slow decay of the memorizing
   weights does, and PRM decays them at exactly AdamW's rate.
2. The gate does not tell memorizing from generalizing updates. Memorization happens in the
   first few hundred steps while the gate is still partly open (mean q ≈ 0.15–0.25); afterwards
   the per-coordinate signal-to-noise ratio of the remaining gradient is low *everywhere*, so the
   gate shuts 97–99 % of the coordinates (mean q ≈ 0.03–0.08): at the end the hidden layer is at
   q ≈ 0.02, the readout ≈ 0.05, the embedding ≈ 0.2. It slows the generalizing circuit as much
   as the memorizing one. Adam's ``m̂/√v̂`` is already SNR-scaled; the gate multiplies a second
   SNR factor on top (THEORY.md §9's first criticism).
3. The probes: the NTK drifts far from its initialization (‖K_t − K_0‖/‖K_0‖ ≈ 110–130 with
   AdamW, ≈ 60–70 with PRM) and its effective rank stays ≈ 150–190 of 236; the W_S of the
   4-example probe set is full rank (no reservoir) while it is defined, and Adam's preconditioned
   kernel held fixed between log-spaced probes stops being a valid linearization once v̂ is small
   (``dissipation/valid_until_step`` in results.json): the piecewise-constant model of THEORY.md §3
   does not reach the grokking phase here.

The ``paper`` preset (Power et al.'s transformer) is the setting of the paper's claim. Measured
with one seed (``--set seeds=1``; 45–50 min per optimizer on a 2-core CPU): AdamW reaches 95 % test
at 13,200 steps (paper: 29,450); PRM does not in 40,000 (paper: 5,950). PRM generalizes partway
(46 % test at 4,000, peak 82 % at 15,600) but repeated loss spikes throw it back (train accuracy
below 90 % at a third of the evaluations after step 1,000, test accuracy oscillating between 30 and
80 %, 73 % at the end) while its gate stays mostly shut (median mean q 0.037) — THEORY.md §9's
second criticism.

Run directory: see :mod:`experiments.grokking.run`; figure: ``paper_figures/grokking.py``.
"""

from experiments.grokking.config import PRESETS, Config
from experiments.grokking.run import run

DESCRIPTION = __doc__.splitlines()[0]
DEFAULT_PRESET = "quick"

__all__ = ["DEFAULT_PRESET", "DESCRIPTION", "PRESETS", "Config", "run"]
