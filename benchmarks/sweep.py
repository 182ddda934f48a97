"""A grid of optimizer settings in one compiled program against one program per setting.

    PYTHONPATH=. nice -n 10 python benchmarks/sweep.py              # ≈ 10 min on a 2-core CPU
    PYTHONPATH=. python benchmarks/sweep.py --steps 50 --lrs 1e-3   # a smoke run

PRM on the grokking ``quick`` task (embedding MLP, ÷ mod 59, half the pairs, batch 512), one seed,
``--steps`` steps, its gate statistics every eval step and the NTK / W_S probes off, over the grid
``lr × prm_alpha`` (default 2 × 4 = 8 cells). Both arms go through
:func:`dyntheory.engine.sweep.run_arms` in one process with the same inputs: ``sweep=True`` trains
every cell as a member of one vmapped program, ``sweep=False`` builds and compiles one program per
cell, one after another (what a Python loop over the grid does). The persistent compilation cache
is off, so every program compiles. Printed: wall time of each arm and their ratio, the number of
training programs compiled (``Trainer.compile`` calls) and of XLA compilations (every jitted
function: init, step, probes), and the largest difference between the two arms over every cell's
metrics history, final metrics and final parameters.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from dyntheory.engine import sweep
from dyntheory.engine.config import apply_overrides, replace
from dyntheory.engine.trainer import Trainer
from experiments.grokking import run as grokking
from experiments.grokking.config import PRESETS


class Counter:
    """Counts XLA compilations and training programs compiled while it is active."""

    def __init__(self):
        self.xla = 0
        self.programs = 0
        jax.monitoring.register_event_duration_secs_listener(self._event)
        original = Trainer.compile

        def compile_and_count(tr, *a, **k):
            self.programs += 1
            return original(tr, *a, **k)

        Trainer.compile = compile_and_count

    def _event(self, name, seconds, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            self.xla += 1

    def snapshot(self) -> tuple[int, int]:
        return self.programs, self.xla


def task(cfg):
    data = grokking.load_data(cfg)
    n_train = len(data.y_train)
    apply_fn = grokking.functional(grokking.build_model(cfg, data, jax.random.key(0)))[0]
    init = lambda key: grokking.functional(grokking.build_model(cfg, data, key))[1]
    train = {"x": data.x_train, "y": data.y_train}
    kwargs = dict(
        apply_fn=apply_fn,
        init_params=init,
        data=train,
        loss="softmax_ce",
        eval_sets={"test": {"x": data.x_test, "y": data.y_test}, "trainset": train},
        probes=lambda optim: grokking.make_probes(cfg, optim, n_train),
    )
    return grokking.arms(cfg, n_train), kwargs


def max_diff(a, b) -> float:
    """Largest |a − b| over every cell: history, final metrics, final params (NaN = equal)."""
    worst = 0.0
    for name in a:
        ra, rb = a[name].result, b[name].result
        for k in ra.history:
            x, y = np.asarray(ra.history[k], float), np.asarray(rb.history[k], float)
            d = np.abs(x - y)[~(np.isnan(x) & np.isnan(y))]
            worst = max(worst, float(d.max()) if d.size else 0.0)
        for k in ra.final:
            worst = max(worst, float(np.max(np.abs(ra.final[k] - rb.final[k]))))
        pa, pb = jax.tree.leaves(ra.state.params), jax.tree.leaves(rb.state.params)
        for x, y in zip(pa, pb, strict=True):
            worst = max(worst, float(np.max(np.abs(np.asarray(x) - np.asarray(y)))))
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lrs", default="1e-3,3e-3")
    ap.add_argument("--alphas", default="0.1,0.25,0.5,1")
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # as the CLI runs experiments
    jax.config.update("jax_enable_compilation_cache", False)
    cfg = apply_overrides(
        replace(PRESETS["quick"].config, steps=args.steps, seeds=1, probes_per_decade=0),
        ["optimizers=prm", f"lr={args.lrs}", f"prm_alpha={args.alphas}"],
    )
    todo, kwargs = task(cfg)
    counter = Counter()
    out = {}
    for mode, one_program in (("one vmapped program", True), ("sequential programs", False)):
        before = counter.snapshot()
        t0 = time.perf_counter()
        out[mode] = sweep.run_arms(cfg.train, todo, sweep=one_program, progress=False, **kwargs)
        wall = time.perf_counter() - t0
        after = counter.snapshot()
        out[mode + "/stats"] = (wall, after[0] - before[0], after[1] - before[1])
    one, seq = out["one vmapped program"], out["sequential programs"]
    (w1, p1, x1), (w2, p2, x2) = out["one vmapped program/stats"], out["sequential programs/stats"]
    print(
        f"\nPRM on grokking quick, {len(todo)} cells (lr {args.lrs} × prm_alpha {args.alphas}), "
        f"{args.steps} steps, 1 seed\n"
    )
    print("| | wall (s) | training programs compiled | XLA compilations |")
    print("|---|---|---|---|")
    print(f"| one vmapped program | {w1:.1f} | {p1} | {x1} |")
    print(f"| {len(todo)} sequential programs | {w2:.1f} | {p2} | {x2} |")
    print(f"| ratio (one / sequential) | {w1 / w2:.3f} | | |")
    print(
        f"\nmax |difference| over every cell's metrics, final metrics and params: "
        f"{max_diff(one, seq):.2e}"
    )


if __name__ == "__main__":
    main()
