"""The per-step reference's W_S spectrum in r tracked directions against a complete basis.

    python benchmarks/ws_spectrum_stepwise.py N_EXAMPLES CLASSES RANK STEPS START LR

The task of ``benchmarks/ws_spectrum.py`` (Gaussian clusters, 16 inputs, CLASSES classes, a
2 x 64 ReLU MLP, full-batch AdamW, weight decay 0.01) on one trajectory carrying two
:class:`dyntheory.probes.StepwiseDissipation` probes (midpoint rule, ``W_S(s, T)`` from ``s =
START``, 4 probe steps a decade): ``r`` tracked directions (``g(s)`` and the leading eigenvectors
of ``Π K_s Π``) and a complete basis of softmax's loss-carrying outputs (``range Π``, ``N (p −
1)`` directions: the dense ``Π W_gg Π``). Prints, per probe step, the top-5 ratios rank-r /
complete, their largest deviation, both identity errors and both channel dimensions.
"""

import sys
import time

import jax
import numpy as np
import optax
from ws_spectrum import cluster_task  # this directory's sibling script

from dyntheory import probes as P
from dyntheory.engine import Trainer
from dyntheory.engine.config import TrainConfig
from dyntheory.optim import state as optim_state


def main(argv: list[str]) -> None:
    n, p, rank, steps, start = (int(a) for a in argv[:5])
    lr, wd = float(argv[5]), 0.01
    data, apply, init = cluster_task(n, p)
    common = dict(
        preconditioner=optim_state.adam_preconditioner(lr), momentum=0.9,
        first_moment=optim_state.first_moment, decay=lr * wd, loss="softmax_ce",
        start=start, rule="midpoint",
    )  # fmt: skip
    sched = P.Schedule.log(4, final=True)
    complete = n * (p - 1)
    probes = [
        P.StepwiseDissipation(sched, name="low", rank=rank, **common),
        P.StepwiseDissipation(sched, name="full", rank=complete, lanczos_iters=n * p, **common),
    ]
    tr = Trainer(
        TrainConfig(steps=steps, fuse=steps, log_every=steps),
        apply_fn=apply, init_params=init,
        optimizer=optax.adamw(lr, weight_decay=wd), data=data, loss="softmax_ce", probes=probes,
    )  # fmt: skip
    t0 = time.time()
    res = tr.run(progress=False)
    print(f"{n * p} outputs ({complete} loss-carrying), rank {rank}, wall {time.time() - t0:.0f} s")
    h = res.history
    rows = np.isfinite(h["probe/full/identity_rel_err"])
    el, ef = res.arrays["low/w_eigenvalues"], res.arrays["full/w_eigenvalues"]
    print("step | top-5 rank-r / complete | max |ratio − 1| | identity err r (complete) | channel")
    for i, s in enumerate(res.arrays["low/step"]):
        j = np.flatnonzero(h["step"] == s)
        if not len(j) or not rows[j[0]]:
            continue
        k = min(5, el.shape[-1])
        r = el[i][:k] / ef[i][:k]
        g = lambda k: h[f"probe/{k}"][j[0]]
        print(
            f"{int(s):5d} | {np.round(r, 3)} | {np.max(np.abs(r - 1)):.3f} | "
            f"{g('low/identity_rel_err'):.2g} ({g('full/identity_rel_err'):.2g}) | "
            f"{g('low/channel_dim'):.0f} / {g('full/channel_dim'):.0f}"
        )


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main(sys.argv[1:])
