r"""The dissipation probe: W_S, its channel/reservoir split and the coupling, along the run.

One probe, :class:`Dissipation`, for every experiment that measures the cumulative dissipation
Gramian (THEORY.md §3): with or without the test block ``G_Q`` (``query``), squared loss or softmax
cross-entropy, plain GD or an adaptive optimizer's effective kernel (``preconditioner``), and
optionally the four-cell decomposition of the label noise (``cells``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dyntheory import dissipation, krylov, losses, lowrank, momentum, ntk, spectrum, split
from dyntheory.probes.base import Probe, Schedule, f64

PARTS, SUBS = ("clean", "noise"), ("channel", "reservoir")
METHODS = ("dense", "lowrank")


class DissipationProbeState(NamedTuple):
    """What :class:`Dissipation` carries between probe steps (checkpointed with the run).

    Fields that only exist with a test probe set are ``None`` when ``query=False`` (an empty
    array would not checkpoint): ``acc.G``, ``kq`` and ``uq0``. With ``method="lowrank"``,
    ``acc`` is a :class:`dyntheory.lowrank.LowRankState` and ``k``, ``kq``, ``hess`` are the
    compressed ``(R, R)``, ``(mq, R)`` and ``(R, R)`` (or scalar) operators.
    """

    acc: dissipation.DissipationState | lowrank.LowRankState  # W_S, P, D, G_Q from step 0
    k: jax.Array  # (np, np) kernel at the last probe step, held constant until the next
    kq: jax.Array | None  # (mq, np) cross kernel at the last probe step; None without query
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

    **Validity** (THEORY.md §10), reported at every probe step: ``identity_rel_err`` =
    ``|predicted_loss_drop − loss_drop| / |loss_drop|`` on the probe set, and the stability of the
    propagator refreshed at this step: ``bk_lambda_max`` = ``λ_max(η B K_eff)`` and ``stability``
    = the largest ``|1 − μ|`` over the eigenvalues ``μ`` of ``η B K_eff`` (``> 1`` exactly when
    ``λ_max > 2``: the linearized step expands and the accumulator is not to be trusted).
    With ``momentum`` or ``decay`` the probe also runs the augmented recursion of
    :mod:`dyntheory.momentum` (EMA momentum with Adam's bias correction, decoupled weight decay;
    same kernels, same basis) and reports its ``predicted_loss_drop_augmented`` and
    ``identity_rel_err_augmented`` next to the momentum-free ones (``W_S`` and its split stay
    the momentum-free Gramian of THEORY.md §3).

    **Methods.** ``"dense"`` forms the ``(np, np)`` kernels (exact, ``O((np)³)`` per refresh).
    ``"lowrank"`` never does: kernels are NTK-vector products over the probe set
    (:func:`dyntheory.ntk.ntk_matvec`), and ``W_S``, ``D``, ``G_Q`` live in a basis of ``rank``
    tracked directions (:mod:`dyntheory.lowrank`: ``g(0)``, the label noise, and ``lanczos_vectors``
    leading kernel eigenvectors per refresh), untracked directions counting as reservoir. With
    a complete basis it equals ``"dense"`` to round-off; its truncation error is bounded in
    :mod:`dyntheory.lowrank`. It also reports ``basis_size`` and ``g0_tracked`` (the fraction of
    ``‖g(0)‖²`` inside the basis).

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
      start: the accumulator starts at the first probe step ``s ≥ start`` (``W_S(s, T)``); before
        it every probe step restarts it (its scalars still describe the interval before the
        restart). Adam's first steps (tiny ``v̂``) break the linearization
        (``λ_max(η B K_eff) > 2``); starting after them measures the rest of the run.
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

    @property
    def augmented(self) -> bool:
        return self.momentum > 0 or self.decay > 0

    def __post_init__(self):
        losses.get_loss(self.loss)
        for name in ("momentum", "decay"):
            v = float(getattr(self, name))
            if not 0 <= v < 1:
                raise ValueError(f"Dissipation {name} must lie in [0, 1), got {v}.")
        if self.momentum > 0 and self.first_moment is None:
            raise ValueError(
                "Dissipation(momentum=...) needs first_moment (opt_state -> m), e.g. "
                "dyntheory.optim.state.first_moment."
            )
        if self.method not in METHODS:
            raise ValueError(
                f"unknown Dissipation method {self.method!r}; choose one of {METHODS}."
            )
        t = float(self.threshold)
        if not (math.isfinite(t) and t >= 0):
            raise ValueError(f"Dissipation(threshold=...) must be finite and >= 0, got {t}.")
        if not callable(self.lr) and not (math.isfinite(float(self.lr)) and float(self.lr) > 0):
            raise ValueError(f"Dissipation(lr=...) must be finite and > 0, got {self.lr}.")
        if self.cells and not (self.query and self.loss == "squared"):
            raise ValueError("Dissipation(cells=True) needs query=True and loss='squared'.")
        if self.method == "lowrank" and self.cells:
            raise ValueError("Dissipation(cells=True) needs method='dense'.")
        for name in ("rank", "lanczos_vectors"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Dissipation {name} must be >= 1, got {getattr(self, name)}.")

    # -- outputs, loss, kernels

    def _outputs(self, ctx, params, which: str = "train"):
        u = ctx.apply_fn(params, ctx.train["x"] if which == "train" else ctx.test["x"])
        return u.reshape(u.shape[0], -1) if self.loss == "squared" else u

    def _grad_hess_loss(self, ctx, u):
        spec = losses.get_loss(self.loss)
        y = ctx.train["y"].reshape(u.shape) if self.loss == "squared" else ctx.train["y"]
        phi = spec.value(u, y).astype(f64())
        return spec.out_grad(u, y), spec.out_hessian(u), phi

    def _precond(self, opt_state):
        if self.preconditioner is None:
            return None
        return jax.tree.map(
            lambda q: jnp.where(jnp.isfinite(q), q, 0), self.preconditioner(opt_state)
        )

    def _lr(self, step, p):
        return jnp.asarray(
            1.0 if p is not None else (self.lr(step) if callable(self.lr) else self.lr), f64()
        )

    def _refresh_dense(self, ctx, params, opt_state, step, basis, u):
        p = self._precond(opt_state)
        x = ctx.train["x"]
        kw = {"precond": p, "implementation": self.implementation}
        k = ntk.kernel(ctx.apply_fn, params, x, **kw).astype(f64())
        kq = ntk.kernel(ctx.apply_fn, params, ctx.test["x"], x, **kw) if self.query else None
        hess = jnp.asarray(losses.get_loss(self.loss).out_hessian(u), f64())
        lr = self._lr(step, p)
        if jnp.ndim(hess) == 0:
            mu = lr * hess * jnp.linalg.eigvalsh(k)
        else:  # eigenvalues of B K = those of B^{1/2} K B^{1/2} (B PSD)
            lam_b, v_b = jnp.linalg.eigh(hess)
            root = (v_b * jnp.sqrt(jnp.maximum(lam_b, 0))[None]) @ v_b.T
            mu = lr * jnp.linalg.eigvalsh(root @ k @ root)
        return basis, k, kq, hess, lr, (mu[-1], mu[0])

    def _refresh_lowrank(self, ctx, params, opt_state, step, basis, u):
        p = self._precond(opt_state)
        x = ctx.train["x"]
        k_mv = ntk.ntk_matvec(ctx.apply_fn, params, x, precond=p, chunk_size=self.chunk_size)
        spec = losses.get_loss(self.loss)
        b_mv = lambda v: spec.out_hessian_vp(u, v)
        n_out = basis.Q.shape[0]
        nvec = min(self.lanczos_vectors, n_out)
        iters = min(n_out, self.lanczos_iters or 2 * nvec + 20)
        key = jax.random.fold_in(jax.random.key(0), step)
        _, vecs = krylov.lanczos_topk(k_mv, n_out, nvec, key=key, num_iters=iters)
        basis = lowrank.extend(basis, vecs)
        k_r = lowrank.compress(basis, k_mv)
        hess = jnp.asarray(spec.out_hessian(u), f64()) if self.loss == "squared" else None
        if hess is None:
            hess = lowrank.compress(basis, b_mv)
        kq = None
        if self.query:
            kq_mv = ntk.ntk_matvec(
                ctx.apply_fn, params, ctx.test["x"], x, precond=p, chunk_size=self.chunk_size
            )
            kq = lowrank.compress_cross(basis, kq_mv)
        lr = self._lr(step, p)
        # λ_max(η B K) = λ_max(η B^{1/2} K B^{1/2}) (B PSD), by Lanczos on the whole operator
        root = losses.out_hessian_root_vp(self.loss, u)
        sym = lambda v: root(k_mv(root(v)))
        top, _ = krylov.lanczos_topk(
            sym, n_out, 1, key=jax.random.fold_in(key, 1), num_iters=min(n_out, 40)
        )
        mu_max = lr * top[0]
        return basis, k_r, kq, hess, lr, (mu_max, jnp.zeros((), f64()))

    def _refresh(self, *args):
        fn = self._refresh_dense if self.method == "dense" else self._refresh_lowrank
        return fn(*args)

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
        e0, a0 = self._images(ctx, params, opt_state, g) if self.augmented else (None, None)
        if basis is not None:
            extra = [v for v in (e0, a0) if v is not None]
            basis = lowrank.extend(basis, jnp.stack([g, noise, *extra], 1).astype(f64()))
        basis, k, kq, hess, lr, _ = self._refresh(ctx, params, opt_state, step, basis, u)
        acc = dissipation.init(k.shape[0], n_q) if basis is None else basis
        aug = momentum.init(k.shape[0]) if self.augmented else None
        return DissipationProbeState(
            _drop_g(acc, self.query), k, kq, hess, lr, jnp.asarray(step, jnp.int32),
            g, noise, phi, u.reshape(-1), uq, aug, e0, a0,
        )  # fmt: skip

    def _images(self, ctx, params, opt_state, g):
        """``e = J (p ⊙ m)`` (zeros without momentum) and ``a = J w`` (zeros without decay)."""
        jvp = lambda t: ntk.output_jvp(
            ctx.apply_fn, params, ctx.train["x"], t, chunk_size=self.chunk_size
        ).astype(f64())
        e = jnp.zeros(g.shape, f64())
        if self.momentum > 0:
            m = self.first_moment(opt_state)
            p = self._precond(opt_state)
            e = jvp(m if p is None else jax.tree.map(jnp.multiply, m, p))
            if p is None:  # plain momentum GD: the step size is the probe's lr
                e = e * self._lr(jnp.zeros((), jnp.int32), None)
        a = jvp(params) if self.decay > 0 else jnp.zeros(g.shape, f64())
        return e, a

    def __call__(self, ctx, state: DissipationProbeState, params, opt_state, step):
        new, s, arrays = self._advance(ctx, state, params, opt_state, step)
        if self.start == 0:
            return new, s, arrays
        # Until the first probe step >= start the accumulator restarts there: W_S(s, T), s >= start.
        fresh = step <= self.start
        restart = self._start(ctx, params, opt_state, step)
        new = jax.tree.map(lambda a, b: jnp.where(fresh, a, b), restart, new)
        return new, s, arrays

    def _advance(self, ctx, state: DissipationProbeState, params, opt_state, step):
        low = self.method == "lowrank"
        acc = _with_g(state.acc, self.query, state.k.shape[0])
        step_fn = lowrank.update if low else dissipation.update
        acc = step_fn(
            acc, state.k, state.lr, out_hessian=state.hess, steps=step - state.t,
            **({"kq_r": state.kq} if low else {"k_query_train": state.kq}),
        )  # fmt: skip
        aug = state.aug
        if self.augmented:
            aug = momentum.update(
                aug, state.lr * state.k, self.momentum, out_hessian=state.hess,
                steps=step - state.t, decay=self.decay,
                first_step=state.t + 1 if self.bias_correction else None,
            )  # fmt: skip
        u = self._outputs(ctx, params)
        g, _, phi = self._grad_hess_loss(ctx, u)
        basis, k, kq, hess, lr, (mu_max, mu_min) = self._refresh(
            ctx, params, opt_state, step, acc if low else None, u
        )
        acc = basis if low else acc
        new = state._replace(
            acc=_drop_g(acc, self.query), k=k, kq=kq, hess=hess, lr=lr, t=step.astype(jnp.int32),
            aug=aug,
        )  # fmt: skip
        ops = acc.acc if low else acc  # the operators in the basis' (or output) coordinates
        to = (lambda v: lowrank.coords(acc, v)) if low else (lambda v: v.astype(ops.W.dtype))
        n = ctx.train["x"].shape[0]
        sp = split.split(ops.W, self.threshold, self.mode, n_examples=n)
        lam = sp.eigvals
        c0 = to(state.g0)
        drop, predicted = state.phi0 - phi, c0 @ ops.W @ c0
        s = {
            "w_lambda_max": lam[0],
            "w_trace": jnp.sum(lam),
            "w_effective_rank": spectrum.participation_ratio(lam),
            "channel_dim": jnp.sum(sp.channel),
            "time": ops.time,
            "loss_drop": drop,
            "predicted_loss_drop": predicted,
            "identity_rel_err": jnp.abs(predicted - drop) / jnp.abs(drop),
            "bk_lambda_max": mu_max,
            "stability": jnp.maximum(jnp.abs(1 - mu_max), jnp.abs(1 - mu_min)),
        }
        if self.augmented:
            pred = momentum.predicted_loss_drop(aug, c0, to(state.e0), to(state.a0))
            s["predicted_loss_drop_augmented"] = pred
            s["identity_rel_err_augmented"] = jnp.abs(pred - drop) / jnp.abs(drop)
        noise_known = "y_clean" in ctx.train and self.loss == "squared"
        for label, v in (("g0", state.g0), ("g", g), ("noise", state.noise0)):
            if label == "noise" and not noise_known:
                continue
            ch, res = split.energies(sp, to(v))
            outside = jnp.sum(jnp.square(v.astype(lam.dtype))) - jnp.sum(jnp.square(to(v)))
            s[f"{label}_channel"], s[f"{label}_reservoir"] = ch, res + jnp.maximum(outside, 0)
        if low:
            s["basis_size"] = acc.size
            s["g0_tracked"] = jnp.sum(c0**2) / jnp.sum(jnp.square(state.g0.astype(c0.dtype)))
        arrays = {"w_eigenvalues": lam}
        if self.query:
            uq = self._outputs(ctx, params, "test").reshape(-1)
            du = to(u.reshape(-1) - state.u0)
            pred = dissipation.coupling(ops) @ du.astype(ops.G.dtype)
            actual = (uq - state.uq0).astype(pred.dtype)
            s["coupling_corr"] = jnp.corrcoef(pred, actual)[0, 1]
            s["coupling_rel_err"] = jnp.linalg.norm(pred - actual) / jnp.linalg.norm(actual)
            s["invisibility"] = split.invisibility_residual(sp, ops.G)
            arrays["predicted_displacement"], arrays["actual_displacement"] = pred, actual
        if self.cells:
            s.update(_cells(sp, ops, state.g0, state.noise0))
        return new, s, arrays


def _drop_g(acc, query: bool):
    """The state to keep: without a query set, ``G`` (0 rows) is stored as None."""
    if query:
        return acc
    if isinstance(acc, lowrank.LowRankState):
        return acc._replace(acc=acc.acc._replace(G=None))
    return acc._replace(G=None)


def _with_g(acc, query: bool, n: int):
    """The inverse of :func:`_drop_g`: an empty ``(0, n)`` G for the accumulator's update."""
    if query:
        return acc
    if isinstance(acc, lowrank.LowRankState):
        inner = acc.acc
        return acc._replace(acc=inner._replace(G=jnp.zeros((0, n), inner.W.dtype)))
    return acc._replace(G=jnp.zeros((0, n), acc.W.dtype))


def _cells(sp: split.Split, acc: dissipation.DissipationState, g0, noise0) -> dict:
    """The split's cutoff and the four-cell energies (clean/noise × channel/reservoir)."""
    dtype = sp.eigvecs.dtype
    g_noise = noise0.astype(dtype)
    cells = split.four_cell(sp, acc.W, g0.astype(dtype) - g_noise, g_noise, acc.G.astype(dtype))
    out = {"cutoff": sp.threshold}
    for i, part in enumerate(PARTS):
        for j, sub in enumerate(SUBS):
            out[f"train_{part}_{sub}"] = cells.train_energy[i, j]
            out[f"dissipated_{part}_{sub}"] = cells.dissipated[i, j]
            out[f"test_{part}_{sub}"] = cells.test_energy[i, j]
    return out
