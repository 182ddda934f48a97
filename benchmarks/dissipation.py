"""Dissipation-probe cost against the number of examples: dense vs low-rank, side by side.

    .venv/bin/python benchmarks/dissipation.py                  # docs/results/benchmarks.md
    .venv/bin/python benchmarks/dissipation.py --n 16 64 256    # a quick run

One probe call (one accumulator advance over 10 steps and one kernel refresh) of
``dyntheory.probes.Dissipation`` on a tanh MLP 8 -> 64 -> 10 (p = 10 outputs, squared loss, GD),
for n examples, so ``N = 10 n`` train outputs: ``method="dense"`` forms the (N, N) kernel and
eigendecomposes it; ``method="lowrank"`` works in a basis of ``--rank`` directions with
NTK-vector products. Each probe is jitted once (compilation excluded); the median of repeated
calls is printed, then the fitted growth exponent ``c`` of ``time ∝ n^c`` over the measured n
(the dense one is skipped past ``--dense-max`` = 128 examples: O(N³)). Target: low-rank
exponent ≤ 1.2.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dyntheory import probes
from dyntheory.models import MLP, functional
from dyntheory.probes.base import ProbeContext


def _probe_seconds(probe, n: int, repeats: int) -> float:
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.randn(n, 8), jnp.float32)
    y = jnp.asarray(rng.randn(n, 10), jnp.float32)
    apply_fn, params = functional(MLP(8, (64,), 10, activation="tanh", rngs=nnx.Rngs(0)))
    ctx = ProbeContext(apply_fn, None, optax.sgd(0.1), {"x": x, "y": y}, None, None, None)
    init = jax.jit(lambda p: probe.init(ctx, p, ()))
    call = jax.jit(lambda st, p, t: probe(ctx, st, p, (), t))
    state = jax.block_until_ready(init(params))
    jax.block_until_ready(call(state, params, jnp.int32(10)))  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(call(state, params, jnp.int32(10)))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    jax.config.update("jax_enable_x64", True)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[16, 64, 256, 1024, 4096])
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--dense-max", type=int, default=128, help="largest n for the dense method")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sched = probes.Schedule.every(10)
    common = dict(lr=0.1, query=False)
    rows = []
    print(f"{'n':>6} {'outputs':>8} {'dense s':>10} {'lowrank s':>10}  (rank {args.rank})")
    for n in args.n:
        dense = None
        if n <= args.dense_max:
            dense = _probe_seconds(probes.Dissipation(sched, **common), n, args.repeats)
        rank = min(args.rank, 10 * n)
        low = probes.Dissipation(sched, method="lowrank", rank=rank, lanczos_vectors=8, **common)
        lowrank = _probe_seconds(low, n, args.repeats)
        rows.append((n, dense, lowrank))
        d = "-" if dense is None else f"{dense:.3f}"
        print(f"{n:>6} {10 * n:>8} {d:>10} {lowrank:>10.3f}", flush=True)
    for name, col in (("dense", 1), ("lowrank", 2)):
        pts = [(r[0], r[col]) for r in rows if r[col] is not None and r[0] >= 64]
        if len(pts) >= 2:
            c = np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)[0]
            print(f"growth exponent in n ({name}, n >= 64): {c:.2f}")


if __name__ == "__main__":
    main()
