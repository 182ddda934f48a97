"""PRM vs optax.adamw: per-step time of the same jitted, donated train step, and optimizer memory.

    .venv/bin/python benchmarks/prm.py            # a few minutes on a 2-core CPU
    .venv/bin/python benchmarks/prm.py --quick    # a smoke run (few repeats)

Both optimizers run the identical train step (forward, backward, ``opt.update``,
``optax.apply_updates``), jitted once each with params and optimizer state donated, on an MLP of
about 1M parameters and a small decoder-only transformer from :mod:`dyntheory.models`. Repeats are
interleaved (adamw, prm, prm gate_stats=True, prm per_tensor, adamw, ...) so drifting machine load
hits all alike; the ratio is the median over repeats of the per-repeat time ratio. Because wall
time on a shared machine is noisy, the table also gives the same ratio of process CPU time, and the
ratio of the bytes XLA's cost analysis says the compiled step reads and writes (a load-independent
proxy: the optimizer is memory-bound). State bytes are summed over the optimizer state's leaves;
"param-sized buffers" counts its non-scalar bytes in units of the params' bytes (adamw: m, v = 2;
PRM: m, v, s = 3). Targets (issue 4): time ratio <= 1.10, exactly one extra param-sized buffer.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dyntheory.models import MLP, Transformer, count_params, functional
from dyntheory.optim import prm

LR, WD = 1e-3, 0.01


def mlp_task(batch: int = 256):
    """MLP 512 → 1024 → 512 → 10 (≈1.05M params), softmax cross-entropy on random data."""
    apply_fn, params = functional(MLP(512, (1024, 512), 10, activation="gelu", rngs=nnx.Rngs(0)))
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (batch, 512), jnp.float32)
    y = jax.random.randint(ky, (batch,), 0, 10)
    return "MLP 512-1024-512-10", apply_fn, params, x, y


def transformer_task(batch: int = 64, seq: int = 32, vocab: int = 128):
    """Decoder-only transformer, width 128, 2 blocks, 4 heads; loss on the last position."""
    model = Transformer(vocab, seq, width=128, depth=2, heads=4, rngs=nnx.Rngs(0))
    apply_fn, params = functional(model)
    kx, ky = jax.random.split(jax.random.key(2))
    x = jax.random.randint(kx, (batch, seq), 0, vocab)
    y = jax.random.randint(ky, (batch,), 0, vocab)
    return f"Transformer w128 d2 h4, T={seq}", apply_fn, params, x, y


def make_step(apply_fn, opt):
    def loss_fn(params, x, y):
        logits = apply_fn(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def tree_bytes(tree, *, nonscalar: bool = False) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(tree) if not nonscalar or x.ndim > 0)


def bench(task, optimizers: dict, repeats: int, steps: int) -> dict:
    name, apply_fn, params, x, y = task
    runs = {}
    for label, opt in optimizers.items():
        p = jax.tree.map(jnp.copy, params)
        state = opt.init(p)
        step = make_step(apply_fn, opt)
        cost = step.lower(p, state, x, y).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        p, state, loss = step(p, state, x, y)  # compile
        jax.block_until_ready(loss)
        runs[label] = dict(step=step, p=p, state=state, times=[], cpu_times=[])
        runs[label]["state_bytes"] = tree_bytes(state)
        runs[label]["xla_bytes"] = cost.get("bytes accessed", float("nan"))
        runs[label]["buffers"] = tree_bytes(state, nonscalar=True) / tree_bytes(params)
    for _ in range(repeats):
        for r in runs.values():
            p, state = r["p"], r["state"]
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                p, state, loss = r["step"](p, state, x, y)
            jax.block_until_ready((p, state, loss))
            r["times"].append((time.perf_counter() - t0) / steps)
            r["cpu_times"].append((time.process_time() - c0) / steps)
            r["p"], r["state"] = p, state
    base = runs["adamw"]["times"]
    for r in runs.values():
        r["ms"] = 1e3 * statistics.median(r["times"])
        r["ratio"] = statistics.median(t / b for t, b in zip(r["times"], base, strict=True))
        r["cpu_ratio"] = statistics.median(
            t / b for t, b in zip(r["cpu_times"], runs["adamw"]["cpu_times"], strict=True)
        )
        r["bytes_ratio"] = r["xla_bytes"] / runs["adamw"]["xla_bytes"]
    return dict(name=name, n_params=count_params(params), runs=runs)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
    ap.add_argument("--quick", action="store_true", help="3 repeats of 5 steps")
    args = ap.parse_args(argv)
    repeats, steps = (3, 5) if args.quick else (args.repeats, args.steps)

    optimizers = {
        "adamw": optax.adamw(LR, weight_decay=WD),
        "prm": prm(LR, weight_decay=WD),
        "prm gate_stats=True": prm(LR, weight_decay=WD, gate_stats=True),
        "prm per_tensor": prm(LR, weight_decay=WD, reduction="per_tensor"),
    }
    dev = jax.devices()[0]
    print(
        f"# PRM vs optax.adamw — {dev.platform} ({dev.device_kind}), jax {jax.__version__}, "
        f"{repeats} interleaved repeats × {steps} steps, median\n"
    )
    print(
        "| model | params | optimizer | ms/step | time ratio vs adamw | CPU-time ratio "
        "| XLA bytes ratio | state MB | param-sized buffers | extra vs adamw |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for task in (mlp_task(), transformer_task()):
        res = bench(task, optimizers, repeats, steps)
        base_buffers = res["runs"]["adamw"]["buffers"]
        for label, r in res["runs"].items():
            print(
                f"| {res['name']} | {res['n_params']:,} | {label} | {r['ms']:.3f} "
                f"| {r['ratio']:.3f} | {r['cpu_ratio']:.3f} | {r['bytes_ratio']:.3f} "
                f"| {r['state_bytes'] / 2**20:.2f} "
                f"| {r['buffers']:.2f} "
                f"| {r['buffers'] - base_buffers:+.2f} |"
            )


if __name__ == "__main__":
    main()
