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
a 2-block width-32 decoder, 27 k parameters; SFT 800 steps; DPO β = 0.1, 640 steps of 64 pairs =
20 epochs, PRM α = b/(n − b) = 0.032, no weight decay; 3 seeds that share the reference and differ
in minibatch order). Final values, median of 3 seeds (per seed in ``results.json``):

=======  ======  ==========  ==========  ===========  ===========  ==============
opt.     lr      val acc.    test acc.   true acc.    |r̂| drift    swapped fitted
=======  ======  ==========  ==========  ===========  ===========  ==============
AdamW    3e-5    0.695       **0.711**   0.742        0.169        0.44
AdamW    1e-4    0.627       0.649       0.673        0.432        0.69
AdamW    3e-4    0.561       0.555       0.559        1.412        0.94
AdamW    1e-3    0.537       0.569       0.581        4.115        1.00
PRM      3e-5    0.699       **0.718**   0.749        0.138        0.42
PRM      1e-4    0.652       0.690       0.704        0.358        0.58
PRM      3e-4    0.570       0.566       0.584        1.138        0.90
PRM      1e-3    0.520       0.540       0.565        3.835        1.00
=======  ======  ==========  ==========  ===========  ===========  ==============

(1e-3 was run once, was the worst lr of both optimizers, and is not in the ``quick`` grid.) At the
lr chosen by validation accuracy (3e-5 for both, the grid's lowest): test accuracy 0.711/0.711/0.715
(AdamW) vs 0.720/0.717/0.718 (PRM); true-reward accuracy 0.742 vs 0.749; drift 0.169 vs 0.138, a
ratio of 1.23×; PRM's mean gate q ≈ 0.40 over the whole run (0.39–0.40 at the end), the same at
every lr. Verdict against the paper (0.566 → 0.641, 3.05×): **partly** — PRM is more accurate on
every seed, but by 0.007, and the drift ratio is 1.2×, not 3×.

Why, from the same runs: at every lr, accuracy falls as training goes on while the fraction of
swapped train pairs the policy fits rises (memorization of the flipped labels); the more the policy
drifts, the lower its clean accuracy, for both optimizers alike. PRM's gate passes ≈ 40 % of each
update on average at every lr, so PRM at lr η behaves much like AdamW at a smaller lr: it memorizes
more slowly, drifts less, and is ahead at a fixed lr and step (+0.04 at 1e-4). Compared at the same
drift the advantage shrinks or turns: PRM at 1e-4 (drift 0.36, accuracy 0.690) lies 0.02 above
AdamW's line between 3e-5 and 1e-4 (0.67 at drift 0.36), PRM at 3e-4 (1.14, 0.566) 0.015 below
AdamW's line between 1e-4 and 3e-4 (0.58). With early stopping on the test curve every arm peaks at
0.713–0.724 (AdamW 3e-5: 0.722, PRM 3e-5: 0.724). The gate does not find a better solution; it slows
the clock. The selected lr is the grid's edge for both optimizers, so a lower lr might move both
further.

Row for the README's claims table: DPO, 30 % swapped pairs | paper: reward accuracy 0.566 (AdamW)
→ 0.641 (PRM), drift 3.05× closer | here (``quick``): 0.711 → 0.718, drift 1.23× closer | partly:
PRM wins on every seed by 0.007 because its gate (q ≈ 0.4) slows memorization of the swapped
pairs; at equal drift or with early stopping the two are level.

The ``paper`` preset (8,192 pairs, width 64, 20 epochs, lrs 3e-5 to 1e-3) was not run here.

Run directory: see :mod:`experiments.dpo.run`; figure: :mod:`paper_figures.dpo`.
"""

from experiments.dpo.config import PRESETS, Config
from experiments.dpo.run import run

DESCRIPTION = __doc__.splitlines()[0]
DEFAULT_PRESET = "quick"

__all__ = ["DEFAULT_PRESET", "DESCRIPTION", "PRESETS", "Config", "run"]
