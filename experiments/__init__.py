"""Experiment packages: each ``experiments/<name>/`` holds a config and a run function (wiring only)."""
