r"""What :class:`dyntheory.probes.Dissipation` reports at a probe step: W_S's spectrum and split,
the loss identity and its checks, the channel/reservoir energies, the coupling and the cells.

The accumulator has already advanced to the probe step ``t``; nothing here changes the state.
Every key is documented on :class:`~dyntheory.probes.Dissipation` (THEORY.md §3, §4, §10).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dyntheory import dissipation, lowrank, momentum, spectrum, split
from dyntheory.probes import dissipation_kernels as kernels
from dyntheory.probes.base import f64

# the checks that a row before `start` does not show (NaN there, flagged by `before_start`)
VALIDITY = (
    "identity_rel_err", "identity_rel_err_augmented", "bk_lambda_max", "stability",
    "stability_max", "spectrum_rel_err",
)  # fmt: skip


def rel_err(predicted: jax.Array, drop: jax.Array, empty: jax.Array) -> jax.Array:
    """``|predicted − drop| / |drop|``, defined as 0 on an empty interval (both sides are 0)."""
    return jnp.where(empty, 0.0, jnp.abs(predicted - drop) / jnp.abs(jnp.where(empty, 1.0, drop)))


def report(probe, ctx, state, new, acc, u, uq, g, phi, step, stab) -> tuple[dict, dict]:
    """``(scalars, arrays)`` of the row at probe step ``step``.

    ``state``: the probe state before the step (its ``g0``, ``phi0``, ``s``, ``mu``); ``new``:
    after it (the advanced accumulator ``new.aug``, ``new.stab_max``, ``new.ref``); ``acc``: the
    advanced accumulator with its ``G`` (a :class:`dyntheory.dissipation.DissipationState` or a
    :class:`dyntheory.lowrank.LowRankState`); ``u`` ``(n, p)``, ``uq`` ``(mq,)`` (None without
    ``query``), ``g`` ``(np,)``, ``phi`` ``()``: the train and query outputs, output gradient and
    probe-set loss at ``step``; ``stab``: the stability of the kernel held over the row's last
    interval.
    """
    low = probe.method == "lowrank"
    ops = acc.acc if low else acc  # the operators in the basis' (or output) coordinates
    to = (lambda v: lowrank.coords(acc, v)) if low else (lambda v: v.astype(ops.W.dtype))
    n = ctx.train["x"].shape[0]
    modulo = lambda w: kernels.zero_loss_free(probe, u, kernels.zero_loss_free(probe, u, w).T)
    # the dense W_S is split modulo softmax's zero-loss directions, Π W Π (THEORY.md §10); a
    # low-rank basis already lies in range(Π)
    sp = split.split(ops.W if low else modulo(ops.W), probe.threshold, probe.mode, n_examples=n)
    lam = sp.eigvals
    c0 = to(state.g0)
    drop, predicted = state.phi0 - phi, c0 @ ops.W @ c0
    empty = step <= state.s  # W_S(s, s) = 0 and no loss has moved: the identity holds, 0 error
    s = {
        "w_lambda_max": lam[0],
        "w_trace": jnp.sum(lam),
        "w_effective_rank": spectrum.participation_ratio(lam),
        "channel_dim": jnp.sum(sp.channel),
        "time": ops.time,
        "loss_drop": drop,
        "predicted_loss_drop": predicted,
        "identity_rel_err": rel_err(predicted, drop, empty),
        "start_step": state.s.astype(f64()),
        "bk_lambda_max": state.mu[0],
        "stability": stab,
        "stability_max": new.stab_max,
    }
    if probe.augmented:
        pred = momentum.predicted_loss_drop(new.aug, c0, to(state.e0), to(state.a0))
        s["predicted_loss_drop_augmented"] = pred
        s["identity_rel_err_augmented"] = rel_err(pred, drop, empty)
    noise_known = "y_clean" in ctx.train and probe.loss == "squared"
    for label, v in (("g0", state.g0), ("g", g), ("noise", state.noise0)):
        if label == "noise" and not noise_known:
            continue
        ch, res = split.energies(sp, to(v))
        outside = jnp.sum(jnp.square(v.astype(lam.dtype))) - jnp.sum(jnp.square(to(v)))
        s[f"{label}_channel"], s[f"{label}_reservoir"] = ch, res + jnp.maximum(outside, 0)
    ref = new.ref
    if ref is not None:  # the low-rank spectrum against the dense reference, top k
        dense_sp = split.split(modulo(ref[0].W), probe.threshold, probe.mode, n_examples=n)
        s["spectrum_rel_err"] = split.top_rel_err(lam, dense_sp.eigvals, probe.check_spectrum)
        s["channel_dim_dense"] = jnp.sum(dense_sp.channel)
        s["w_lambda_max_dense"] = dense_sp.eigvals[0]
    if low:
        s["basis_size"] = acc.size
        s["g0_tracked"] = jnp.sum(c0**2) / jnp.sum(jnp.square(state.g0.astype(c0.dtype)))
    arrays = {"w_eigenvalues": lam}
    if probe.query:
        du = to(u.reshape(-1) - state.u0)
        pred = dissipation.coupling(ops) @ du.astype(ops.G.dtype)
        actual = (uq - state.uq0).astype(pred.dtype)
        s["coupling_corr"] = jnp.corrcoef(pred, actual)[0, 1]
        s["coupling_rel_err"] = jnp.linalg.norm(pred - actual) / jnp.linalg.norm(actual)
        s["invisibility"] = split.invisibility_residual(sp, ops.G)
        arrays["predicted_displacement"], arrays["actual_displacement"] = pred, actual
    if probe.cells:
        s.update(kernels.cells(sp, ops, state.g0, state.noise0, to if low else None))
    return s, arrays
