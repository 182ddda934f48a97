"""A grid of optimizer settings in one compiled program against one program per setting.

    PYTHONPATH=. nice -n 10 python benchmarks/sweep.py              # ≈ 10 min on a 2-core CPU
    PYTHONPATH=. python benchmarks/sweep.py --dtype float64         # the cells' equality, ≈ 4 min
    PYTHONPATH=. python benchmarks/sweep.py --steps 50 --lrs 1e-3   # a smoke run

PRM on the grokking ``quick`` task (embedding MLP, ÷ mod 59, half the pairs, batch 512), one seed,
``--steps`` steps, its gate statistics every eval step and the NTK / W_S probes off, over the grid
``lr × prm_alpha`` (default 2 × 4 = 8 cells). Both arms go through
:func:`dyntheory.engine.sweep.run_arms` in one process with the same inputs: ``sweep=True`` trains
every cell as a member of one vmapped program, ``sweep=False`` builds and compiles one program per
cell, one after another (what a Python loop over the grid does). The persistent compilation cache
is off, so every program compiles, and a 2-step run before both (not counted) takes what any
first run of a process compiles once. Printed: wall time of each arm and their ratio, the number of
training programs compiled (``Trainer.compile`` calls) and of XLA compilations (every jitted
function: init, step, probes, eager ops), and the largest differences between the two arms over
every cell: its final metrics, its metrics history (relative) and its final parameters (relative
to their scale). ``--dtype float64`` makes the params, so every computation, float64: there the
two arms are compared without float32's reduction-order round-off, which this task amplifies.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from dyntheory.engine import sweep
from dyntheory.engine.config import apply_overrides, replace
from dyntheory.engine.trainer import Trainer
from dyntheory.models import abstract, functional
from experiments.grokking.config import PRESETS
from experiments.grokking.run import arms, build_model, load_data, make_probes


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


def task(cfg, dtype=jnp.float32):
    data = load_data(cfg)
    n_train = len(data.y_train)
    apply_fn = abstract(lambda: build_model(cfg, data, jax.random.key(0)))[0]
    as_dtype = lambda tree: jax.tree.map(lambda x: x.astype(dtype), tree)
    init = lambda key: as_dtype(functional(build_model(cfg, data, key))[1])
    train = {"x": data.x_train, "y": data.y_train}
    kwargs = dict(
        apply_fn=apply_fn,
        init_params=init,
        data=train,
        loss="softmax_ce",
        eval_sets={"test": {"x": data.x_test, "y": data.y_test}, "trainset": train},
        probes=lambda optim: make_probes(cfg, optim, n_train),
    )
    return arms(cfg, n_train), kwargs


def differences(a, b) -> dict[str, float]:
    """The largest differences between the two arms over every cell: of the final metrics line
    (losses, accuracies, gradient norm), relative to each value, over the whole metrics history
    (NaN where both are NaN counts as equal), and of the final params relative to their scale."""
    final = hist = params = 0.0
    rel = lambda x, y: np.abs(x - y) / np.maximum(np.abs(y), 1e-12)
    for name in a:
        ra, rb = a[name].result, b[name].result
        for k in (k for k in ra.final if not k.startswith("time/")):  # wall clocks differ
            x, y = np.asarray(ra.final[k], float), np.asarray(rb.final[k], float)
            final = max(final, float(np.max(np.abs(x - y))))
        for k in (k for k in ra.history if not k.startswith("time/")):
            x, y = np.asarray(ra.history[k], float), np.asarray(rb.history[k], float)
            d = rel(x, y)[~(np.isnan(x) & np.isnan(y))]
            hist = max(hist, float(d.max()) if d.size else 0.0)
        pa, pb = jax.tree.leaves(ra.state.params), jax.tree.leaves(rb.state.params)
        for x, y in zip(pa, pb, strict=True):
            x, y = np.asarray(x, float), np.asarray(y, float)
            params = max(params, float(np.max(np.abs(x - y)) / np.max(np.abs(y))))
    return {
        "final metrics, max |Δ|": final,
        "metrics history, max relative Δ": hist,
        "final params, max |Δ| / max |param|": params,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lrs", default="1e-3,3e-3")
    ap.add_argument("--alphas", default="0.1,0.25,0.5,1")
    ap.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="the params' dtype, so of every computation (float64: round-off 1e-16, not 1e-7)",
    )
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # as the CLI runs experiments
    jax.config.update("jax_enable_compilation_cache", False)
    cfg = apply_overrides(
        replace(PRESETS["quick"].config, steps=args.steps, seeds=1, probes_per_decade=0),
        ["optimizers=prm", f"lr={args.lrs}", f"prm_alpha={args.alphas}"],
    )
    todo, kwargs = task(cfg, jnp.dtype(args.dtype))
    # warm-up, not counted: what any first run compiles once per process (key and data set-up)
    sweep.run_arms(replace(cfg.train, steps=2), todo[:1], progress=False, **kwargs)
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
        f"{args.steps} steps, 1 seed, {args.dtype}\n"
    )
    print("| | wall (s) | training programs compiled | XLA compilations |")
    print("|---|---|---|---|")
    print(f"| one vmapped program | {w1:.1f} | {p1} | {x1} |")
    print(f"| {len(todo)} sequential programs | {w2:.1f} | {p2} | {x2} |")
    print(f"| ratio (one / sequential) | {w1 / w2:.3f} | | |")
    print("\n| one program against sequential programs (every cell) | difference |")
    print("|---|---|")
    for what, value in differences(one, seq).items():
        print(f"| {what} | {value:.1e} |")


if __name__ == "__main__":
    main()
