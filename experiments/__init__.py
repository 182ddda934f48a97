"""Experiment packages: each ``experiments/<name>/`` holds a config and a run (wiring only).

A package's ``__init__`` imports its config (plain Python: ``dyntheory list`` reads the presets
without JAX) and loads its ``run`` module on first access of ``run``
(``lazy_package(__name__, {"run": "run"})``, :mod:`dyntheory.lazy`).
"""
