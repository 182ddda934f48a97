r"""W_S's propagator advanced at every training step, inside the fused scan: the reference.

THEORY.md §10 ("The refresh schedule is an integrator"). Along the realized path, step ``t``
(``w_t → w_{t+1}``) moves the outputs through its own linearized map: the kernel
``K_t = J(w_t) diag(p_{t+1}) J(w_t)ᵀ`` with the preconditioner of the step as taken (``p_{t+1}``
read from the optimizer state *after* the update; ``p = η`` for plain GD), the output Hessian
``B_t`` at ``w_t``, Adam's bias correction ``c_t = 1 − β^{t+1}`` and the decoupled decay ``λ``.

The step is ``Δw_t = −p_{t+1} ⊙ m_{t+1}/c_t − λ w_t`` with ``m_{t+1} = β m_t + (1 − β) ∇L_t``
and ``∇L_t`` the gradient of step ``t``'s minibatch loss: ``∇L_t = J_tᵀ (ρ_t ⊙ g)`` with ``g``
the gradient of the whole training set's mean loss and ``ρ_t`` the rows' weights in the batch
(``c_i n/b``, ``c_i`` the draws of row ``i``; all ones for a full batch). Linearized at ``w_t``
(``Δu = J_t Δw``), it maps ``z = (g, μ, ω)`` (the output gradient and a parameter-space momentum
and weight vector; ``N + 2P`` numbers) linearly:

.. math::

    μ' = β μ + (1-β) J_tᵀ (ρ_t ⊙ z_g),\quad d = p_{t+1} ⊙ μ'/c_t + λ ω\ (= −Δω),\quad
    r = J_t d\ (= −Δu),\quad z' = (z_g − B_t r,\; μ',\; ω − d),\quad
    z_tᵀ S_t z_t = z_gᵀ r − ½\, rᵀ B_t r ,

and ``Φ(s) − Φ(T) ≈ Σ_{s ≤ t < T} z_tᵀ S_t z_t = z(s)ᵀ W(s, T) z(s)`` with ``z(s) = (g(s), m_s,
w_s)``: along the realized path ``z_t = (g_t, m_t, w_t)`` up to the linearization, so
every step applies its own ``J_t`` and ``p_{t+1}`` to the momentum as the optimizer does (the
output-space images of :mod:`dyntheory.momentum` freeze the momentum in an old kernel and
preconditioner; for a constant ``J`` and ``p`` the two agree, with ``e = J (p ⊙ μ)`` and
``a = J ω``). Per step: one vjp and one jvp over the probe set for ``z`` and one each per
tracked direction, vmapped, over one ``jax.linearize``; nothing ``N × N`` is formed. Its error is
each step's linearization, ``O(‖Δw‖²)`` per step, so ``O(η)`` over a fixed horizon ``ηT`` (first
order); ``rule="midpoint"`` takes ``J`` of the motion and ``B`` at ``w_t + Δw_t/2`` (the secant
``g_{t+1} − g_t = B̄ J̄ Δw`` to ``O(‖Δw‖³)``): second order (``tests/test_stepwise.py`` fits both
slopes).

``g``, ``Φ`` and ``B`` come from the logits cast to float64: after memorization softmax saturates
(``1 − π_y`` of order the training loss, 1e-6 and below), and in float32 both ``π_y − 1`` and
``π ⊙ v − π (πᵀ v)`` cancel to the spacing of floats near 1 (6e-8), which leaves ``B`` with
errors as large as itself and the propagated residual with nothing to contract it.

Tracked directions (``rank`` ``r``): an orthonormal ``Q`` (``N × r``) at the start (``g(s)`` and
the leading eigenvectors of ``K_s``) is propagated as ``Z = (Q, 0, 0)``; ``Qᵀ W_gg Q = Σ Z_tᵀ
S_t Z_t`` is the g-block of the augmented Gramian compressed to ``span Q`` (its spectrum is what
``w_eigenvalues`` reports: the Rayleigh–Ritz values of the same object whose identity is checked).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from dyntheory import krylov, losses, ntk
from dyntheory.probes import dissipation_kernels as kernels
from dyntheory.probes import stepwise_path, stepwise_report
from dyntheory.probes.base import InScanProbe, Schedule, f64

PATH_BYTES_MAX = 4 * 2**30  # record_path's buffers, per member


class StepwiseState(NamedTuple):
    """The per-step accumulator (``N`` train outputs of the probe set, ``r`` tracked directions)."""

    z: jax.Array  # (N + 2P,) z(s) = (g, μ, ω) propagated to the current step
    # with check_spectrum the columns are [Q, Q_ref] (r + c: Q_ref a complete basis, c of them)
    tracked: jax.Array | None  # (N + 2P, r [+ c]) (Q, 0, 0) propagated; None when rank = 0
    w: jax.Array | None  # (r [+ c], r [+ c]) Σ Z_tᵀ S_t Z_t = Qᵀ W_gg Q; None when rank = 0
    g0: jax.Array | None  # (r [+ c],) Qᵀ g(s): g(s) in the tracked basis; None when rank = 0
    pred: jax.Array  # () Σ z_tᵀ S_t z_t (with the second-order term)
    pred1: jax.Array  # () its first-order part Σ z_gᵀ r
    phi_s: jax.Array  # () probe-set loss at the start s (NaN before it)
    s: jax.Array  # () int32 start step, −1 before it
    gain: jax.Array  # () the largest one-step growth ‖z_g(t+1)‖/‖z_g(t)‖ since s
    path: stepwise_path.PathBuffers | None = None  # record_path: the first L steps from s


@dataclasses.dataclass(frozen=True, eq=False)
class StepwiseDissipation(InScanProbe):
    r"""The loss identity of ``W_S(s, T)`` with the propagator advanced every step (module doc).

    Scalars (``probe/<name>/...``) at each probe step ``T``: ``loss_drop`` ``Φ(s) − Φ(T)``,
    ``predicted_loss_drop`` ``z(s)ᵀ W z(s)``, ``identity_rel_err`` and ``valid``
    (``identity_rel_err ≤ tolerance``, finite); the first-order parts ``*_first_order``;
    ``norm_ratio`` ``‖z_g(T)‖/‖g(T)‖`` (the propagated against the realized residual: ≫ 1 when
    the linearized steps expand where the real ones do not) and ``max_gain``; ``start`` ``s``
    and ``before_start`` (1 on rows before ``s``, whose identity is NaN). With ``rank``, the
    spectrum and split (:func:`dyntheory.split.split`, ``threshold`` and ``mode``) of the output
    block ``Qᵀ W_gg Q``: ``w_lambda_max``, ``w_trace``, ``w_effective_rank``, ``channel_dim``,
    ``cutoff``; ``g0_channel`` / ``g0_reservoir`` (``‖Π g(s)‖²`` of each part),
    ``dissipated_channel`` / ``dissipated_reservoir`` (``g(s)ᵀ W_gg g(s)`` by part) and
    ``g_block_rel_err`` (that form against the loss drop: the output block's own identity, which
    differs from the whole form's by the momentum and weight terms); array ``w_eigenvalues``.
    ``check_spectrum = k`` also propagates a complete basis of the loss-carrying outputs (all
    ``N``, or softmax's ``range Π``: ``n (p − 1)`` more columns, so as many more NTK-vector
    products a step: a check for problems where dense is affordable) and reports
    ``spectrum_rel_err``, the top ``k`` of ``w_eigenvalues`` against that dense ``Π W_gg Π``
    (:func:`dyntheory.probes.stepwise_report.block_report`).

    Args:
      lr: GD step size η (float or ``step -> η``), used without a preconditioner.
      preconditioner: ``opt_state -> p`` (:mod:`dyntheory.optim.state`), read after the update.
      momentum, first_moment, bias_correction, decay: the step's EMA momentum ``β`` (with
        ``first_moment: opt_state -> m``), Adam's bias correction and ``λ = η·wd`` (THEORY §10).
      loss: ``"squared"`` or ``"softmax_ce"``.
      start: ``s`` of ``W_S(s, T)``: the accumulator starts at training step ``start``.
      rank: tracked directions ``r`` (0: the identity only, one NTK-vector product per step).
      lanczos_iters, chunk_size: Lanczos depth and examples per product (``ntk_matvec``) of the
        tracked directions' start; the per-step products run over the whole probe set at once.
      threshold: relative cutoff of ``channel_dim``; tolerance: of ``valid``.
      check_spectrum: top ``k`` eigenvalues checked against a complete basis (0: off; needs
        ``rank >= 1``).
      record_path: keep the first ``L`` steps' path from ``s`` in the state (``2L + 1`` vectors
        of ``P``), for the exact top eigenpairs of the whole ``W_gg`` by the adjoint
        (:func:`dyntheory.probes.stepwise_path.exact_topk`; 0: off).
      rule: ``"left"`` (``J``, ``B`` at ``w_t``: first order, module docstring) or
        ``"midpoint"`` (the gradient's ``J`` at ``w_t``, the motion's ``J̄`` and ``B̄`` at
        ``w_t + Δw_t/2``, read from the params after the step: the secant ``g_{t+1} − g_t =
        B̄ J̄ Δw`` to ``O(‖Δw‖³)`` per step, second order; one more linearization per step).
      gradient: ``"batch"`` (the step as taken: the momentum gathers ``J_tᵀ (ρ_t ⊙ z_g)`` with
        ``ρ_t`` the rows' weights in step ``t``'s minibatch loss, ``ctx.batch_weights``; all ones
        for a full batch; needs the probe set to be the training set itself) or ``"full"`` (the
        whole set's gradient at every step: the propagator of full-batch steps with the run's
        preconditioner).
    """

    schedule: Schedule = Schedule.log(2)
    name: str = "stepwise"
    lr: float | Callable = 1e-3
    preconditioner: Callable | None = None
    momentum: float = 0.0
    first_moment: Callable | None = None
    bias_correction: bool = True
    decay: float = 0.0
    loss: str = "squared"
    start: int = 0
    rank: int = 0
    lanczos_iters: int | None = None
    chunk_size: int | None = None
    threshold: float = 1e-3
    mode: str = "relative"
    tolerance: float = 0.1
    rule: str = "left"
    gradient: str = "batch"
    check_spectrum: int = 0
    record_path: int = 0

    def __post_init__(self):
        losses.get_loss(self.loss)
        for name in ("momentum", "decay"):
            if not 0 <= float(getattr(self, name)) < 1:
                raise ValueError(f"StepwiseDissipation {name} must lie in [0, 1).")
        if self.momentum > 0 and self.first_moment is None:
            raise ValueError(
                "StepwiseDissipation(momentum=...) needs first_moment (opt_state -> m)."
            )
        if self.rule not in ("left", "midpoint"):
            raise ValueError(
                f"StepwiseDissipation rule must be 'left' or 'midpoint', got {self.rule!r}."
            )
        if self.gradient not in ("batch", "full"):
            raise ValueError(
                f"StepwiseDissipation gradient must be 'batch' or 'full', got {self.gradient!r}."
            )
        if int(self.rank) < 0 or int(self.start) < 0 or int(self.record_path) < 0:
            raise ValueError("StepwiseDissipation rank, start and record_path must be >= 0.")
        if int(self.check_spectrum) < 0 or (self.check_spectrum and not self.rank):
            raise ValueError(
                "StepwiseDissipation(check_spectrum=k) compares the top k eigenvalues of the "
                f"tracked block with a complete basis: needs rank >= 1 and k >= 0, got "
                f"k = {self.check_spectrum} with rank = {self.rank}."
            )

    # -- pieces

    def _outputs(self, ctx, params):
        u = ctx.apply_fn(params, ctx.train["x"])
        return u.reshape(u.shape[0], -1) if self.loss == "squared" else u

    def _g_phi(self, ctx, u):
        spec = losses.get_loss(self.loss)
        y = ctx.train["y"].reshape(u.shape) if self.loss == "squared" else ctx.train["y"]
        u = u.astype(f64())  # saturated softmax: π_y − 1 and B cancel in float32 (below)
        return spec.out_grad(u, y), spec.value(u, y)

    def _kernel(self, ctx, params, opt_after, t, moved=None):
        """``(u, v -> K v)``: the outputs and the kernel ``J' diag(p) Jᵀ`` (``η`` and the
        preconditioner inside) in float64, ``J`` at ``params`` and ``J'`` and ``u`` at ``moved``
        (default ``params``); for the tracked directions' Lanczos."""
        p = kernels.precond(self, opt_after)
        eta = kernels.step_size(self, t, p)
        x = ctx.train["x"]
        if self.chunk_size is not None and moved is None:
            mv = ntk.ntk_matvec(ctx.apply_fn, params, x, precond=p, chunk_size=self.chunk_size)
            return self._outputs(ctx, params), lambda v: eta * mv(v.astype(f64())).astype(f64())
        out, jvp = jax.linearize(lambda w: ctx.apply_fn(w, x), params)
        vjp = jax.linear_transpose(jvp, params)
        if moved is not None:
            out, jvp = jax.linearize(lambda w: ctx.apply_fn(w, x), moved)
        scale = (lambda ct: ct) if p is None else (lambda ct: jax.tree.map(jnp.multiply, ct, p))

        def mv(v):
            (ct,) = vjp(v.reshape(out.shape).astype(out.dtype))
            return eta * jvp(scale(ct)).reshape(-1).astype(f64())

        u = out.reshape(out.shape[0], -1) if self.loss == "squared" else out
        return u, mv

    def _reference_basis(self, ctx, params):
        """The complete basis of ``check_spectrum`` (:func:`stepwise_report.complete_basis`)."""
        shape = jax.eval_shape(lambda: self._outputs(ctx, params)).shape
        return stepwise_report.complete_basis(self.loss, shape[0], shape[0] * shape[1])

    # -- the probe protocol

    def init(self, ctx, params, opt_state):
        n = jax.eval_shape(lambda: self._outputs(ctx, params)).size
        size = n + 2 * ravel_pytree(params)[0].size
        zeros = lambda *s: jnp.zeros(s, f64())
        r = int(self.rank)
        if r > n:
            raise ValueError(f"StepwiseDissipation rank {r} exceeds the {n} train outputs.")
        if self.check_spectrum:
            r += self._reference_basis(ctx, params).shape[1]
        nan = jnp.full((), jnp.nan, f64())
        path = None
        if self.record_path:
            flat = ravel_pytree(params)[0]
            rows = ctx.train["x"].shape[0]
            need = (2 * self.record_path + 1) * flat.size * flat.dtype.itemsize
            if need > PATH_BYTES_MAX:
                raise ValueError(
                    f"StepwiseDissipation(record_path={self.record_path}) keeps "
                    f"{2 * self.record_path + 1} vectors of the {flat.size} parameters: "
                    f"{need / 2**20:.1f} MiB, above the {PATH_BYTES_MAX / 2**20:.0f} MiB limit; "
                    "record fewer steps (a later start) or a smaller model."
                )
            path = stepwise_path.init_buffers(self.record_path, flat.size, rows, flat.dtype)
        return StepwiseState(
            zeros(size), zeros(size, r) if r else None, zeros(r, r) if r else None,
            zeros(r) if r else None, zeros(), zeros(), nan, jnp.full((), -1, jnp.int32), zeros(),
            path,
        )  # fmt: skip

    def _restart(self, ctx, state: StepwiseState, before, after, t) -> StepwiseState:
        """``z(s) = (g(s), m_s, w_s)`` and ``Q`` at ``s = t``."""
        params, opt_state = before
        u = self._outputs(ctx, params)
        g, phi = self._g_phi(ctx, u)
        g = g.reshape(-1)
        flat = lambda tree: ravel_pytree(tree)[0].astype(f64())
        w = flat(params)
        m = flat(self.first_moment(opt_state)) if self.momentum > 0 else jnp.zeros_like(w)
        tracked = None
        if self.rank:
            q = g[:, None] / jnp.linalg.norm(g)
            if self.rank > 1:
                n, k = g.shape[0], self.rank - 1
                iters = min(n, self.lanczos_iters or 2 * k + 20)
                key = jax.random.fold_in(jax.random.key(0), t)
                k_mv = self._kernel(ctx, params, after[1], t)[1]
                if self.loss == "softmax_ce":  # Π K Π: no logit-shift directions (THEORY §10)
                    shift_free = lambda v: losses.logit_shift_free(v, u.shape[1])
                    k_mv = lambda v, mv=k_mv: shift_free(mv(shift_free(v)))
                _, vecs = krylov.lanczos_topk(k_mv, n, k, key=key, num_iters=iters)
                q, _ = jnp.linalg.qr(jnp.concatenate([q, vecs.astype(f64())], axis=1))
            if self.check_spectrum:
                q = jnp.concatenate([q, self._reference_basis(ctx, params)], axis=1)
            tracked = jnp.concatenate([q, jnp.zeros((2 * w.shape[0], q.shape[1]), f64())])
        zero = jnp.zeros((), f64())
        gram = None if state.w is None else jnp.zeros_like(state.w)
        g0 = None if tracked is None else tracked[: g.shape[0]].T @ g
        z, start = jnp.concatenate([g, m, w]), jnp.asarray(t, jnp.int32)
        return StepwiseState(z, tracked, gram, g0, zero, zero, phi, start, zero, state.path)

    def _row_weights(self, ctx, n_rows: int):
        """``(n_rows,)`` weights of the probe set's rows in this step's batch loss, or ``None``
        (``gradient="full"``: the whole set's gradient)."""
        if self.gradient == "full":
            return None
        weights = None if ctx.batch_weights is None else ctx.batch_weights()
        if weights is None:
            raise ValueError(
                "StepwiseDissipation(gradient='batch') weights the probe set's rows as the "
                "step's minibatch does, so the probe set must be the training dataset itself "
                "(row for row, not a sampler, a subset or other probe_data); pass "
                "gradient='full' for the propagator of full-batch steps."
            )
        if weights.shape[0] != n_rows:
            raise ValueError(
                f"StepwiseDissipation: {weights.shape[0]} batch weights for {n_rows} probe rows."
            )
        return weights.astype(f64())

    def _advance(self, ctx, state: StepwiseState, before, after, t) -> StepwiseState:
        params, x = before[0], ctx.train["x"]
        p = kernels.precond(self, after[1])
        p = kernels.step_size(self, t, p) * (1.0 if p is None else ravel_pytree(p)[0].astype(f64()))
        beta = jnp.asarray(self.momentum, f64())
        c = 1 - beta ** (t + 1).astype(f64()) if self.bias_correction and self.momentum else 1.0
        rows = self._row_weights(ctx, x.shape[0])
        one, n = stepwise_path.linear_step(self, ctx.apply_fn, x, params, after[0], p, rows, c)
        path = state.path
        if path is not None:
            flat = lambda tree: ravel_pytree(tree)[0]
            i = t - state.s
            path = stepwise_path.record(path, i, flat(params), flat(after[0]), p, rows, c)
        cols = state.z[:, None] if state.tracked is None else jnp.concatenate(
            [state.z[:, None], state.tracked], axis=1
        )  # fmt: skip
        new, r, br = jax.vmap(one, in_axes=1, out_axes=1)(cols)
        zg = cols[:n]
        first = zg.T @ r  # (1+r, 1+r): z_gᵀ r and the tracked block
        second = first - 0.5 * r.T @ br
        gain = jnp.linalg.norm(new[:n, 0]) / jnp.linalg.norm(zg[:, 0])
        w = state.w
        if w is not None:
            w = w + 0.5 * (second[1:, 1:] + second[1:, 1:].T)
        return state._replace(
            z=new[:, 0], tracked=None if w is None else new[:, 1:], w=w,
            pred=state.pred + second[0, 0], pred1=state.pred1 + first[0, 0],
            gain=jnp.maximum(state.gain, gain), path=path,
        )  # fmt: skip

    def step(self, ctx, state: StepwiseState, before, after, t):
        t = jnp.asarray(t, jnp.int32)

        def run(st):
            st = lax.cond(
                t == self.start, lambda: self._restart(ctx, st, before, after, t), lambda: st
            )
            return self._advance(ctx, st, before, after, t)

        return lax.cond(t < self.start, lambda: state, lambda: run(state))

    def __call__(self, ctx, state: StepwiseState, params, opt_state, step):
        u = self._outputs(ctx, params)
        g, phi = self._g_phi(ctx, u)
        g, n = g.reshape(-1), g.size
        drop = state.phi_s - phi
        rel = lambda pred: jnp.abs(pred - drop) / jnp.abs(drop)
        err = rel(state.pred)
        s = {
            "start": state.s,
            "before_start": (state.s < 0).astype(f64()),
            "loss_drop": drop,
            "predicted_loss_drop": state.pred,
            "identity_rel_err": err,
            "predicted_loss_drop_first_order": state.pred1,
            "identity_rel_err_first_order": rel(state.pred1),
            "valid": (jnp.isfinite(err) & (err <= self.tolerance)).astype(f64()),
            "norm_ratio": jnp.linalg.norm(state.z[:n]) / jnp.linalg.norm(g),
            "max_gain": state.gain,
        }
        arrays = {}
        if state.w is not None:  # the split of the checked Gramian, in the tracked basis
            r = int(self.rank)
            ref = state.w[r:, r:] if self.check_spectrum else None
            block, arrays = stepwise_report.block_report(
                self, state.w[:r, :r], state.g0[:r], u.shape[0], rel, ref
            )
            s.update(block)
        before = state.s < 0  # rows before the start: NaN, the spectrum's checks included
        s = {
            k: jnp.where(before & (k not in ("start", "before_start")), jnp.nan, v)
            for k, v in s.items()
        }
        return state, s, arrays
