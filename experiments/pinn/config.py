"""Config and presets of the PINN experiment: advection with a noisy initial condition."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

from dyntheory.engine.config import ConfigError, Preset, TrainConfig, check_numbers, replace
from dyntheory.optim.config import RESUMABLE as OPTIMIZER_KEYS
from dyntheory.optim.config import OptimizerConfig, check_families


@dataclasses.dataclass(frozen=True)
class Config:
    r"""PINN for ``u_t + β u_x = 0`` (β = 5, periodic, noisy ``sin x`` initial condition).

    Quick run::

        dyntheory run pinn --preset quick      # about 2 minutes on a 2-core CPU

    Expected result of ``quick`` (tanh MLP 4×50, 1,024 fresh collocation points per step, 256
    noisy IC points with σ = 0.1, lrs 1e-3/3e-3/1e-2 for both AdamW and PRM, 2 seeds, 2,000
    steps): the best-tuned PRM does not reach relative L2 ≤ 0.40 in fewer iterations than the
    best-tuned AdamW (its gate stays mostly shut, so it takes smaller steps). Numbers and verdict:
    ``docs/results/pinn.md``.

    The paper-sized run (a long CPU run or a GPU)::

        dyntheory run pinn --preset paper --out runs/pinn-paper

    Attributes:
      beta, t_max: the PDE ``u_t + β u_x = 0`` on ``[0, 2π) × [0, t_max]``.
      sigma, n_ic, data_seed: the IC observations ``y_i = sin(x_i) + σ ε_i`` at ``n_ic``
        equispaced points; the noise depends only on ``data_seed`` (the same for every optimizer,
        learning rate and model seed).
      resample: fresh collocation points every step (``fold_in(key, step)``; ``batch_size`` of
        them) or one fixed set of ``batch_size`` points drawn from ``data_seed``.
      n_bc: boundary times per step for the periodic term ``u(0, t) = u(2π, t)`` (``≤
        batch_size``; drawn with the collocation points).
      w_pde, w_ic, w_bc: loss weights.
      embedding: ``"none"`` — the network sees ``(x, t)`` rescaled to ``[−1, 1]²`` (the standard
        benchmark; periodicity is learned through the boundary term); ``"periodic"`` — it sees
        ``(cos x, sin x, 2t/t_max − 1)``, exactly periodic, so the boundary term is identically 0.
      width, depth, activation: the MLP ``depth`` hidden layers of ``width`` (LeCun-normal init).
      optimizers: which of ``adamw``, ``prm`` to run.
      optim: the optimizers' numbers (:class:`dyntheory.optim.config.OptimizerConfig`, shared by
        both; weight decay 0.01, the PRM package's default). ``optim.lr`` (``--set lr=...``) is
        the learning-rate grid; every optimizer is run at every lr (AdamW's sweep is the paper's
        "best-tuned AdamW"; PRM is run on the same grid so the comparison is symmetric), every lr
        of one optimizer in one compiled program. ``optim.prm_alpha``: the gate's α; ``None`` = 1
        with fresh collocation points (THEORY §6: fresh batches). A fixed collocation set
        (``resample=false``) is full-batch: no sampling noise, so α must then be given
        explicitly.
      target: the relative-L2 threshold whose first crossing is counted (paper: 0.40).
      grid_nx, grid_nt: the error grid (``grid_nx`` x-points × ``grid_nt`` t-points).
    """

    # problem
    beta: float = 5.0
    t_max: float = 1.0
    sigma: float = 0.1
    n_ic: int = 256
    data_seed: int = 0
    resample: bool = True
    n_bc: int = 128
    w_pde: float = 1.0
    w_ic: float = 1.0
    w_bc: float = 1.0
    embedding: Literal["none", "periodic"] = "none"
    # model
    width: int = 50
    depth: int = 4
    activation: str = "tanh"
    # optimizers
    optimizers: tuple[str, ...] = ("adamw", "prm")
    optim: OptimizerConfig = OptimizerConfig(lr=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2), weight_decay=0.01)
    # measurement
    target: float = 0.40
    grid_nx: int = 256
    grid_nt: int = 101
    # the engine's knobs: --set steps=... (or train.steps=...) reaches them
    train: TrainConfig = TrainConfig(
        steps=20_000,
        batch_size=2048,
        seeds=3,
        eval_every=10,
        log_every=10,
        fuse=100,
    )

    # what `dyntheory resume --set` may change besides the engine's schedule keys
    RESUMABLE: ClassVar[tuple[str, ...]] = (*OPTIMIZER_KEYS, "target")

    @property
    def lrs(self) -> tuple[float, ...]:
        """The learning rates of the grid (``optim.lr``, one or a tuple)."""
        lr = self.optim.lr
        return lr if isinstance(lr, tuple) else (lr,)

    def __post_init__(self):
        check_numbers(self)
        for name in ("beta", "t_max", "width", "depth", "n_ic", "n_bc", "grid_nx", "grid_nt"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}.")
        for name in ("sigma", "w_pde", "w_ic", "w_bc"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"{name} must be a finite number >= 0, got {v}.")
        if self.train.batch_size is None:
            raise ConfigError(
                "batch_size is the number of collocation points per step and must be set "
                "(with resample=false it is the size of the fixed collocation set)."
            )
        if self.n_bc > self.train.batch_size:
            raise ConfigError(
                f"n_bc ({self.n_bc}) must be <= batch_size ({self.train.batch_size}): the boundary "
                "times are drawn alongside the collocation points."
            )
        try:
            check_families(self.optimizers, ("adamw", "prm", "grokfast"))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if not 0.0 < self.target:
            raise ConfigError(f"target must be > 0, got {self.target}.")
        if "prm" in self.optimizers and self.optim.prm_alpha is None and not self.resample:
            raise ConfigError(
                "PRM with a fixed collocation set (resample=false) is full-batch training and "
                "needs an explicit prm_alpha: the default α = 1 assumes fresh points every step "
                "(THEORY §6), and b/(n − b) is infinite when b = n."
            )

    @property
    def alpha(self) -> float:
        """The α PRM uses where ``optim.prm_alpha`` is None: 1, for fresh collocation points."""
        return 1.0


_QUICK = replace(
    Config(),
    steps=2000,
    batch_size=1024,
    seeds=2,
    lr=(1e-3, 3e-3, 1e-2),
    grid_nx=128,
    grid_nt=51,
)

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        replace(
            _QUICK,
            width=8,
            depth=2,
            steps=40,
            batch_size=64,
            n_bc=16,
            n_ic=32,
            seeds=2,
            lr=(1e-3,),
            eval_every=10,
            log_every=10,
            fuse=20,
            grid_nx=16,
            grid_nt=5,
        ),
        "smoke test: a 2×8 tanh MLP, 64 collocation points, 40 steps, one lr × 2 optimizers × "
        "2 seeds (seconds; nothing is learned)",
    ),
    "quick": Preset(
        _QUICK,
        "β = 5, σ = 0.1, tanh 4×50, 1,024 fresh collocation points per step, lrs 1e-3/3e-3/1e-2, "
        "AdamW vs PRM, 2 seeds, 2,000 steps (a few minutes on a 2-core CPU)",
    ),
    "paper": Preset(
        Config(),
        "β = 5, σ = 0.1, tanh 4×50, 2,048 fresh collocation points per step, lrs 1e-4…1e-2, "
        "AdamW vs PRM, 3 seeds, 20,000 steps (an hour or more on a CPU; minutes on a GPU)",
    ),
}
