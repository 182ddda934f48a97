r"""The dissipation probe: W_S, its channel/reservoir split and the coupling, along the run.

One probe, :class:`Dissipation`, for every experiment that measures the cumulative dissipation
Gramian (THEORY.md §3): with or without the test block ``G_Q`` (``query``), squared loss or softmax
cross-entropy, plain GD or an adaptive optimizer's effective kernel (``preconditioner``), and
optionally the four-cell decomposition of the label noise (``cells``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from dyntheory import dissipation, losses, lowrank, momentum, split
from dyntheory.probes import dissipation_kernels as kernels
from dyntheory.probes import dissipation_refresh as refresh
from dyntheory.probes.base import Probe, Schedule, f64
from dyntheory.probes.dissipation_report import VALIDITY, report
from dyntheory.probes.dissipation_state import DissipationProbeState, check

PARTS, SUBS = kernels.PARTS, kernels.SUBS  # the four cells: clean/noise × channel/reservoir


@dataclasses.dataclass(frozen=True, eq=False)
class Dissipation(Probe):
    r"""The dissipation accumulator (THEORY.md §3) over the run, on the probe sets, from step 0.

    At each probe step ``t`` the accumulator advances over ``[t_prev, t)`` with the kernel of
    ``t_prev`` held constant (:func:`dyntheory.dissipation.update` with ``steps = t − t_prev``),
    then the kernel is refreshed. It models full-batch GD on the probe-set loss: exact when the
    probe set is the training set and training is full batch; otherwise an approximation.
    With ``preconditioner`` (:func:`dyntheory.optim.state.adam_preconditioner`,
    :func:`~dyntheory.optim.state.prm_preconditioner`) the kernel is the effective one
    ``K_eff = J diag(p) Jᵀ`` with ``lr = 1``; momentum is ignored (THEORY.md §3). Coordinates where
    ``p`` is not finite count as ``p = 0``.

    Scalars (``probe/<name>/...``): ``w_lambda_max``, ``w_trace``, ``w_effective_rank``
    (participation ratio), ``channel_dim``, ``time``, the loss identity ``loss_drop``
    ``Φ(0) − Φ(t)`` against ``predicted_loss_drop`` ``g(0)ᵀ W g(0)`` (exact for squared loss, first
    order for cross-entropy), the channel/reservoir energies of ``g(0)`` (``g0_*``), ``g(t)``
    (``g_*``) and, when the clean targets are known, of the label noise (``noise_*``). With
    ``query``: ``coupling_corr``, ``coupling_rel_err`` (``A = G_Q D†`` predicting the test
    displacement, THEORY.md §4) and ``invisibility`` (Prop. 3.2's residual). With ``cells``
    (squared loss and ``query``): the split's absolute ``cutoff`` and the four-cell energies
    ``{train,dissipated,test}_{clean,noise}_{channel,reservoir}`` of
    :func:`dyntheory.split.four_cell`. Arrays: ``w_eigenvalues`` (np,) and, with ``query``,
    ``predicted_displacement`` / ``actual_displacement`` (mq,).

    **Validity** (THEORY.md §10), reported at every probe step ``t`` for the accumulator
    ``W_S(s, t)`` (``start_step`` = ``s``): ``identity_rel_err`` =
    ``|predicted_loss_drop − loss_drop| / |loss_drop|`` on the probe set (0 on the empty interval
    ``t = s``), and the stability of the kernel that was held over the row's last interval
    ``[t_prev, t)``: ``bk_lambda_max`` = ``λ_max(η B K_eff)`` and ``stability`` = the largest
    ``|1 − μ|`` over the eigenvalues ``μ`` of ``η B K_eff`` (``> 1`` exactly when ``λ_max > 2``:
    the linearized step expands and the accumulator is not to be trusted); ``stability_max`` is
    the largest ``stability`` over every interval of ``[s, t]``. With ``start``, rows at or
    before it carry ``before_start = 1`` and NaN checks. With ``momentum``, ``decay`` or
    ``second_order`` the probe also runs the augmented recursion of :mod:`dyntheory.momentum`
    (EMA momentum with Adam's bias correction, decoupled weight decay, the second-order term
    ``−½ Δuᵀ B Δu``; same kernels, same basis) and reports its ``predicted_loss_drop_augmented``
    and ``identity_rel_err_augmented`` next to the momentum-free ones (``W_S`` and its split stay
    the momentum-free Gramian of THEORY.md §3, whose own ``identity_rel_err`` is reported).

    **Softmax's zero-loss directions** (THEORY.md §10). ``B 1 = 0`` per example: a shift of all
    logits of one example carries no loss, while ``W_S`` accumulates ``K`` there without any
    dissipation. With ``modulo_ker_b`` (default) the spectrum, the split and the cells are those
    of ``Π W_S Π`` (:func:`dyntheory.losses.logit_shift_free`), and the low-rank basis is taken
    in ``range(Π)``. The identity is unchanged: ``g`` lies in ``range(Π)``.

    **Spectrum check.** ``check_spectrum = k`` (``"lowrank"`` only; it forms the ``(np, np)``
    kernels, so small probe sets) carries a dense ``W_S`` on the same refreshes and reports
    ``spectrum_rel_err`` = ``max_{i<k} |λ_i − λ_i^dense| / λ_i^dense`` over the top ``k``
    eigenvalues of what is split, ``w_lambda_max_dense`` and ``channel_dim_dense``.

    **Methods.** ``"dense"`` forms the ``(np, np)`` kernels (exact, ``O((np)³)`` per refresh).
    ``"lowrank"`` never does: kernels are NTK-vector products over the probe set
    (:func:`dyntheory.ntk.ntk_matvec`), and ``W_S``, ``D``, ``G_Q`` live in a basis of ``rank``
    tracked directions (:mod:`dyntheory.lowrank`: ``g(0)``, the label noise, and ``lanczos_vectors``
    leading kernel eigenvectors per refresh), untracked directions counting as reservoir. With
    a complete basis it equals ``"dense"`` to round-off; its truncation error is bounded in
    :mod:`dyntheory.lowrank`. It also reports ``basis_size`` and ``g0_tracked`` (the fraction of
    ``‖g(0)‖²`` inside the basis).

    **Cheaper refreshes** (THEORY.md §10, "Warm starts and error control";
    :mod:`dyntheory.probes.dissipation_refresh`). ``warm_start`` (``"lowrank"``) seeds each
    refresh after the first with the previous refresh's Ritz vectors: Rayleigh–Ritz on a block
    Krylov space of depth ``warm_depth`` (:func:`dyntheory.krylov.block_krylov_topk`) instead of a
    Lanczos from a random vector. ``refresh_tol > 0`` makes the schedule adaptive: at each probe
    step the accumulator advances as always, then :func:`~dyntheory.probes.dissipation_refresh.
    monitor` (one NTK-vector product) compares the held generator ``η B K`` with the current one
    along ``g(t)``, and the kernel is refreshed only where their relative difference exceeds
    ``refresh_tol`` (the first probe step, and every restart before ``start``, always refresh).
    A probe step that does not refresh costs a forward pass and one product. With either,
    the row reports ``refreshes`` and ``ntk_products`` (counted since ``s``, the monitor's
    products included) and, when adaptive, ``monitor``. The decision is a real branch for one
    seed; vmapped over seeds both branches run.

    Args:
      lr: GD step size η, a float or a schedule ``step -> η`` (ignored with a preconditioner).
      preconditioner: ``opt_state -> p`` (a pytree like the params), or None for plain GD.
      loss: ``"squared"`` (B = I/n) or ``"softmax_ce"`` (B from the logits at each probe step).
      query: also accumulate the test block ``G_Q`` (needs a test probe set).
      cells: also report the four-cell decomposition (needs ``query`` and squared loss).
      threshold, mode: the channel/reservoir split (:func:`dyntheory.split.split`).
      implementation: the NTK implementation of ``"dense"`` (:func:`dyntheory.ntk.empirical_ntk`).
      method: ``"dense"`` or ``"lowrank"``; rank: the basis size ``R ≤ n p`` of ``"lowrank"``;
      lanczos_vectors, lanczos_iters: leading eigenvectors added per refresh and the Lanczos
        depth; chunk_size: examples per NTK-vector product (memory), None for all at once.
      momentum, first_moment, bias_correction, decay: the augmented identity's EMA momentum
        ``β`` (with ``opt_state -> m``), Adam's bias correction, and the decay ``η·wd`` per step.
      modulo_ker_b: split ``Π W_S Π`` for softmax (above); ignored for squared loss.
      basis_vectors: what a low-rank refresh adds: ``"kernel"`` (leading eigenvectors of ``K``)
        or ``"dynamics"`` (``B^{1/2} v`` for the leading eigenvectors ``v`` of
        ``B^{1/2} K B^{1/2}``: a span that ``B K`` maps into itself).
      compress: the low-rank propagator's generator: ``"product"`` ``Qᵀ B K Q`` or ``"factors"``
        ``(Qᵀ B Q)(Qᵀ K Q)`` (:func:`dyntheory.lowrank.compress_product`); equal for squared loss.
      check_spectrum: see "Spectrum check" (0: off).
      second_order: run the augmented recursion (with the second-order term) also without
        momentum and decay, e.g. for plain GD at a large step.
      start: every probe step ``≤ start`` restarts the accumulator, so ``W_S(s, T)`` starts at
        the last probe step ``s ≤ start`` (``start_step``; ``s = start`` when ``start`` is a probe
        step); those rows describe the interval before the restart and are flagged
        ``before_start``. Adam's first steps (tiny ``v̂``) break the linearization
        (``λ_max(η B K_eff) > 2``); starting after them measures the rest of the run.
      warm_start, warm_depth: seed each low-rank refresh with the last one's Ritz vectors, and
        the block Krylov depth (``warm_depth · lanczos_vectors`` products for the vectors,
        ``4 · warm_depth`` Lanczos steps for ``λ_max``); see "Cheaper refreshes".
      refresh_tol: refresh only where the monitor exceeds it (0: at every probe step).
    """

    schedule: Schedule = Schedule.every(10)
    name: str = "dissipation"
    lr: float | Callable = 1e-3
    preconditioner: Callable | None = None
    loss: str = "squared"
    query: bool = True
    cells: bool = False
    threshold: float = 1e-3
    mode: str = "relative"
    implementation: str = "auto"
    method: str = "dense"
    rank: int = 64
    lanczos_vectors: int = 8
    lanczos_iters: int | None = None
    chunk_size: int | None = None
    start: int = 0
    momentum: float = 0.0
    first_moment: Callable | None = None
    bias_correction: bool = True
    decay: float = 0.0
    second_order: bool = False
    modulo_ker_b: bool = True
    basis_vectors: str = "kernel"
    compress: str = "product"
    check_spectrum: int = 0
    warm_start: bool = False
    warm_depth: int = 2
    refresh_tol: float = 0.0

    @property
    def augmented(self) -> bool:
        return self.momentum > 0 or self.decay > 0 or self.second_order

    def __post_init__(self):
        check(self)

    # -- outputs, loss, kernels

    def _outputs(self, ctx, params, which: str = "train"):
        u = ctx.apply_fn(params, ctx.train["x"] if which == "train" else ctx.test["x"])
        return u.reshape(u.shape[0], -1) if self.loss == "squared" else u

    def _grad_hess_loss(self, ctx, u):
        spec = losses.get_loss(self.loss)
        y = ctx.train["y"].reshape(u.shape) if self.loss == "squared" else ctx.train["y"]
        phi = spec.value(u, y).astype(f64())
        return spec.out_grad(u, y), spec.out_hessian(u), phi

    def _refresh(self, ctx, params, opt_state, step, basis, u, ritz=None) -> refresh.Refresh:
        fn = refresh.refresh_dense if self.method == "dense" else refresh.refresh_lowrank
        return fn(self, ctx, params, opt_state, step, basis, u, ritz)

    # -- the probe protocol

    def init(self, ctx, params, opt_state):
        return self._start(ctx, params, opt_state, jnp.zeros((), jnp.int32))

    def _start(self, ctx, params, opt_state, step):
        """A fresh accumulator that starts at ``step`` (``s`` of ``W_S(s, T)``)."""
        if self.query and ctx.test is None:
            raise ValueError("Dissipation(query=True) needs a test probe set (pass eval_sets).")
        u = self._outputs(ctx, params)
        g, _, phi = self._grad_hess_loss(ctx, u)
        uq = self._outputs(ctx, params, "test").reshape(-1) if self.query else None
        n_q = 0 if uq is None else uq.shape[0]
        noise = jnp.zeros_like(g)
        if "y_clean" in ctx.train and self.loss == "squared":
            y = ctx.train["y"].reshape(u.shape)
            noise = split.residual_parts(u, ctx.train["y_clean"].reshape(u.shape), y)[1]
        if self.method == "dense":
            basis = None
        else:
            if self.rank > g.shape[0]:
                raise ValueError(
                    f"Dissipation rank {self.rank} exceeds the {g.shape[0]} train outputs (n·p) "
                    "of the probe set; use rank <= n·p (rank = n·p is exact)."
                )
            basis = lowrank.init(g.shape[0], self.rank, n_q)
        e0, a0 = (None, None)
        tracked = [g, noise]
        if self.augmented:
            e0, a0 = kernels.images(self, ctx, params, opt_state, step, g)
            tracked += [e0, a0]  # a zero image (no momentum, or no decay) adds no direction
        if basis is not None:
            tracked = kernels.zero_loss_free(self, u, jnp.stack(tracked, 1).astype(f64()))
            basis = lowrank.extend(basis, tracked)
        r = self._refresh(ctx, params, opt_state, step, basis, u)  # cold: nothing to seed it
        acc = dissipation.init(r.k.shape[0], n_q) if basis is None else r.basis
        aug = momentum.init(r.k.shape[0]) if self.augmented else None
        step = jnp.asarray(step, jnp.int32)
        ref = None
        if self.check_spectrum:
            ref = (dissipation.init(g.shape[0]), *self._dense_ref(ctx, params, opt_state, step, u))
        counted = self.warm_start or self.refresh_tol > 0
        one = jnp.ones((), jnp.int32)
        return DissipationProbeState(
            kernels.drop_g(acc, self.query), r.k, r.kq, r.hess, r.lr, step,
            g, noise, phi, u.reshape(-1), uq, aug, e0, a0,
            step, r.mu, jnp.zeros((), f64()), ref, r.ritz,
            one if counted else None, r.products if counted else None,
        )  # fmt: skip

    def _dense_ref(self, ctx, params, opt_state, step, u):
        """``(K, B, η)`` of the dense reference of ``check_spectrum``."""
        dense = dataclasses.replace(
            self, method="dense", query=False, check_spectrum=0, warm_start=False
        )
        r = refresh.refresh_dense(dense, ctx, params, opt_state, step, None, u)
        return r.k, r.hess, r.lr

    def __call__(self, ctx, state: DissipationProbeState, params, opt_state, step):
        new, s, arrays = self._advance(ctx, state, params, opt_state, step)
        if self.start == 0:
            return new, dict(s, before_start=jnp.zeros((), f64())), arrays
        # Until the first probe step >= start the accumulator restarts there: W_S(s, T), s >= start.
        # A real branch (the step is shared by the vmapped seeds): after the start, no second
        # refresh is computed and thrown away.
        new = jax.lax.cond(
            step <= self.start, lambda: self._start(ctx, params, opt_state, step), lambda: new
        )
        # a row at or before `start` describes an interval that ends before W_S(s, T) begins:
        # flagged, and its checks are not shown as if they were the run's
        before = step <= self.start
        s = dict(s, before_start=before.astype(f64()))
        for key in VALIDITY:
            if key in s:
                s[key] = jnp.where(before, jnp.nan, s[key])
        return new, s, arrays

    def _advance(self, ctx, state: DissipationProbeState, params, opt_state, step):
        low = self.method == "lowrank"
        acc = kernels.with_g(state.acc, self.query, state.k.shape[0])
        step_fn = lowrank.update if low else dissipation.update
        hess, gen = kernels.hessian(state.hess)
        acc = step_fn(
            acc, state.k, state.lr, out_hessian=hess, steps=step - state.t, generator=gen,
            **({"kq_r": state.kq} if low else {"k_query_train": state.kq}),
        )  # fmt: skip
        aug = state.aug
        if self.augmented:
            aug = momentum.update(
                aug, state.lr * state.k, self.momentum, out_hessian=hess,
                steps=step - state.t, decay=self.decay,
                first_step=state.t + 1 if self.bias_correction else None,
            )  # fmt: skip
        u = self._outputs(ctx, params)
        g, _, phi = self._grad_hess_loss(ctx, u)
        basis = acc if low else None
        ref = state.ref
        if ref is not None:
            w_ref = dissipation.update(
                ref[0], ref[1], ref[3], out_hessian=ref[2], steps=step - state.t
            )
            ref = (w_ref, *ref[1:])

        def fresh():
            r = self._refresh(ctx, params, opt_state, step, basis, u, state.ritz)
            new_ref = ref
            if ref is not None:
                new_ref = (ref[0], *self._dense_ref(ctx, params, opt_state, step, u))
            return r, new_ref

        s_extra = {}
        if self.refresh_tol > 0:  # refresh only where the held generator is off (error control)
            held = refresh.Refresh(
                basis, state.k, state.kq, state.hess, state.lr, state.mu, state.ritz,
                jnp.zeros((), jnp.int32),
            )  # fmt: skip
            m = refresh.monitor(self, ctx, params, opt_state, step, basis, u, g, held)
            redo = m > self.refresh_tol
            # a real branch with one seed; vmapped over seeds both branches run (a select)
            r, ref = jax.lax.cond(redo, fresh, lambda: (held, ref))
            s_extra["monitor"] = m
        else:
            (r, ref), redo = fresh(), jnp.ones((), bool)
        acc = r.basis if low else acc
        # the stability of the kernel held over [t_prev, t): the interval this row's identity ends
        stab = jnp.maximum(jnp.abs(1 - state.mu[0]), jnp.abs(1 - state.mu[1]))
        stab_max = jnp.where(step > state.t, jnp.maximum(state.stab_max, stab), state.stab_max)
        refreshes, products = state.refreshes, state.products
        if refreshes is not None:  # the monitor's product counts with the refreshes'
            refreshes = refreshes + redo.astype(jnp.int32)
            products = products + r.products + int(self.refresh_tol > 0)
            s_extra.update(refreshes=refreshes.astype(f64()), ntk_products=products.astype(f64()))
        new = state._replace(
            acc=kernels.drop_g(acc, self.query), k=r.k, kq=r.kq, hess=r.hess, lr=r.lr,
            t=step.astype(jnp.int32), aug=aug, mu=r.mu, stab_max=stab_max, ref=ref,
            ritz=r.ritz, refreshes=refreshes, products=products,
        )  # fmt: skip
        uq = self._outputs(ctx, params, "test").reshape(-1) if self.query else None
        s, arrays = report(self, ctx, state, new, acc, u, uq, g, phi, step, stab)
        return new, s | s_extra, arrays
