"""Low-rank W_S against dense on a classification task under AdamW, one trajectory.

    python benchmarks/ws_spectrum.py N_EXAMPLES CLASSES RANK STEPS VECTORS START LR

A Gaussian-cluster task (16 inputs, CLASSES classes), a 2 x 64 ReLU MLP, full-batch AdamW; W_S on
the whole training set from the first probe step >= START (4 probe steps a decade). Probes: dense
(split modulo the logit shifts) and dense without it; low-rank variants "old" (the product of the
compressed factors, no projection, VECTORS Lanczos vectors per refresh), "prod" (the compressed
product, modulo the logit shifts) and "fill" (as "prod", the basis filled at the first refresh).
Prints, per probe step, the top-5 low-rank / dense eigenvalue ratios and the identity errors, and
at the end the top-5 of Qᵀ W Q (dense W on the basis) next to the low-rank W_r.
"""

import sys
import time

import jax
import numpy as np
import optax
from flax import nnx

from dyntheory import losses
from dyntheory import probes as P
from dyntheory.engine import Trainer
from dyntheory.engine.config import TrainConfig
from dyntheory.models import MLP, functional
from dyntheory.optim import state as optim_state


def cluster_task(n: int, p: int, d: int = 16):
    """``(data, apply, init)``: ``n`` Gaussian-cluster examples of ``p`` classes in ``d`` inputs
    and a 2 x 64 ReLU MLP."""
    rng = np.random.RandomState(0)
    centers = rng.randn(p, d) * 1.5
    lab = rng.randint(0, p, n)
    data = {"x": (centers[lab] + rng.randn(n, d)).astype(np.float32), "y": lab.astype(np.int32)}
    mk = lambda key: MLP(d, (64, 64), p, activation="relu", rngs=nnx.Rngs(key))
    return data, functional(mk(0))[0], lambda k: functional(mk(k))[1]


def main(argv: list[str]) -> None:
    n, p, rank, steps, vecs, start = (int(a) for a in argv[:6])
    lr = float(argv[6])
    data, apply, init = cluster_task(n, p)
    sched = P.Schedule.log(4, final=True)
    common = dict(
        lr=lr, preconditioner=optim_state.adam_preconditioner(lr), loss="softmax_ce",
        query=False, implementation="ntvp", start=start,
    )  # fmt: skip
    variants = {
        "old": dict(modulo_ker_b=False, compress="factors", lanczos_vectors=vecs),
        "prod": dict(lanczos_vectors=vecs),
        "fill": dict(lanczos_vectors=rank),
    }
    probes = [
        P.Dissipation(sched, name="dense", **common),
        P.Dissipation(sched, name="densefull", modulo_ker_b=False, **common),
    ] + [
        P.Dissipation(sched, name=k, method="lowrank", rank=rank, **v, **common)
        for k, v in variants.items()
    ]
    tr = Trainer(
        TrainConfig(steps=steps, fuse=steps, log_every=steps),
        apply_fn=apply, init_params=init,
        optimizer=optax.adamw(lr, weight_decay=0.01), data=data, loss="softmax_ce", probes=probes,
    )  # fmt: skip
    t0 = time.time()
    res = tr.run(progress=False)
    print(f"{n * p} outputs, rank {rank}, wall {time.time() - t0:.0f} s")
    h = res.history
    rows = np.isfinite(h["probe/dense/time"])
    print("stability_max", np.nanmax(h["probe/dense/stability_max"]))
    for name in variants:
        ref = "densefull" if name == "old" else "dense"
        ed, el = res.arrays[f"{ref}/w_eigenvalues"], res.arrays[f"{name}/w_eigenvalues"]
        print(f"== {name} vs {ref}: top-5 low/dense, max|r-1|, identity err low (dense)")
        for i, s in enumerate(h["step"][rows]):
            if s <= start:
                continue
            r = el[i][:5] / ed[i][:5]
            idl = h[f"probe/{name}/identity_rel_err"][rows][i]
            idd = h["probe/dense/identity_rel_err"][rows][i]
            print(f"  step {int(s):4d}  {np.round(r, 3)}  {np.max(np.abs(r - 1)):.3f}  "
                  f"id {idl:.3f} ({idd:.3f})")  # fmt: skip
    st = res.probe_states
    wd = np.asarray(st["densefull"].acc.W)
    pi = lambda m: np.asarray(losses.logit_shift_free(jax.numpy.asarray(m), p))
    for name in variants:
        q, wr = np.asarray(st[name].acc.Q), np.asarray(st[name].acc.acc.W)
        ref = wd if name == "old" else pi(pi(wd).T)
        top = lambda m: np.round(np.linalg.eigvalsh(m)[::-1][:5], 1)
        print(f"{name}: QᵀWQ {top(q.T @ ref @ q)}  W_r {top(wr)}  dense {top(ref)}")


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main(sys.argv[1:])
