r"""Comparisons and grids: "these optimizers × these settings on this task", each into a sub-run.

An *arm* is one optimizer setting (:class:`dyntheory.optim.config.OptimizerConfig` without a grid)
with a name. :func:`arms` expands a config's grid (its tuple-valued numbers, e.g.
``optim.lr=(1e-3, 3e-3)``) for every family compared; :func:`run_arms` trains them all::

    from dyntheory.engine import sweep
    todo = sweep.arms(cfg.optim, cfg.optimizers)             # families × cells of the grid
    done = sweep.run_arms(cfg.train, todo, out=run_dir, config=cfg,
                          apply_fn=apply_fn, init_params=init, data=train, loss="squared",
                          probes=lambda optim: [...])       # the probes of one arm
    done["prm_lr0.001"].result.history                       # a FitResult per arm

Arms that differ only in injected numbers and whose probes are equal train in **one compiled
program** (:class:`~dyntheory.engine.Trainer` with ``grid=``: every cell × seed a member of the
vmapped axis). That program's run directory is ``<out>/<first arm>+<n>.sweep/`` (checkpoints, its
members' metrics; it resumes like any run), and each arm then lands in ``<out>/<arm name>/``
(:func:`dyntheory.engine.rundir.subrun_dir`: ``spec.json``, ``metrics.jsonl``, ``probes.npz``),
exactly what a separate run of that arm writes, so ``dyntheory metrics`` and the figures read it
unchanged. Every cell equals a separate run of its setting (``tests/test_sweep.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from dyntheory.engine import records, rundir, sharding
from dyntheory.engine.config import TrainConfig
from dyntheory.engine.state import FitResult
from dyntheory.engine.trainer import Trainer
from dyntheory.optim.config import OptimizerConfig


class Arm(NamedTuple):
    """One optimizer setting to train, and the name of its sub-run."""

    name: str
    optim: OptimizerConfig


class ArmResult(NamedTuple):
    """What :func:`run_arms` returns per arm."""

    result: FitResult  # the arm's own result, as a separate run of it would return
    wall_s: float  # seconds of the program that trained it, summed over every process that ran it
    # (resumes included; shared by the arms of a sweep)
    arms_in_program: int  # how many arms that program trained


def arm_name(optim: OptimizerConfig, keys: Sequence[str]) -> str:
    """``"prm"``, or ``"prm_lr0.001_prm_alpha0.1"`` with the swept ``keys`` of the config."""
    label = optim.label([k for k in keys if k in optim.numbers])
    return f"{optim.family}_{label}" if label else optim.family


def lr_arm_name(optim: OptimizerConfig, keys: Sequence[str] = ()) -> str:
    """``"adamw_lr1e-03"``: the family and the lr (then any other swept number,
    ``"prm_lr1e-03_prm_alpha0.5"``), the names of the lr grids of the comparison experiments."""
    rest = optim.label([k for k in keys if k != "lr" and k in optim.numbers])
    return f"{optim.family}_lr{optim.lr:.0e}" + (f"_{rest}" if rest else "")


def arms(
    optim: OptimizerConfig,
    families: Sequence[str],
    *,
    name: Callable[[OptimizerConfig, Sequence[str]], str] = arm_name,
    prm_alpha: float | None = None,
) -> list[Arm]:
    """Every family of ``families`` at every cell of ``optim``'s grid (the numbers that family
    reads), PRM's α filled in with ``prm_alpha`` where the config leaves it None."""
    keys = optim.grid_keys
    out = []
    for family in families:
        for cell in optim.cells(family):
            cell = cell.resolve(prm_alpha=prm_alpha) if family == "prm" else cell
            out.append(Arm(name(cell, keys), cell))
    names = [a.name for a in out]
    if len(set(names)) != len(names):
        raise ValueError(f"two arms share a name: {names}.")
    return out


def _probe_signature(probes: Sequence[Any]) -> list:
    """What makes two probe lists interchangeable: each probe's type and fields."""
    return [
        (type(p), [(f.name, getattr(p, f.name)) for f in dataclasses.fields(p)]) for p in probes
    ]


def _groups(todo: Sequence[Arm], probes: Callable) -> list[list[Arm]]:
    """Arms that can share a program: the same static optimizer and equal probes."""
    groups: list[tuple[Any, list, list[Arm]]] = []
    for arm in todo:
        key, sig = arm.optim.static_key(), _probe_signature(probes(arm.optim))
        for k, s, members in groups:
            if k == key and s == sig:
                members.append(arm)
                break
        else:
            groups.append((key, sig, [arm]))
    return [members for _, _, members in groups]


def run_arms(
    train: TrainConfig,
    todo: Sequence[Arm],
    *,
    out=None,
    probes: Callable[[OptimizerConfig], Sequence[Any]] = lambda optim: (),
    spec: Mapping[str, Any] | None = None,
    config: Any = None,
    extendable: Sequence[str] = (),
    sweep: bool = True,
    progress: bool | None = None,
    **task: Any,
) -> dict[str, ArmResult]:
    """Train every arm of ``todo`` on ``task`` (:class:`~dyntheory.engine.Trainer`'s keyword
    arguments but ``optimizer``, ``probes`` and ``grid``) into ``<out>/<arm.name>/``.

    ``spec`` (plus the arm's optimizer) and ``config`` describe each sub-run for
    :func:`~dyntheory.engine.rundir.subrun_dir` (``extendable``: further keys a resume may
    change). ``sweep=False`` trains every arm as its own program (the reference a sweep equals).
    Returns ``{arm name: ArmResult}`` in the order of ``todo``.
    """
    base = Path(out) if out is not None else None
    done: dict[str, ArmResult] = {}

    def subrun(path, arm_spec):
        return rundir.subrun_dir(path, arm_spec, extendable, config=config) if path else None

    def arm_spec(arm):  # its numbers are in the config (resumable) and in its name
        return {**(spec or {}), "arm": arm.name, "optimizer": list(arm.optim.static_key())}

    for group in _groups(todo, probes) if sweep else [[a] for a in todo]:
        first = group[0]
        trainer = Trainer(
            train,
            optimizer=first.optim.build(),
            probes=probes(first.optim),
            grid=[a.optim.hyperparams() for a in group] if len(group) > 1 else None,
            **task,
        )
        if len(group) == 1:
            path = base / first.name if base else None
            result = trainer.run(subrun(path, arm_spec(first)), progress=progress)
            done[first.name] = ArmResult(result, records.run_seconds(result.history), 1)
            continue
        path = base / f"{first.name}+{len(group) - 1}.sweep" if base else None
        sweep_spec = {**(spec or {}), "arms": [arm_spec(a) for a in group]}
        result = trainer.run(subrun(path, sweep_spec), progress=progress)
        wall = records.run_seconds(result.history)
        for c, arm in enumerate(group):
            cell = cell_result(result, c, len(group), train.seeds)
            cell = cell._replace(run_dir=base / arm.name if base else None)
            if base is not None and sharding.is_main_process():
                write_cell(subrun(base / arm.name, arm_spec(arm)), result, c, train.seeds)
            done[arm.name] = ArmResult(cell, wall, len(group))
    return {a.name: done[a.name] for a in todo}


def total_seconds(done: dict[str, ArmResult]) -> float:
    """The seconds of every program of :func:`run_arms`, each counted once (an arm's share of a
    sweep is its program's time over the arms in it), summed over every process that ran it."""
    return sum(r.wall_s / r.arms_in_program for r in done.values())


def _members(c: int, seeds: int):
    """Cell ``c``'s members: an index (one seed: the axis is dropped) or a slice."""
    return c * seeds if seeds == 1 else slice(c * seeds, (c + 1) * seeds)


def cell_result(result: FitResult, c: int, cells: int, seeds: int) -> FitResult:
    """Cell ``c`` of a sweep's result (members ``c·S … c·S + S − 1``), shaped as a separate run
    of that cell with ``seeds`` seeds returns it (its state's arrays fetched to the host)."""
    m = _members(c, seeds)
    take = lambda x: np.asarray(x)[m]  # on the host: no device program per leaf shape
    history = {k: (v if k == "step" else v[:, m]) for k, v in result.history.items()}
    arrays = {k: (v if k.endswith("/step") else v[:, m]) for k, v in result.arrays.items()}
    state = result.state._replace(
        params=jax.tree.map(take, result.state.params),
        opt_state=jax.tree.map(take, result.state.opt_state),
        key=result.state.key[m],
    )
    return FitResult(
        state,
        {k: np.asarray(v)[m] for k, v in result.final.items()},
        history,
        arrays,
        jax.tree.map(take, result.probe_states),
        result.run_dir,
    )


def cell_lines(lines: Sequence[Mapping[str, Any]], c: int, seeds: int) -> list[dict]:
    """Cell ``c``'s metrics lines from a sweep's (``"seed"`` = member), relabelled as a separate
    run writes them (``"seed"`` 0 … S − 1, none with one seed)."""
    out = []
    for line in lines:
        s = int(line.get("seed", 0)) - c * seeds
        if 0 <= s < seeds:
            rest = {k: v for k, v in line.items() if k != "seed"}
            out.append(rest if seeds == 1 else {"step": line["step"], "seed": s, **rest})
    return out


def write_cell(rd: rundir.RunDir, result: FitResult, c: int, seeds: int) -> None:
    """Write cell ``c`` of a sweep into its own sub-run ``rd``: metrics lines and probe arrays."""
    sweep_rd = rundir.RunDir(result.run_dir, create=False)
    rd.reset()
    rd.append_metrics(cell_lines(sweep_rd.read_metrics(), c, seeds))
    m = _members(c, seeds)
    arrays = {k: (v if k.endswith("/step") else v[:, m]) for k, v in result.arrays.items()}
    if arrays:
        rd.write_arrays(arrays)


__all__ = [
    "Arm",
    "ArmResult",
    "arm_name",
    "arms",
    "cell_lines",
    "cell_result",
    "lr_arm_name",
    "run_arms",
]
