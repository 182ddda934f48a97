"""Experiment packages: each ``experiments/<name>/`` holds a config and a run (wiring only)."""
