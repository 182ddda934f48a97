"""The state of :class:`dyntheory.probes.Dissipation` and the checks of its settings."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax

from dyntheory import dissipation, losses, lowrank, momentum

METHODS = ("dense", "lowrank")
BASIS_VECTORS, COMPRESS = ("kernel", "dynamics"), ("product", "factors")


class DissipationProbeState(NamedTuple):
    """What :class:`dyntheory.probes.Dissipation` carries between probe steps (checkpointed).

    Fields that only exist with a test probe set are ``None`` when ``query=False`` (an empty
    array would not checkpoint): ``acc.G``, ``kq`` and ``uq0``. With ``method="lowrank"``,
    ``acc`` is a :class:`dyntheory.lowrank.LowRankState` and ``k``, ``kq``, ``hess`` are the
    compressed ``(R, R)``, ``(mq, R)`` and ``(R, R)`` (or scalar) operators.
    """

    acc: dissipation.DissipationState | lowrank.LowRankState  # W_S, P, D, G_Q from step 0
    k: jax.Array  # (np, np) kernel at the last refresh, held constant until the next
    kq: jax.Array | None  # (mq, np) cross kernel at the last refresh; None without query
    hess: jax.Array  # () 1/n (squared loss) or (np, np) softmax output Hessian
    lr: jax.Array  # () step size of the interval (1 with a preconditioner: it is in the kernel)
    t: jax.Array  # () int32, the last probe step
    g0: jax.Array  # (np,) output gradient g(0)
    noise0: jax.Array  # (np,) label-noise part of g(0), (y_clean − y)/n (zeros if unknown)
    phi0: jax.Array  # () probe-set loss at step 0
    u0: jax.Array  # (np,) train outputs at step 0
    uq0: jax.Array | None  # (mq,) query outputs at step 0; None without query
    # the augmented identity (momentum / weight decay, dyntheory.momentum); None when off:
    aug: momentum.MomentumState | None  # (3r, 3r) A, W in the basis' (or output) coordinates
    e0: jax.Array | None  # (np,) J (p ⊙ m): the output image of the momentum at the start
    a0: jax.Array | None  # (np,) J w: the output image of the weights at the start
    s: jax.Array  # () int32, the start s of W_S(s, T)
    mu: jax.Array  # (2,) (μ_max, μ_min) of the held η B K_eff (the next interval's kernel)
    stab_max: jax.Array  # () the largest stability over the intervals of [s, t] (0 before any)
    # check_spectrum: the dense reference (W_S, P; K, B, η held since t) next to the low-rank one
    ref: tuple | None = None
    # warm_start: the last refresh's Ritz vectors (np, b) and top vector of B^{1/2} K B^{1/2} (np,)
    ritz: tuple | None = None
    # warm_start or refresh_tol: refreshes and NTK-vector products since s, () int32 each
    refreshes: jax.Array | None = None
    products: jax.Array | None = None


def check(probe) -> None:
    """Raise a one-line ``ValueError`` naming the first bad setting of a ``Dissipation``."""
    losses.get_loss(probe.loss)
    for name in ("momentum", "decay"):
        v = float(getattr(probe, name))
        if not 0 <= v < 1:
            raise ValueError(f"Dissipation {name} must lie in [0, 1), got {v}.")
    if probe.momentum > 0 and probe.first_moment is None:
        raise ValueError(
            "Dissipation(momentum=...) needs first_moment (opt_state -> m), e.g. "
            "dyntheory.optim.state.first_moment."
        )
    for name, choices in (("basis_vectors", BASIS_VECTORS), ("compress", COMPRESS)):
        if getattr(probe, name) not in choices:
            raise ValueError(
                f"unknown Dissipation {name} {getattr(probe, name)!r}; choose one of {choices}."
            )
    if probe.method not in METHODS:
        raise ValueError(f"unknown Dissipation method {probe.method!r}; choose one of {METHODS}.")
    t = float(probe.threshold)
    if not (math.isfinite(t) and t >= 0):
        raise ValueError(f"Dissipation(threshold=...) must be finite and >= 0, got {t}.")
    if not callable(probe.lr) and not (math.isfinite(float(probe.lr)) and float(probe.lr) > 0):
        raise ValueError(f"Dissipation(lr=...) must be finite and > 0, got {probe.lr}.")
    if probe.cells and not (probe.query and probe.loss == "squared"):
        raise ValueError("Dissipation(cells=True) needs query=True and loss='squared'.")
    if probe.check_spectrum < 0 or (probe.check_spectrum and probe.method != "lowrank"):
        raise ValueError(
            "Dissipation(check_spectrum=k) compares the top k eigenvalues of a lowrank W_S "
            f"with a dense reference: needs method='lowrank' and k >= 0, got "
            f"{probe.check_spectrum} with method={probe.method!r}."
        )
    for name in ("rank", "lanczos_vectors"):
        if int(getattr(probe, name)) < 1:
            raise ValueError(f"Dissipation {name} must be >= 1, got {getattr(probe, name)}.")
    if probe.warm_start and probe.method != "lowrank":
        raise ValueError(
            "Dissipation(warm_start=True) seeds a low-rank refresh with the previous Ritz "
            f"vectors: needs method='lowrank', got {probe.method!r}."
        )
    if int(probe.warm_depth) < 1:
        raise ValueError(f"Dissipation warm_depth must be >= 1, got {probe.warm_depth}.")
    tol = float(probe.refresh_tol)
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(
            f"Dissipation(refresh_tol=...) must be finite and >= 0 (0: refresh at every probe "
            f"step), got {probe.refresh_tol}."
        )
