"""INR: a Fourier-feature MLP fit to noisy samples of a signal, AdamW vs PRM (memorization).

The paper's claim (THEORY §8): on a noisy signal, PRM suppresses memorization of the noise. Here
a ReLU MLP on random Fourier features ``γ(x) = [cos 2πBx, sin 2πBx]`` (Tancik et al. 2020) is fit
to ``y = s + ε`` at every other grid point, by minibatches of a quarter of the samples (so PRM's
α = b/(n − b) = 1/3, THEORY §6, a fixed dataset). Both optimizers run the same lr grid, seeds and
noise; the clean PSNR is measured on the whole grid and memorization as
``noise_coef = ⟨f − s, ε⟩/‖ε‖²`` on the training points (0: none of the noise in the fit, 1: all
of it; ``noise_fit = 1 − ‖f − y‖²/‖ε‖²`` alongside; :mod:`experiments.inr.signals`).

Results (commands, numbers, verdicts): ``docs/results/inr.md``.


Numbers for other settings: ``--set sigma=...``, ``--set signals=hopper2d`` (matplotlib's bundled
photo), ``--preset paper``.
"""

from typing import TYPE_CHECKING

from dyntheory.lazy import lazy_package
from experiments.inr.config import PRESETS, Config

if TYPE_CHECKING:
    from experiments.inr.run import run

DESCRIPTION = __doc__.splitlines()[0]

__all__ = ["DESCRIPTION", "PRESETS", "Config", "run"]

lazy_package(__name__, {"run": "run"})
