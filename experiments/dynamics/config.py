"""Config and presets of the output-space dynamics experiment."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from dyntheory.engine.config import (
    ConfigError,
    Preset,
    TrainConfig,
    check_dissipation,
    check_numbers,
    replace,
)


@dataclasses.dataclass(frozen=True)
class Config:
    r"""Teacher-student regression recorded for the theory figures (two engine runs).

    Command, runtime and expected result (``quick``: about two minutes on a 2-core CPU)::

        dyntheory run dynamics --preset quick

    ``gd/``: full-batch GD on 64 noisy examples (the dissipation probe is exact there: its probe set
    is the training set). Recorded at every probe step: the NTK spectrum and its drift, the spectrum
    of ``W_S`` with the channel/reservoir cutoff, the four-cell decomposition (clean signal / label
    noise × channel / reservoir) of the train residual and of the test displacement, and the
    predicted ``A (U_S(t) − U_S(0))`` and actual ``U_Q(t) − U_Q(0)`` test displacements
    (THEORY §3–4). ``sgd/``: online minibatch SGD on fresh samples of the same teacher (label noise
    on every sample); every step the minibatch gradient is split into its coherent part and its
    fluctuation and both are accumulated on the top and bottom NTK eigendirections at
    initialization (THEORY §5): the accumulated drift grows like ``t`` (until the direction's
    coherent part is learned) and the noise like ``√t``.

    Attributes:
      d_in, teacher_width, n_train, n_test, noise, data_seed: the teacher-student data, as in
        ``experiments/toy_regression`` (tanh MLP teacher, Gaussian inputs, label noise σ on the
        train labels only).
      width, depth, activation: the student MLP (shared by both phases).
      lr: GD step size; ``steps`` (TrainConfig) is the number of GD steps.
      probe_schedule: when the NTK and dissipation probes of the GD phase run.
      split_threshold: a direction of ``W_S`` is in the channel once training has dissipated this
        fraction of its loss (``"dissipated_fraction"`` mode of :func:`dyntheory.split.split`).
      sgd_steps, sgd_batch, sgd_lr, sgd_seeds: the SGD phase (fresh teacher samples every step;
        ``sgd_seeds`` runs at once with vmap).
      sgd_eval_every: test-set evaluations of the SGD phase every this many steps (fixed, not a
        fraction of ``sgd_steps``, so an extended run evaluates where a longer one would).
      sgd_noise: label-noise σ of the SGD phase's samples. Larger than ``noise`` on purpose: the
        gradient-noise covariance Σ scales with the residual, and when the label noise dominates
        the residual from the start Σ is nearly stationary, as THEORY §5's ``√(ηt/b)`` assumes
        (with a small σ the noise injected early, while the model error is large, dominates).
      directions: number ``r`` of top NTK eigendirections the drift and noise are projected on.
      dissipation_method, dissipation_rank, dissipation_vectors: the GD phase's W_S accumulator
        (:class:`dyntheory.probes.Dissipation`): ``"dense"`` or ``"lowrank"`` with a basis of
        ``dissipation_rank`` directions, ``dissipation_vectors`` kernel eigenvectors added per
        probe step (rank = n_train with as many vectors is exact).
    """

    d_in: int = 8
    teacher_width: int = 16
    n_train: int = 64
    n_test: int = 64
    noise: float = 0.3
    data_seed: int = 1234
    width: int = 16
    depth: int = 2
    activation: str = "tanh"
    lr: float = 0.1
    probe_schedule: str = "every:20"
    split_threshold: float = 0.5
    sgd_steps: int = 4000
    sgd_batch: int = 32
    sgd_lr: float = 0.001
    sgd_seeds: int = 8
    sgd_eval_every: int = 200
    sgd_noise: float = 1.0
    directions: int = 4
    dissipation_method: Literal["dense", "lowrank"] = "dense"
    dissipation_rank: int = 64
    dissipation_vectors: int = 64
    # the engine's knobs: --set steps=... (or train.steps=...) reaches them
    train: TrainConfig = TrainConfig(
        steps=2000,
        eval_every=20,
        log_every=20,
        checkpoint_every=0,
    )

    # what `dyntheory resume --set` may change besides the engine's schedule keys
    RESUMABLE: ClassVar[tuple[str, ...]] = ("lr", "sgd_lr", "sgd_steps")

    def __post_init__(self):
        check_numbers(self)
        positive = (
            "d_in",
            "teacher_width",
            "n_train",
            "n_test",
            "width",
            "depth",
            "sgd_steps",
            "sgd_eval_every",
            "sgd_batch",
            "sgd_seeds",
            "directions",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.noise < 0 or self.sgd_noise < 0:
            raise ConfigError(
                f"noise and sgd_noise must be >= 0, got {self.noise}, {self.sgd_noise}."
            )
        if not (self.lr > 0 and self.sgd_lr > 0):
            raise ConfigError(f"lr and sgd_lr must be > 0, got {self.lr} and {self.sgd_lr}.")
        if not 0 < self.split_threshold < 1:
            raise ConfigError(f"split_threshold must lie in (0, 1), got {self.split_threshold}.")
        if not 2 <= self.sgd_batch <= self.n_train:
            raise ConfigError(
                f"sgd_batch must lie in [2, n_train={self.n_train}] (the noise estimate needs two "
                f"examples per minibatch), got {self.sgd_batch}."
            )
        if self.directions > self.n_train:
            raise ConfigError(
                f"directions ({self.directions}) must be <= n_train ({self.n_train}): they are "
                "eigenvectors of the n_train × n_train NTK."
            )
        check_dissipation(self, self.n_train)
        if self.train.probe_size not in (None, self.n_train):
            raise ConfigError(
                f"probe_size ({self.train.probe_size}) must be unset (the whole training set) "
                f"or n_train ({self.n_train}): the "
                "dissipation accumulator is exact only on the whole training set."
            )


PRESETS = {
    "tiny": Preset(
        replace(
            Config(),
            n_train=16,
            n_test=16,
            width=16,
            depth=1,
            lr=0.3,
            steps=60,
            probe_schedule="every:20",
            eval_every=20,
            log_every=20,
            fuse=20,
            sgd_steps=30,
            sgd_batch=8,
            sgd_lr=0.1,
            sgd_seeds=2,
            sgd_eval_every=1,
            directions=2,
        ),
        "smoke-test size: 60 GD steps and 30 SGD steps of a width-16 MLP (seconds)",
    ),
    "quick": Preset(
        Config(),
        "64 noisy examples, width-16 depth-2 tanh MLP: 2,000 GD steps probed every 20, then "
        "4,000 SGD steps (batch 32, 8 seeds) with the drift/noise split every step (≈ 20 s)",
    ),
    "paper": Preset(
        replace(
            Config(),
            n_train=256,
            n_test=256,
            width=512,
            depth=3,
            lr=0.02,
            steps=20_000,
            probe_schedule="every:100",
            eval_every=100,
            log_every=100,
            sgd_steps=10_000,
            sgd_batch=16,
            sgd_lr=0.02,
            sgd_seeds=5,
            sgd_eval_every=500,
            directions=8,
        ),
        "256 examples, width-512 depth-3 MLP, 20,000 GD steps, 10,000 SGD steps, 5 seeds "
        "(GPU advised)",
    ),
}
DEFAULT_PRESET = "quick"
