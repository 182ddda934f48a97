"""The training engine: per-step dispatch vs scan fusion, and the cost of the default probes.

    .venv/bin/python benchmarks/engine.py             # ~1-2 min on a 2-core CPU
    .venv/bin/python benchmarks/engine.py --quick     # a smoke run

Same model, data and optimizer throughout: a tanh MLP 16 → 128 → 128 → 1 (18.7k params), Adam,
minibatches of 64 from 1,024 teacher-student examples, squared loss, one device, float32.

1. **Dispatch.** ``fit`` with ``fuse=1`` (one jitted call per step; the host still reads step
   t − 1's metrics after dispatching step t) against ``fuse=100`` (100 steps per call with
   ``lax.scan``). Steps/s is the run's steady state: ``steps / time/train_s`` (compilation is
   timed apart, in ``time/compile_s``).
2. **Probes.** The same ``fuse=100`` run with :func:`dyntheory.probes.default_probes` (NTK
   spectrum + drift every 500 steps on a 64-example probe set, per-layer norms every 100 steps)
   against none: the probe share ``time/probe_s / time/train_s`` (target ≤ 20 %) and the wall time
   of both runs.

Runs are repeated and interleaved (fused, per-step, fused+probes, ...) so drifting machine load hits
all alike; the median is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
import optax
from flax import nnx

from dyntheory import probes
from dyntheory.engine import Trainer
from dyntheory.engine.config import TrainConfig
from dyntheory.models import MLP, count_params, functional


def task(n: int = 1024, d: int = 16):
    model = lambda key: MLP(d, (128, 128), 1, activation="tanh", rngs=nnx.Rngs(key))
    apply_fn, params = functional(model(jax.random.key(0)))
    rng = np.random.RandomState(0)
    x = rng.randn(n, d).astype(np.float32)
    y = np.tanh(x @ rng.randn(d, 1).astype(np.float32) / np.sqrt(d))
    return apply_fn, lambda key: functional(model(key))[1], count_params(params), {"x": x, "y": y}


def trainer(steps: int, fuse: int, with_probes: bool) -> Trainer:
    apply_fn, init, _, data = task()
    cfg = TrainConfig(
        steps=steps, batch_size=64, fuse=fuse, log_every=100, eval_every=0, devices=1, probe_size=64
    )
    return Trainer(
        cfg,
        apply_fn=apply_fn,
        init_params=init,
        optimizer=optax.adam(1e-3),
        data=data,
        probes=probes.default_probes() if with_probes else [],
    )


def measure(tr: Trainer) -> dict[str, float]:
    t0 = time.perf_counter()
    out = tr.run(progress=False)
    wall = time.perf_counter() - t0
    h = out.history
    train_s, probe_s = float(h["time/train_s"][-1]), float(h["time/probe_s"][-1])
    return {
        "wall_s": wall,
        "train_s": train_s,
        "probe_s": probe_s,
        "compile_s": float(h["time/compile_s"][-1]),
        "steps_per_s": tr.cfg.steps / train_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,000 steps, one repeat")
    args = parser.parse_args()
    steps, repeats = (1000, 1) if args.quick else (args.steps, args.repeats)

    runs = {
        "per-step dispatch (fuse=1)": trainer(steps, 1, False),
        "scan-fused (fuse=100)": trainer(steps, 100, False),
        "scan-fused + default probes": trainer(steps, 100, True),
    }
    results: dict[str, list[dict]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, tr in runs.items():
            results[name].append(measure(tr))
    med = {
        name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        for name, rs in results.items()
    }

    print(
        f"# engine benchmark: {jax.devices()[0].platform}, {jax.device_count()} device(s) visible, "
        f"1 used; MLP 16-128-128-1 ({task()[2]:,} params), Adam, batch 64, {steps:,} steps, "
        f"median of {repeats}"
    )
    print()
    print("| run | steps/s (train) | train s | probe s | compile s | wall s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, m in med.items():
        print(
            f"| {name} | {m['steps_per_s']:,.0f} | {m['train_s']:.2f} | {m['probe_s']:.2f} | "
            f"{m['compile_s']:.2f} | {m['wall_s']:.2f} |"
        )
    base, fused, probed = (med[k] for k in runs)
    print()
    print(f"scan fusion speed-up: {fused['steps_per_s'] / base['steps_per_s']:.1f}x steps/s")
    overhead = probed["probe_s"] / probed["train_s"]
    print(
        f"default probes (NTK every 500 on 64 examples, norms every 100): probe time = "
        f"{100 * overhead:.1f}% of train time (target <= 20%); training time with probes "
        f"{probed['train_s']:.2f} s vs {fused['train_s']:.2f} s without"
    )


if __name__ == "__main__":
    main()
