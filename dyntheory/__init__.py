"""dyntheory: training-dynamics theory in JAX.

Empirical NTK spectra, the cumulative dissipation Gramian W_S and its signal/reservoir split, the
train→test coupling operator, and the PRM optimizer, after Litman & Guo (2026), "A Theory of
Generalization in Deep Learning", arXiv:2605.01172.

Layers, each importing only the ones before it:

1. theory: :mod:`~dyntheory.losses`, :mod:`~dyntheory.ntk`, :mod:`~dyntheory.spectrum`,
   :mod:`~dyntheory.linear`, :mod:`~dyntheory.randfeat`, :mod:`~dyntheory.dissipation`,
   :mod:`~dyntheory.split`, :mod:`~dyntheory.drift`, :mod:`~dyntheory.poprisk`,
   :mod:`~dyntheory.scaling`; :mod:`dyntheory.models` and :mod:`dyntheory.optim`;
   :mod:`dyntheory.diagnostics` (trainability at initialization);
2. :mod:`dyntheory.probes`: those quantities measured during training;
3. :mod:`dyntheory.engine`: the trainer, run directories, checkpoints, configs;
4. :mod:`dyntheory.cli`: the app.

The library never imports ``experiments`` or ``paper_figures``: the command line finds them
through entry points.
"""

from dyntheory import dissipation, losses, ntk, spectrum, split

__version__ = "0.1.0"

__all__ = ["dissipation", "losses", "ntk", "spectrum", "split"]
