"""Packages whose names load their submodule on first access, so importing them loads no JAX.

``lazy_package(__name__, {"prm": "prm", "snr_gate": "masks"})`` at the end of a package's
``__init__`` makes ``package.prm`` import ``package.prm`` (the submodule) and return its ``prm``
on first access. A name that is also the name of its submodule (``prm`` in ``prm.py``, ``run``
in ``run.py``) stays the function: importing the submodule directly (``import
dyntheory.optim.prm``) would otherwise bind the module over it in the package, and a later
``from dyntheory.optim import prm`` would get the module.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping
from typing import Any

_HOMES = "__lazy_homes__"


class LazyPackage(types.ModuleType):
    """A package module whose names in ``__lazy_homes__`` load from their submodule on access."""

    def __getattr__(self, name: str) -> Any:  # only when the name is not set yet
        home = self.__dict__.get(_HOMES, {}).get(name)
        if home is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{self.__name__}.{home}"), name)
        super().__setattr__(name, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and self.__dict__.get(_HOMES, {}).get(name) == name:
            return  # the submodule of the same name: the package's name is the function
        super().__setattr__(name, value)


def lazy_package(name: str, homes: Mapping[str, str]) -> None:
    """Make the package ``name`` load each of ``homes`` (attribute -> submodule) on first
    access. Call it from the package's ``__init__``, after its eager imports."""
    module = sys.modules[name]
    module.__dict__[_HOMES] = dict(homes)
    module.__class__ = LazyPackage


__all__ = ["LazyPackage", "lazy_package"]
