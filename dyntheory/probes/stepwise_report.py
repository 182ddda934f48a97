r"""What :class:`dyntheory.probes.StepwiseDissipation` reports of its tracked block: the spectrum
and channel/reservoir split of ``Qᵀ W_gg Q``, and the check of that spectrum against a complete
basis (THEORY.md §10, "What the per-step reference splits").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dyntheory import losses, spectrum, split
from dyntheory.probes.base import f64


def complete_basis(loss: str, n_rows: int, n_out: int) -> jax.Array:
    """Every loss-carrying output direction, orthonormal: ``(N, N)`` for squared loss, and
    ``range Π`` (``(N, n (p − 1))``, :func:`dyntheory.losses.logit_shift_free_basis`) for softmax:
    the reference block of ``check_spectrum``, whose ``W_gg`` is the dense one."""
    if loss == "softmax_ce":
        return losses.logit_shift_free_basis(n_rows, n_out // n_rows, f64())
    return jnp.eye(n_out, dtype=f64())


TOP = 5  # eigenvalues compared by spectrum_half_rel_err


def block_report(probe, w, g0, n_rows: int, rel, ref_w=None):
    r"""Scalars and arrays of the tracked block (``w`` ``(r, r)`` = ``Qᵀ W_gg Q``, ``g0`` =
    ``Qᵀ g(s)``; ``rel``: a predicted drop → its identity error).

    ``spectrum_half_rel_err``: the top 5 Ritz values of the first ``r // 2`` tracked directions
    (``g(s)`` and the leading kernel eigenvectors come first, so the half span is nested in the
    whole) against all ``r`` (:func:`dyntheory.split.top_rel_err`). It is the spectrum's own
    convergence, available where no dense reference is: for Ritz values whose error falls as
    ``1/r`` it equals the error at ``r`` (an estimate, not a bound; THEORY.md §10).

    With ``ref_w`` (the same form on a complete basis, ``check_spectrum = k``) also
    ``spectrum_rel_err`` (:func:`dyntheory.split.top_rel_err` of the top ``k``), the reference's
    ``w_lambda_max_ref``, ``channel_dim_ref`` and ``cutoff_ref``, and the array
    ``w_eigenvalues_ref``.
    """
    sp = split.split(w, probe.threshold, probe.mode, n_examples=n_rows)
    lam = sp.eigvals
    s = {"w_lambda_max": lam[0], "w_trace": jnp.sum(lam)}
    s["w_effective_rank"] = spectrum.participation_ratio(jnp.maximum(lam, 0))
    s["channel_dim"] = jnp.sum(sp.channel).astype(f64())
    s["cutoff"] = sp.threshold
    s["g0_channel"], s["g0_reservoir"] = split.energies(sp, g0)
    coef2 = jnp.square(sp.eigvecs.T @ g0)
    ch = sp.channel.astype(coef2.dtype)
    s["dissipated_channel"] = jnp.sum(ch * lam * coef2)
    s["dissipated_reservoir"] = jnp.sum((1 - ch) * lam * coef2)
    # the split's own object, g(s)ᵀ W_gg g(s), against the drop (the identity checks the whole
    # form z(s)ᵀ W z(s); the momentum and weight terms are the difference)
    s["g_block_rel_err"] = rel(s["dissipated_channel"] + s["dissipated_reservoir"])
    arrays = {"w_eigenvalues": lam}
    half = w.shape[0] // 2
    if half >= 1:  # the nested half-basis against the whole: the spectrum's own convergence
        lam_half = jnp.linalg.eigvalsh(0.5 * (w[:half, :half] + w[:half, :half].T))[::-1]
        s["spectrum_half_rel_err"] = split.top_rel_err(lam_half, lam, min(TOP, half))
    if ref_w is not None:
        ref = split.split(ref_w, probe.threshold, probe.mode, n_examples=n_rows)
        s["spectrum_rel_err"] = split.top_rel_err(lam, ref.eigvals, probe.check_spectrum)
        s["w_lambda_max_ref"] = ref.eigvals[0]
        s["channel_dim_ref"] = jnp.sum(ref.channel).astype(f64())
        s["cutoff_ref"] = ref.threshold
        arrays["w_eigenvalues_ref"] = ref.eigvals
    return s, arrays
