"""DPO with 30 % swapped pairs, known reward: PRM vs AdamW on reward accuracy and drift.

The paper (Litman & Guo 2026) reports DPO of Qwen2.5-0.5B-Instruct on UltraFeedback with 30 % of
the preference pairs swapped: clean reward accuracy 0.566 with AdamW (lr tuned on a grid) and 0.641
with PRM, and a policy 3.05× closer to the reference (mean absolute implicit-reward drift). This
project cannot download that model or data; it tests the same mechanism on a synthetic task whose
reward is known exactly (:mod:`experiments.dpo.data`): a decoder transformer is supervised-
fine-tuned on the responses to give the frozen reference, then trained by DPO
(:mod:`experiments.dpo.losses`) with AdamW and with PRM on the same pairs, lrs and seeds.

Measures (on clean held-out pairs, at the end of training, at each optimizer's lr with the best
validation accuracy): reward accuracy of the implicit reward ``β (log π − log π_ref)`` against the
labels and against the hidden true reward, mean ``|β (log π − log π_ref)|`` (drift), the fraction
of swapped train pairs fitted, and PRM's gate statistics.

What was measured (``quick``: 2,048 train pairs of which 614 swapped, 512 validation and 1,024
test pairs, all clean; Bradley–Terry labels agree with the true reward on 84 % of the test pairs;
a 2-block width-32 decoder, 27 k parameters; SFT 800 steps; DPO β = 0.1, 320 steps of 64 pairs =
10 epochs, PRM α = b/(n − b) = 0.032, no weight decay; 3 seeds that share the reference and differ
in minibatch order). Final values, median of 3 seeds (per seed in ``results.json``); the grid of
the preset is 3e-6/1e-5/3e-5 (``dyntheory run dpo --preset quick``, 4 min 56 s); the 1e-4 and
3e-4 rows are the same arms from ``--set lr=1e-5,3e-5,1e-4,3e-4`` (6 min 37 s), identical where
the two runs overlap:

=======  ======  ==========  ==========  ===========  ===========  ==============
opt.     lr      val acc.    test acc.   true acc.    |r̂| drift    swapped fitted
=======  ======  ==========  ==========  ===========  ===========  ==============
AdamW    3e-6    0.703       0.702       0.745        0.011        0.34
AdamW    1e-5    **0.707**   **0.712**   0.744        0.034        0.34
AdamW    3e-5    0.699       0.722       0.749        0.093        0.38
AdamW    1e-4    0.674       0.702       0.730        0.253        0.48
AdamW    3e-4    0.598       0.624       0.640        0.599        0.76
PRM      3e-6    0.699       0.705       0.748        0.009        0.33
PRM      1e-5    **0.712**   **0.709**   0.747        0.028        0.34
PRM      3e-5    0.705       0.720       0.751        0.076        0.36
PRM      1e-4    0.682       0.712       0.739        0.209        0.45
PRM      3e-4    0.617       0.655       0.675        0.494        0.70
=======  ======  ==========  ==========  ===========  ===========  ==============

At the lr chosen by validation accuracy (1e-5 for both, inside the grid): test accuracy
0.709/0.712/0.713 (AdamW) vs 0.706/0.709/0.717 (PRM); true-reward accuracy 0.744 vs 0.747; drift
0.034 vs 0.028, a ratio of 1.22×; PRM's mean gate q ≈ 0.43 over the run, the same at every lr.
Verdict against the paper (0.566 → 0.641, 3.05×): **not reproduced** — no accuracy gain, and the
drift ratio is 1.2×, not 3×. The validation split (512 pairs, standard error ≈ 0.02) cannot
separate 1e-5 from 3e-5, where both optimizers reach 0.72 on the test pairs.

An earlier run of 20 epochs (640 steps, eval every 32, lrs 3e-5/1e-4/3e-4, the rest as above)
selected 3e-5, the grid's lowest, for both and gave 0.711 (AdamW) vs 0.718 (PRM), every PRM seed
above every AdamW seed, drift ratio 1.23×: "partly". With AdamW's grid extended down
(``--set steps=640 --set lr=1e-5,3e-5,1e-4 --set eval_every=64 --set log_every=64
--set fuse=64``, 6 min 26 s) AdamW at 1e-5 reaches 0.716 (drift
0.064) and PRM at 1e-5 0.715: the small PRM edge was AdamW's lr being too large.

Why, from the same runs: at every lr, accuracy falls as training goes on while the fraction of
swapped train pairs the policy fits rises (memorization of the flipped labels); the more the policy
drifts, the lower its clean accuracy, for both optimizers alike. PRM's gate passes ≈ 40 % of each
update on average at every lr, so PRM at lr η behaves much like AdamW at a smaller lr: it memorizes
more slowly and drifts less, and is ahead at a fixed lr and step when that lr is too large (+0.03
at 3e-4, +0.01 at 1e-4). Once AdamW's lr is tuned, the advantage is gone. The gate does not find a
better solution; it slows the clock.

Row for the README's claims table: DPO, 30 % swapped pairs | paper: reward accuracy 0.566 (AdamW)
→ 0.641 (PRM), drift 3.05× closer | here (``quick``): 0.712 → 0.709, drift 1.22× closer | not
reproduced: PRM's gate (q ≈ 0.4) acts as a smaller lr; against a tuned AdamW it gains nothing.

The ``paper`` preset (8,192 pairs, width 64, 20 epochs, lrs 1e-5 to 3e-4) was not run here.

Run directory: see :mod:`experiments.dpo.run`; figure: :mod:`paper_figures.dpo`.
"""

from experiments.dpo.config import PRESETS, Config
from experiments.dpo.run import run

DESCRIPTION = __doc__.splitlines()[0]
DEFAULT_PRESET = "quick"

__all__ = ["DEFAULT_PRESET", "DESCRIPTION", "PRESETS", "Config", "run"]
