"""Finding an experiment: an installed entry point, a Python file, or a dotted module name;
its presets, its resolved config and the config a run directory saved
(:mod:`dyntheory.cli.experiments` runs it)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType

from dyntheory.engine import config as config_lib

EXPERIMENTS_GROUP = "dyntheory.experiments"


class CLIError(Exception):
    """An error to print without a traceback (exit status 2)."""


# ----------------------------------------------------------------------------- experiments


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=EXPERIMENTS_GROUP)}


def experiment_names() -> list[str]:
    """The experiments installed as ``dyntheory.experiments`` entry points, sorted."""
    return sorted(_entry_points())


def _is_file_form(name: str) -> bool:
    return name.endswith(".py") or "/" in name or "\\" in name


def _load_file(name: str) -> ModuleType:
    path = Path(name).expanduser().resolve()
    if not path.is_file():
        raise CLIError(f"experiment file {name!r} does not exist.")
    if path.suffix != ".py":
        raise CLIError(f"experiment file {name!r} is not a .py file.")
    module_name = f"dyntheory_experiment_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def load_experiment(name: str) -> ModuleType:
    """The experiment ``name``: an installed entry point, a ``.py`` file, or a dotted module name.

    An entry point of the group ``dyntheory.experiments`` wins; a name ending in ``.py`` or holding
    a ``/`` is a file, loaded as it is (no install needed); any other name containing a dot is
    imported as a module from ``sys.path`` (the current directory included). :class:`CLIError`
    if it is none of these, or if the module lacks ``Config``, ``PRESETS`` or ``run``.
    """
    eps = _entry_points()
    if name in eps:
        module = eps[name].load()
    elif _is_file_form(name):
        module = _load_file(name)
    elif "." in name and importlib.util.find_spec(name.split(".")[0]) is not None:
        # the user names this module on the command line: loading it by name is the feature
        module = importlib.import_module(name)
    else:
        raise CLIError(
            f"unknown experiment {name!r}; available: {', '.join(sorted(eps)) or 'none'}. "
            f"Name a file (dyntheory run path/to/my_experiment.py) or a dotted module "
            f"(dyntheory run mypackage.my_experiment), or register it as an entry point of the "
            f"group {EXPERIMENTS_GROUP!r} in pyproject.toml and reinstall."
        )
    _check_names(name, module, ("Config", "PRESETS", "run"))
    return module


def load_presets(name: str) -> ModuleType:
    """The installed experiment ``name`` for ``dyntheory list``: its module, with ``Config`` and
    ``PRESETS`` checked but ``run`` not touched (a package that loads its ``run`` module, and with
    it JAX, on first access of ``run`` is listed without JAX)."""
    module = _entry_points()[name].load()
    _check_names(name, module, ("Config", "PRESETS"))
    return module


def _check_names(name: str, module: ModuleType, names: Sequence[str]) -> None:
    missing = [a for a in names if not hasattr(module, a)]
    if missing:
        raise CLIError(
            f"experiment {name!r} does not define {', '.join(missing)} "
            "(an experiment module defines Config, PRESETS and run(cfg, run_dir))."
        )


def experiment_id(name: str) -> str:
    """How a run directory records the experiment ``name``: a file as its absolute path (so a
    resume from another directory finds it), an entry point or module name as given."""
    return str(Path(name).expanduser().resolve()) if _is_file_form(name) else name


def short_name(name: str) -> str:
    """The experiment's short name for default run directories: ``runs/<short>-<preset>``."""
    return Path(name).stem if _is_file_form(name) else name.rsplit(".", 1)[-1]


def describe(module: ModuleType) -> str:
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


def default_preset(module: ModuleType) -> str:
    presets = module.PRESETS
    return getattr(module, "DEFAULT_PRESET", "quick" if "quick" in presets else next(iter(presets)))


def resolve_config(module: ModuleType, preset: str | None, overrides: Sequence[str]):
    preset = preset or default_preset(module)
    if preset not in module.PRESETS:
        raise CLIError(
            f"unknown preset {preset!r} for {module.__name__.split('.')[-1]}; "
            f"available: {', '.join(module.PRESETS)}."
        )
    return preset, config_lib.apply_overrides(module.PRESETS[preset].config, overrides)


def saved_config(module: ModuleType, saved: dict, path: Path):
    """The config a run directory saved; a :class:`CLIError` if it spells keys the way an older
    dyntheory did (``lr`` before the optimizer's ``optim`` block), naming the new spelling and the
    command of a new run with the same values."""
    try:
        return config_lib.from_dict(module.Config, saved["config"])
    except config_lib.MovedKeyError as e:
        values = {new: _lookup(saved["config"], old) for old, new in e.moved.items()}
        sets = "".join(f" --set {key}={_flag(value)}" for key, value in values.items())
        preset = f" --preset {saved['preset']}" if saved.get("preset") else ""
        raise CLIError(
            f"cannot resume {path}: its config was saved by an older dyntheory ({e.renames}); "
            "a resume continues a run of this version, and nothing was changed. Start a new "
            f"run: dyntheory run {saved['experiment']}{preset}{sets} --out NEW_DIR"
        ) from None


def _lookup(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


def _flag(value) -> str:
    """A saved config value as ``--set`` spells it (a list as ``a,b,c``)."""
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
