"""Two or more versions of the engine's ``trainer.py`` side by side in one process: the compile time
of their fused step and its time per training step, measured in alternation.

    git show HEAD~1:dyntheory/engine/trainer.py > /tmp/before.py
    PYTHONPATH=. python benchmarks/trainer_ab.py /tmp/before.py dyntheory/engine/trainer.py

This machine's speed drifts by ±20 % from one run to the next, more than most changes to the
fused step are worth, so two runs one after the other cannot compare them. Here every version is
loaded as its own module and trains the same task in the same process, and the measurements
alternate: ``--compile-rounds`` rounds of building a Trainer of each version and compiling its
fused step (cache off), then ``--chunks`` dispatches of ``fuse`` steps each, the order of the
versions reversed every other time. Printed per version: the median and range of each.

The task is that of ``benchmarks/sweep.py``: PRM on the grokking ``quick`` task, the grid
``lr × prm_alpha`` (8 cells, one vmapped program), the NTK and W_S probes off.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sweep as sweep_benchmark  # noqa: E402

from dyntheory.engine.config import apply_overrides, replace  # noqa: E402
from experiments.grokking.config import PRESETS  # noqa: E402


def load(path: str, i: int):
    """The module of one ``trainer.py`` version, under a name of its own."""
    spec = importlib.util.spec_from_file_location(f"trainer_version_{i}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("versions", nargs="+", help="paths of trainer.py versions")
    ap.add_argument("--compile-rounds", type=int, default=3)
    ap.add_argument("--chunks", type=int, default=16)
    ap.add_argument("--lrs", default="1e-3,3e-3")
    ap.add_argument("--alphas", default="0.1,0.25,0.5,1")
    args = ap.parse_args(argv)
    if len(args.versions) < 2:
        ap.error("give at least two versions of trainer.py to compare")
    for path in args.versions:
        if not Path(path).is_file():
            ap.error(f"no such file: {path}")
    jax.config.update("jax_enable_x64", True)  # as the CLI runs experiments
    jax.config.update("jax_enable_compilation_cache", False)
    cfg = apply_overrides(
        replace(PRESETS["quick"].config, seeds=1, probes_per_decade=0),
        ["optimizers=prm", f"lr={args.lrs}", f"prm_alpha={args.alphas}"],
    )
    todo, task = sweep_benchmark.task(cfg)
    probes = task.pop("probes")
    modules = [load(p, i) for i, p in enumerate(args.versions)]

    def build(module):
        return module.Trainer(
            cfg.train,
            optimizer=todo[0].optim.build(),
            probes=probes(todo[0].optim),
            grid=[a.optim.hyperparams() for a in todo],
            **task,
        )

    compile_s = {i: [] for i in range(len(modules))}
    order = list(range(len(modules)))
    trainers = {}
    for r in range(args.compile_rounds):
        for i in order if r % 2 == 0 else order[::-1]:
            tr = build(modules[i])
            state = tr.init_state()
            pstates = tr.prober.init(state)
            t0 = time.perf_counter()
            tr.compile(state, pstates)
            compile_s[i].append(time.perf_counter() - t0)
            trainers[i] = (tr, state, pstates)
    n = cfg.train.fuse
    step_ms = {i: [] for i in order}
    for i in order:  # one dispatch each before timing
        tr, state, pstates = trainers[i]
        state, pstates, _ = tr.advance(state, pstates, n)
        trainers[i] = (tr, jax.block_until_ready(state), pstates)
    for c in range(args.chunks):
        for i in order if c % 2 == 0 else order[::-1]:
            tr, state, pstates = trainers[i]
            t0 = time.perf_counter()
            state, pstates, metrics = tr.advance(state, pstates, n)
            jax.block_until_ready((state, metrics))
            step_ms[i].append((time.perf_counter() - t0) / n * 1e3)
            trainers[i] = (tr, state, pstates)
    print(f"\nPRM on grokking quick, {len(todo)} cells in one program, fuse {n}\n")
    print("| version | fused step compile (s) | ms per training step |")
    print("|---|---|---|")
    for i, path in enumerate(args.versions):
        c, s = np.array(compile_s[i]), np.array(step_ms[i])
        print(
            f"| {path} | {np.median(c):.2f} ({c.min():.2f}–{c.max():.2f}) "
            f"| {np.median(s):.2f} ({s.min():.2f}–{s.max():.2f}) |"
        )


if __name__ == "__main__":
    main()
