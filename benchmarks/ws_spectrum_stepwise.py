"""The per-step reference's W_S spectrum in r tracked directions against a complete basis.

    python benchmarks/ws_spectrum_stepwise.py N_EXAMPLES CLASSES RANK STEPS START LR

The task of ``benchmarks/ws_spectrum.py`` (Gaussian clusters, 16 inputs, CLASSES classes, a
2 x 64 ReLU MLP, full-batch AdamW, weight decay 0.01) with one
:class:`dyntheory.probes.StepwiseDissipation` (midpoint rule, ``W_S(s, T)`` from ``s = START``,
4 probe steps a decade): ``r`` tracked directions (``g(s)`` and the leading eigenvectors of
``Π K_s Π``) and, with ``check_spectrum=5``, a complete basis of softmax's loss-carrying outputs
beside them (``range Π``, ``N (p − 1)`` directions: the dense ``Π W_gg Π``). Prints, per probe
step, the top-5 ratios rank-r / complete, the probe's ``spectrum_rel_err`` (their largest
deviation), its ``spectrum_half_rel_err`` (the first half of the tracked directions against all
of them: the estimate without a reference), the identity error and both channel dimensions.
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
from dyntheory.probes import stepwise_path


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
    probe = P.StepwiseDissipation(
        sched, name="low", rank=rank, check_spectrum=5, record_path=steps - start, **common
    )
    tr = Trainer(
        TrainConfig(steps=steps, fuse=steps, log_every=steps),
        apply_fn=apply, init_params=init,
        optimizer=optax.adamw(lr, weight_decay=wd), data=data, loss="softmax_ce", probes=[probe],
    )  # fmt: skip
    t0 = time.time()
    res = tr.run(progress=False)
    print(
        f"{n * p} outputs ({n * (p - 1)} loss-carrying), rank {rank}, wall {time.time() - t0:.0f} s"
    )
    h = res.history
    el, ef = res.arrays["low/w_eigenvalues"], res.arrays["low/w_eigenvalues_ref"]
    print(
        "step | top-5 rank-r / complete | spectrum_rel_err | spectrum_half_rel_err | "
        "identity err | channel r / complete"
    )
    for i, s in enumerate(res.arrays["low/step"]):
        j = np.flatnonzero(h["step"] == s)
        if not len(j) or h["probe/low/before_start"][j[0]] or s == start:
            continue
        g = lambda key: h[f"probe/low/{key}"][j[0]]
        print(
            f"{int(s):5d} | {np.round(el[i][:5] / ef[i][:5], 3)} | {g('spectrum_rel_err'):.3f} | "
            f"{g('spectrum_half_rel_err'):.3f} | "
            f"{g('identity_rel_err'):.2g} | {g('channel_dim'):.0f} / {g('channel_dim_ref'):.0f}"
        )
    # the whole W_gg at T = STEPS by the adjoint over the recorded path, at no tracked rank
    t0 = time.time()
    buf = res.probe_states["low"].path
    x = jax.numpy.asarray(data["x"])
    lam, _ = stepwise_path.exact_topk(probe, apply, x, init(0), buf, 5, num_iters=60)
    top = np.asarray(lam) / ef[-1][:5]
    print(
        f"adjoint at step {steps}: top-5 / complete {np.round(top, 4)}, largest deviation "
        f"{np.max(np.abs(top - 1)):.2e} ({time.time() - t0:.0f} s, 60 products)"
    )


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    main(sys.argv[1:])
