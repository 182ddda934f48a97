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

Importing :mod:`dyntheory` loads no JAX (``dyntheory --help`` and ``dyntheory list`` stay fast):
the submodules named in ``__all__`` load on first access (``dyntheory.ntk``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dyntheory import dissipation, losses, ntk, spectrum, split

__version__ = "0.1.0"

__all__ = ["dissipation", "losses", "ntk", "spectrum", "split"]


def __getattr__(name: str):
    if name == "dissipation":
        import dyntheory.dissipation as module
    elif name == "losses":
        import dyntheory.losses as module
    elif name == "ntk":
        import dyntheory.ntk as module
    elif name == "spectrum":
        import dyntheory.spectrum as module
    elif name == "split":
        import dyntheory.split as module
    else:
        raise AttributeError(f"module 'dyntheory' has no attribute {name!r}")
    return module
