"""Empirical-NTK timings: our implementations side by side with neural-tangents'.

    .venv/bin/python benchmarks/ntk.py            # docs/results/benchmarks.md (minutes on 2 cores)
    .venv/bin/python benchmarks/ntk.py --n 32     # a quick smoke run

Model: MLP 100 -> 256 -> 256 -> 10, tanh, float32 (94,218 parameters); 256 inputs; the full
(2560, 2560) kernel K = J Jᵀ. Each entry is jitted once; the first call (compile + run) is timed
separately and excluded; then the median of repeated calls (``block_until_ready``), repeated up
to ``--repeats`` times or until ``--budget`` seconds are spent (at least twice). Every kernel is
checked against ours "jacobian" (relative Frobenius error). Target: ours "auto" <= 1.0x
neural-tangents STRUCTURED_DERIVATIVES.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dyntheory._compat import import_neural_tangents
from dyntheory.models import MLP, count_params, functional
from dyntheory.ntk import choose_implementation, empirical_ntk


def _time(fn, repeats: int, budget: float) -> tuple[float, float, int, jax.Array]:
    """``(first-call s, median s, repeats, result)``."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times: list[float] = []
    while len(times) < max(2, repeats) and (len(times) < 2 or sum(times) < budget):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
        if len(times) >= repeats:
            break
    return first, statistics.median(times), len(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256, help="number of inputs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of repeats per entry")
    args = parser.parse_args()

    model = MLP(100, (256, 256), 10, activation="tanh", rngs=nnx.Rngs(0))
    apply_fn, params = functional(model)
    x = jax.random.normal(jax.random.key(0), (args.n, 100), jnp.float32)
    p = 10
    load = os.getloadavg()
    print(
        f"MLP 100-256-256-10 tanh, {count_params(params):,} params, {args.n} inputs, "
        f"K {args.n * p}x{args.n * p} float32"
    )
    print(
        f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"{os.cpu_count()} CPUs, {platform.machine()}; load average before: "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    auto = choose_implementation(apply_fn, params, args.n, p)

    entries = {}
    for impl in ["auto", "structured", "ntvp", "jacobian"]:
        f = jax.jit(lambda w, xs, impl=impl: empirical_ntk(apply_fn, w, xs, implementation=impl))
        entries[f"ours {impl}" + (f" (= {auto})" if impl == "auto" else "")] = f
    nt = import_neural_tangents()
    for name in ["STRUCTURED_DERIVATIVES", "JACOBIAN_CONTRACTION"]:
        fn = nt.empirical_ntk_fn(
            apply_fn,
            trace_axes=(),
            vmap_axes=0,
            implementation=getattr(nt.NtkImplementation, name),
        )
        # (n, n, p, p) -> our example-major (n p, n p); the transpose is inside the timed jit.
        nt_k = lambda w, xs, fn=fn: (
            fn(xs, None, w).transpose(0, 2, 1, 3).reshape(args.n * p, args.n * p)
        )
        entries[f"neural-tangents {name}"] = jax.jit(nt_k)

    results = {}
    for label, f in entries.items():
        first, med, reps, k = _time(lambda f=f: f(params, x), args.repeats, args.budget)
        results[label] = (first, med, reps, np.asarray(k, np.float64))
        print(f"  measured {label}: {med:.3f} s", flush=True)

    ref = results["ours jacobian"][3]
    print()
    print(f"{'implementation':<40} {'median s':>9} {'first call s':>13} {'runs':>5} {'rel err':>9}")
    for label, (first, med, reps, k) in results.items():
        err = np.linalg.norm(k - ref) / np.linalg.norm(ref)
        print(f"{label:<40} {med:>9.3f} {first:>13.2f} {reps:>5} {err:>9.1e}")
    auto_label = next(label for label in results if label.startswith("ours auto"))
    ratio = results[auto_label][1] / results["neural-tangents STRUCTURED_DERIVATIVES"][1]
    print(f"\nours auto / neural-tangents STRUCTURED_DERIVATIVES = {ratio:.2f}x (target <= 1.0x)")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    worst = max(np.linalg.norm(k - ref) / np.linalg.norm(ref) for *_, k in results.values())
    if worst > 1e-5:
        raise SystemExit(f"an implementation disagrees with 'jacobian': rel err {worst:.1e}")


if __name__ == "__main__":
    main()
