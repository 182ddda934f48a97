"""Config and presets of the toy teacher-student regression."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from dyntheory.engine.config import (
    ConfigError,
    Preset,
    TrainConfig,
    check_dissipation,
    check_numbers,
    check_range,
    replace,
)

PROBES = ("ntk", "dissipation", "norms", "gate", "poprisk")


@dataclasses.dataclass(frozen=True)
class Config:
    r"""Teacher-student regression, squared loss.

    Command (``quick``: under a minute on a 2-core CPU; ``tiny`` is the smoke-test size)::

        dyntheory run toy_regression --preset quick

    Expected result: full-batch GD fits the noisy labels; the test loss is lowest early, while
    much of the label-noise energy is still in the reservoir of W_S, and rises as the noise moves
    into the channel (harmful overfitting at this width and n); the coupling A = G_Q D† predicts
    the test displacement. Numbers: ``docs/results/toy_regression.md``.

    Attributes:
      d_in, teacher_width: the teacher ``tanh`` MLP ``d_in → teacher_width → 1``.
      n_train, n_test, noise: dataset sizes and the label-noise standard deviation (train only).
      data_seed: seed of the teacher and the data (shared by all training seeds).
      data_file: optional ``.npz`` with ``x``, ``y`` (and ``y_clean``, ``x_test``, ``y_test``) to
        use instead of the generated data; a missing file is an error before any compute.
      fresh: draw a fresh batch from the teacher every step (needs ``batch_size``) instead of
        training on the fixed set.
      width, depth, activation: the student MLP.
      optimizer, lr: ``sgd``, ``adam`` or ``prm`` (``prm`` with α = 1, no weight decay).
      probes: which probes to run (ntk, dissipation, norms, gate, poprisk).
      probe_schedule: when: ``every:N``, ``log:PER_DECADE`` or ``at:S1,S2,...``.
      split_mode, split_threshold: the channel/reservoir split of W_S
        (:func:`dyntheory.split.split`); by default a direction is in the channel once training
        has dissipated half of its loss.
      dissipation_method, dissipation_rank, dissipation_vectors: the W_S accumulator
        (:class:`dyntheory.probes.Dissipation`): ``"dense"`` forms (n·p)² kernels; ``"lowrank"``
        tracks ``dissipation_rank`` directions, adding ``dissipation_vectors`` kernel
        eigenvectors per probe step (as many as the rank fill the basis at the first probe step;
        rank = n·p is then exact).
    """

    d_in: int = 8
    teacher_width: int = 16
    n_train: int = 64
    n_test: int = 64
    noise: float = 0.3
    data_seed: int = 1234
    data_file: str = ""
    fresh: bool = False
    width: int = 128
    depth: int = 2
    activation: str = "tanh"
    optimizer: Literal["sgd", "adam", "prm"] = "sgd"
    lr: float = 0.05
    probes: tuple[str, ...] = ("ntk", "dissipation", "norms")
    probe_schedule: str = "every:50"
    split_mode: Literal["relative", "dissipated_fraction", "absolute"] = "dissipated_fraction"
    split_threshold: float = 0.5
    dissipation_method: Literal["dense", "lowrank"] = "dense"
    dissipation_rank: int = 64
    dissipation_vectors: int = 64
    # the engine's knobs: --set steps=... (or train.steps=...) reaches them
    train: TrainConfig = TrainConfig(
        steps=2000,
        eval_every=50,
        log_every=50,
        checkpoint_every=1000,
    )

    # what `dyntheory resume --set` may change (besides the engine's schedule keys)
    RESUMABLE: ClassVar[tuple[str, ...]] = ("lr",)

    def __post_init__(self):
        check_numbers(self)
        unknown = [p for p in self.probes if p not in PROBES]
        if unknown:
            raise ConfigError(f"unknown probe(s) {unknown}; choose from {', '.join(PROBES)}.")
        if self.fresh and self.train.batch_size is None:
            raise ConfigError("fresh=true draws a new batch each step: set batch_size too.")
        if "gate" in self.probes and self.optimizer != "prm":
            raise ConfigError("the gate probe reads PRM's state: set optimizer=prm.")
        if "poprisk" in self.probes and self.train.batch_size is None and not self.fresh:
            raise ConfigError("the poprisk probe needs minibatches: set batch_size.")
        for name in ("d_in", "teacher_width", "n_train", "n_test", "width", "depth"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        check_range(self, "noise", 0.0)
        check_range(self, "lr", 0.0, low_open=True)
        check_range(self, "split_threshold", 0.0, low_open=True)
        if "dissipation" in self.probes:
            check_dissipation(self, min(self.n_train, self.train.probe_size or self.n_train))


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
            fuse=20,
            log_every=10,
            eval_every=20,
            checkpoint_every=30,
            probe_schedule="every:20",
        ),
        "smoke-test size: 60 full-batch GD steps of a width-16 MLP (seconds)",
    ),
    "quick": Preset(
        Config(), "64 noisy examples, width-128 depth-2 tanh MLP, 2,000 GD steps (under a minute)"
    ),
    "poprisk": Preset(
        replace(
            Config(),
            n_train=256,
            n_test=4096,
            batch_size=16,
            probes=("poprisk",),
            probe_schedule="every:1",
            steps=10_000,
            seeds=3,
            eval_every=1,
            log_every=1,
            checkpoint_every=5000,
        ),
        "the validation-free estimate against held-out data (THEORY §6): minibatch SGD (16 of "
        "256 noisy examples), the LOO predicted change of population risk every step against "
        "the change of the clean test loss (4,096 examples), 10,000 steps, 3 seeds "
        "(results.json: poprisk_check)",
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
            seeds=3,
            probe_schedule="log:8",
            checkpoint_every=5000,
            eval_every=100,
            log_every=100,
        ),
        "256 examples, width-512 depth-3 MLP, 20,000 GD steps, 3 seeds (minutes; GPU advised)",
    ),
}
DEFAULT_PRESET = "quick"
