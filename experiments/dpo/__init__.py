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

Results (commands, numbers, verdicts): ``docs/results/dpo.md``.


The ``paper`` preset (8,192 pairs, width 64, 20 epochs, lrs 1e-5 to 3e-4) was not run here.

Run directory: see :mod:`experiments.dpo.run`; figure: :mod:`paper_figures.dpo`.
"""

from typing import TYPE_CHECKING

from dyntheory.lazy import lazy_package
from experiments.dpo.config import PRESETS, Config

if TYPE_CHECKING:
    from experiments.dpo.run import run

DESCRIPTION = __doc__.splitlines()[0]
DEFAULT_PRESET = "quick"

__all__ = ["DEFAULT_PRESET", "DESCRIPTION", "PRESETS", "Config", "run"]

lazy_package(__name__, {"run": "run"})
