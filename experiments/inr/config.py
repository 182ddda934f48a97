"""Config and presets of the INR experiment: a Fourier-feature MLP fit to noisy samples."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from dyntheory.engine.config import ConfigError, Preset, TrainConfig, check_numbers, replace
from dyntheory.optim.config import RESUMABLE as OPTIMIZER_KEYS
from dyntheory.optim.config import OptimizerConfig, check_families

SIGNALS = ("sines1d", "blobs2d", "hopper2d")  # experiments.inr.signals draws them


@dataclasses.dataclass(frozen=True)
class Config:
    r"""INR: fit ``s(x)`` from ``y_i = s(x_i) + ε_i`` with a Fourier-feature MLP, AdamW vs PRM.

    Quick run::

        dyntheory run inr --preset quick       # about 3 minutes on a 2-core CPU (4 CPU-minutes)

    Expected result of ``quick`` (1-D sum of sines on 512 points and a 64×64 synthetic image,
    every other point used for training, noise σ = 0.1 of the signal's range, 128 random Fourier
    features, ReLU MLP 3×256, minibatches of a quarter of the samples so α = 1/3, lrs
    3e-4/1e-3/3e-3, 2 seeds, 2,000 steps): both optimizers peak early in clean PSNR and then
    memorize the noise; by the end AdamW has memorized nearly all of it and PRM somewhat less at
    its best lr: a modest suppression, mostly because PRM's gate closes once the gradient is
    noise-dominated. Numbers and verdict: ``docs/results/inr.md``.

    The paper-sized run::

        dyntheory run inr --preset paper --out runs/inr-paper

    Attributes:
      signals: which signals to fit, each a separate set of runs (``sines1d``, ``blobs2d``,
        ``hopper2d``; see :mod:`experiments.inr.signals`).
      side1d, side2d: grid sizes (``side1d`` points; ``side2d × side2d`` pixels).
      stride: train on every ``stride``-th grid point per axis; the clean error is measured on the
        whole grid (``stride = 1``: pure denoising).
      sigma: noise std as a fraction of the clean signal's range ``max s − min s`` (so the noisy
        targets' PSNR is ``−20 log10 σ`` in expectation: 20 dB for σ = 0.1).
      data_seed: seed of the noise and of the Fourier matrix B (the same for every optimizer, lr
        and model seed).
      n_features, scale1d, scale2d: ``B ∈ R^{m×d}``, ``B_ij ~ N(0, scale²)``, m = ``n_features``
        (the network's input is 2m wide). Chosen so that ``3·scale`` (nearly all of B's
        frequencies, in cycles per unit) stays below the training grid's Nyquist frequency
        ``side / (2·stride)``: 30 < 128 for the 1-D signal, 12 < 16 for the 64×64 image (24 < 32
        at 128×128). Above it the held-out points are aliased rather than interpolated.
      width, depth, activation: the MLP.
      stopping: measure the training-set-only stopping rules (THEORY.md §6) on every arm: the LOO
        PopulationRisk probe every step and a dense W_S (Dissipation) probe on the whole training
        set every ``ws_every`` steps; ``results.json`` reports, per arm, each rule's step and
        the held-out clean MSE there against the validation-optimal step (``stopping``), the W_S
        probe's identity error and stability, and, with ``eval_every=1``, the LOO estimate's
        correlation with the held-out change, split at the validation-optimal step
        (``poprisk_check``). Dense kernels: fit for the 1-D signal (256 training points), slow
        for images.
      batch_fraction: minibatch size as a fraction of the training samples (epoch sampling);
        PRM's α = b/(n − b) (THEORY §6, a fixed dataset) unless ``prm_alpha`` is set.
      optimizers, optim: every optimizer is run at every lr of the grid ``optim.lr``
        (``--set lr=...``), the lrs of one optimizer in one compiled program; the numbers of
        :class:`dyntheory.optim.config.OptimizerConfig` are shared by both (weight decay 0.01,
        PRM's default; PRM's knobs the package defaults).
    """

    signals: tuple[str, ...] = ("sines1d", "blobs2d")
    side1d: int = 512
    side2d: int = 64
    stride: int = 2
    sigma: float = 0.1
    data_seed: int = 0
    n_features: int = 128
    scale1d: float = 10.0
    scale2d: float = 4.0
    width: int = 256
    depth: int = 3
    activation: str = "relu"
    batch_fraction: float = 0.25
    optimizers: tuple[str, ...] = ("adamw", "prm")
    optim: OptimizerConfig = OptimizerConfig(lr=(3e-4, 1e-3, 3e-3), weight_decay=0.01)
    stopping: bool = False
    ws_every: int = 10
    # the engine's knobs: --set steps=... (or train.steps=...) reaches them
    train: TrainConfig = TrainConfig(
        steps=10_000,
        seeds=3,
        eval_every=10,
        log_every=10,
        fuse=100,
    )

    # what `dyntheory resume --set` may change besides the engine's schedule keys
    RESUMABLE: ClassVar[tuple[str, ...]] = OPTIMIZER_KEYS

    @property
    def lrs(self) -> tuple[float, ...]:
        """The learning rates of the grid (``optim.lr``, one or a tuple)."""
        lr = self.optim.lr
        return lr if isinstance(lr, tuple) else (lr,)

    def __post_init__(self):
        check_numbers(self)
        if not self.signals or any(s not in SIGNALS for s in self.signals):
            raise ConfigError(
                f"signals must be a non-empty subset of {', '.join(SIGNALS)}; "
                f"got {','.join(self.signals) or '(empty)'}."
            )
        if len(set(self.signals)) != len(self.signals):
            raise ConfigError(f"signals repeats a name: {','.join(self.signals)}.")
        for name in ("side1d", "side2d", "stride", "n_features", "width", "depth", "ws_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name, side in (("side1d", self.side1d), ("side2d", self.side2d)):
            if side // self.stride < 2:
                raise ConfigError(f"{name}={side} with stride={self.stride} leaves < 2 samples.")
        for name in ("sigma", "scale1d", "scale2d"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"{name} must be a finite number >= 0, got {v}.")
        if not self.sigma > 0:
            raise ConfigError("sigma must be > 0: the experiment measures memorization of noise.")
        if not 0.0 < self.batch_fraction < 1.0:
            raise ConfigError(
                f"batch_fraction must lie in (0, 1), got {self.batch_fraction}: PRM's α = "
                "b/(n − b) needs b < n (a full batch has no sampling noise to gate on)."
            )
        if self.train.batch_size is not None:
            raise ConfigError(
                "batch_size is derived per signal from batch_fraction; leave it unset (none)."
            )
        try:
            check_families(self.optimizers, ("adamw", "prm", "grokfast"))
        except ValueError as e:
            raise ConfigError(str(e)) from None


_QUICK = replace(Config(), steps=2000, seeds=2)
STOPPING = dict(
    signals=("sines1d",), stopping=True, lr=(1e-3,), ws_every=25, eval_every=1, log_every=1
)

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        replace(
            _QUICK,
            side1d=64,
            side2d=16,
            n_features=8,
            width=16,
            depth=1,
            steps=40,
            seeds=2,
            lr=(1e-3,),
            eval_every=10,
            log_every=10,
            fuse=20,
        ),
        "smoke test: 64-point 1-D signal and a 16×16 image, a 1×16 MLP on 16 Fourier features, "
        "40 steps, 2 seeds (seconds; nothing is learned)",
    ),
    "quick": Preset(
        _QUICK,
        "1-D sines (512 points) and a 64×64 synthetic image, every other point for training, "
        "σ = 0.1, ReLU 3×256 on 128 Fourier features, lrs 3e-4/1e-3/3e-3, AdamW vs PRM, 2 seeds, "
        "2,000 steps (a few minutes on a 2-core CPU)",
    ),
    "stopping": Preset(
        replace(_QUICK, **STOPPING),
        "the stopping rules without validation data on the 1-D signal of quick (256 noisy "
        "samples), lr 1e-3: LOO probe every step, W_S every 25, evaluation every step "
        "(results.json: signals.sines1d.arms.<opt>.<lr>.stopping)",
    ),
    "paper": Preset(
        replace(
            _QUICK,
            signals=("sines1d", "hopper2d"),
            side2d=128,
            scale2d=8.0,
            lr=(1e-4, 3e-4, 1e-3, 3e-3),
            steps=10_000,
            seeds=3,
        ),
        "1-D sines and matplotlib's grace_hopper photo at 128×128 (Fourier scale 8), σ = 0.1, "
        "lrs 1e-4…3e-3, AdamW vs PRM, 3 seeds, 10,000 steps (an hour or more on a CPU)",
    ),
}
