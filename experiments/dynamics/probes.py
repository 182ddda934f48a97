r"""The two probes the theory figures need that :mod:`dyntheory.probes` does not record.

* :class:`CouplingDissipation`: :class:`dyntheory.probes.Dissipation` plus the four-cell
  decomposition (:func:`dyntheory.split.four_cell`: clean signal / label noise × channel /
  reservoir, THEORY §3) as scalars, and as arrays the two test displacements the coupling theorem
  relates (THEORY §4, paper Thm 5.1): predicted ``A (U_S(t) − U_S(0))`` with ``A = G_Q D†`` and
  actual ``U_Q(t) − U_Q(0)``, plus the absolute channel cutoff on ``W_S``'s eigenvalues.
* :class:`DriftDiffusion`: every step, the minibatch gradient ``ĝ_t = μ_t + ξ_t`` of fresh
  teacher samples split into its coherent part and its fluctuation, both accumulated on ``r`` fixed
  directions by :mod:`dyntheory.drift` (THEORY §5, paper Thm 4.1). The population gradient ``μ_t``
  is not known, so (:mod:`dyntheory.drift`, "unknown") the drift accumulates the batch mean and the
  noise the half-batch difference, which has exactly the law of ``ξ_t``. The directions are the top
  and the bottom ``r`` eigenvectors ``v_i`` of the NTK at initialization on the probe set mapped to
  parameter space, ``J_Sᵀ v_i/√λ_i`` (orthonormal); under a frozen kernel they are the top
  (channel) and bottom (reservoir) eigenvectors of ``W_S`` too.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from dyntheory import dissipation, drift, poprisk, split
from dyntheory.probes import Dissipation, Probe, Schedule

PARTS, SUBS = ("clean", "noise"), ("channel", "reservoir")


def _f64():
    return jax.dtypes.canonicalize_dtype(jnp.float64)


@dataclasses.dataclass(frozen=True, eq=False)
class CouplingDissipation(Dissipation):
    """Dissipation probe + four-cell scalars + the predicted and actual test displacements.

    Scalars (``probe/dissipation/...``): ``cutoff`` (absolute eigenvalue threshold of the split),
    ``{train,dissipated,test}_{clean,noise}_{channel,reservoir}`` (:class:`split.FourCell`'s
    ``train_energy``, ``dissipated`` and ``test_energy``). Arrays: ``w_eigenvalues`` (np,),
    ``predicted_displacement`` and ``actual_displacement`` (mq,).
    """

    def __call__(self, ctx, state, params, opt_state, step):
        new, scalars, arrays = super().__call__(ctx, state, params, opt_state, step)
        n = ctx.train["x"].shape[0]
        sp = split.split(new.acc.W, self.threshold, self.mode, n_examples=n)
        dtype = sp.eigvecs.dtype
        g_noise = state.noise0.astype(dtype)
        g_clean = state.g0.astype(dtype) - g_noise
        cells = split.four_cell(sp, new.acc.W, g_clean, g_noise, new.acc.G.astype(dtype))
        scalars["cutoff"] = sp.threshold
        for i, part in enumerate(PARTS):
            for j, sub in enumerate(SUBS):
                scalars[f"train_{part}_{sub}"] = cells.train_energy[i, j]
                scalars[f"dissipated_{part}_{sub}"] = cells.dissipated[i, j]
                scalars[f"test_{part}_{sub}"] = cells.test_energy[i, j]
        u = self._outputs(ctx, params).reshape(-1)
        uq = self._outputs(ctx, params, "test").reshape(-1)
        a = dissipation.coupling(new.acc)
        arrays["predicted_displacement"] = a @ (u - state.u0).astype(a.dtype)
        arrays["actual_displacement"] = (uq - state.uq0).astype(a.dtype)
        return new, scalars, arrays


def _flat_jacobian(apply_fn, params, x) -> jax.Array:
    """``J_S`` as an ``(n p, P)`` matrix, columns in ``jax.tree.leaves`` order (drift's order)."""
    jac = jax.jacrev(lambda p: apply_fn(p, x).reshape(-1))(params)
    leaves = jax.tree.leaves(jac)
    rows = leaves[0].shape[0]
    return jnp.concatenate([leaf.reshape(rows, -1) for leaf in leaves], axis=1)


@dataclasses.dataclass(frozen=True, eq=False)
class DriftDiffusion(Probe):
    r"""Accumulated drift ``Σ η V μ_t`` and noise ``Σ η V ξ_t`` on the top / bottom NTK directions.

    Must run every step (``Schedule.every(1)``): each call accumulates the increment of the step's
    own minibatch. Scalars: ``count`` (steps accumulated, = step + 1), ``drift_{top,bottom}`` and
    ``noise_{top,bottom}`` (the norms ``‖Σ η V μ‖``, ``‖Σ η V ξ‖``). State: the two ``(r, P)``
    bases, their NTK eigenvalues and the two :class:`dyntheory.drift.DriftState` accumulators.

    Args:
      lr: the SGD step size η (constant).
      directions: ``r``, the number of directions in each set.
    """

    schedule: Schedule = Schedule.every(1)
    name: str = "drift"
    lr: float = 0.05
    directions: int = 4

    def init(self, ctx, params, opt_state):
        jmat = _flat_jacobian(ctx.apply_fn, params, ctx.train["x"]).astype(_f64())
        lam, vecs = jnp.linalg.eigh(jmat @ jmat.T)  # ascending
        r = self.directions
        if r > lam.shape[0]:
            raise ValueError(f"DriftDiffusion: {r} directions but the NTK is {lam.shape[0]}-dim.")
        tiny = jnp.finfo(lam.dtype).tiny

        def basis(idx):
            lam_i = jnp.maximum(lam[idx], tiny)
            return (vecs[:, idx].T @ jmat) / jnp.sqrt(lam_i)[:, None], lam_i

        top, lam_top = basis(jnp.arange(lam.shape[0] - 1, lam.shape[0] - 1 - r, -1))
        bottom, lam_bottom = basis(jnp.arange(r))
        zero = drift.init(r, _f64())
        return {
            "top": top,
            "bottom": bottom,
            "lam_top": lam_top,
            "lam_bottom": lam_bottom,
            "acc_top": zero,
            "acc_bottom": zero,
        }

    def __call__(self, ctx, state, params, opt_state, step):
        loss = lambda p, b: ctx.loss_fn(ctx.apply_fn, p, b, ctx.key)[0]
        per_example = poprisk.per_example_grads(loss, params, ctx.batch())
        new = dict(state)
        scalars = {}
        for which in ("top", "bottom"):
            acc = drift.update(state[f"acc_{which}"], per_example, state[which], lr=self.lr)
            new[f"acc_{which}"] = acc
            scalars[f"drift_{which}"], scalars[f"noise_{which}"] = drift.norms(acc)
        scalars["count"] = new["acc_top"].count
        return new, scalars, {}
