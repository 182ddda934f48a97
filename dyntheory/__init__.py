"""dyntheory: training-dynamics theory in JAX.

Empirical NTK spectra, the cumulative dissipation Gramian W_S and its signal/reservoir split, the
train→test coupling operator, and the PRM optimizer, after Litman & Guo (2026), "A Theory of
Generalization in Deep Learning", arXiv:2605.01172.

The library is pure functions over pytrees. It never imports ``experiments`` or ``paper_figures``.
"""

__version__ = "0.1.0"
