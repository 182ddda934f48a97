"""Figure scripts: each reads run directories only and never trains.

One module per figure (``grokking``, ``ws_whole_run``, ``spectrum``, ``four_cell``, ``coupling``,
``drift_diffusion``, ``double_descent``, ``scaling_laws``, ``pinn``, ``inr``...), each with
``draw(run_dir, out_dir) -> [png, pdf]`` and runnable as ``python -m paper_figures.<name>
RUN_DIR --out DIR``; :mod:`paper_figures.style` is their shared look, :mod:`paper_figures.runs`
their loader, :mod:`paper_figures.catalog` the list and ``draw_all`` (``dyntheory figures``).
"""
