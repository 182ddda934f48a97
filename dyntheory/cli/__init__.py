"""The app: the ``dyntheory`` command line (:mod:`dyntheory.cli.app`)."""

from dyntheory.cli.app import main

__all__ = ["main"]
