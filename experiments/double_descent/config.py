"""Config and presets of the double-descent experiment."""

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
from dyntheory.names import FEATURE_MAPS

TASKS = ("regression", "binary")  # experiments.double_descent.data draws them
RATIOS = (0.125, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 2.0, 4.0, 8.0)


@dataclasses.dataclass(frozen=True)
class ExactConfig:
    """The exact random-features sweep (:mod:`experiments.double_descent.exact`).

    Attributes:
      n_train, n_test, d_in: teacher data sizes (:mod:`experiments.double_descent.data`).
      label_noise: noise level ``p`` (regression: noise variance ``p`` × clean variance; binary:
        fraction of labels flipped).
      tasks, feature_maps: which (task, feature map) pairs to sweep.
      n_ratios: the grid ``N/n``; the checks need ``1/4``, ``1`` and ``4`` in it.
      seeds, seed: independent draws of data and features; root seed.
      bandwidth: the Fourier features' ``ℓ`` (``None``: ``√d``).
    """

    n_train: int = 200
    n_test: int = 500
    d_in: int = 50
    label_noise: float = 0.2
    tasks: tuple[str, ...] = TASKS
    feature_maps: tuple[str, ...] = FEATURE_MAPS
    n_ratios: tuple[float, ...] = RATIOS
    seeds: int = 6
    seed: int = 0
    bandwidth: float | None = None

    def __post_init__(self):
        check_numbers(self)
        for name in ("n_train", "n_test", "d_in", "seeds"):
            if getattr(self, name) < 1:
                raise ConfigError(f"exact.{name} must be >= 1, got {getattr(self, name)}.")
        if not 0.0 <= self.label_noise < 1.0:
            raise ConfigError(f"exact.label_noise must lie in [0, 1), got {self.label_noise}.")
        bad = [t for t in self.tasks if t not in TASKS] + [
            f for f in self.feature_maps if f not in FEATURE_MAPS
        ]
        if bad or not self.tasks or not self.feature_maps:
            raise ConfigError(
                f"exact.tasks ⊆ {TASKS} and exact.feature_maps ⊆ {FEATURE_MAPS}, non-empty; "
                f"got {self.tasks}, {self.feature_maps}."
            )
        if not self.n_ratios or any(not r > 0 for r in self.n_ratios):
            raise ConfigError(f"exact.n_ratios must be positive numbers, got {self.n_ratios}.")
        if self.bandwidth is not None and not self.bandwidth > 0:
            raise ConfigError(f"exact.bandwidth must be positive or none, got {self.bandwidth}.")


@dataclasses.dataclass(frozen=True)
class Config:
    r"""Double descent, model-wise (exact random features) and model/epoch-wise (trained MLP).

    Command, runtime and expected result (``quick``: about 2 minutes on an idle 2-core CPU)::

        dyntheory run double_descent --preset quick

    Exact part (min-norm random-features regression, ``n = 200``, 20 % label noise, 6 seeds):
    test error vs ``N`` peaks at ``N = n`` for ReLU and Fourier features on both tasks, ≥ 3× the
    error at ``N = n/4`` and at ``N = 4n`` (``exact.<task>/<map>.checks``); the label-noise
    energy carried to the test outputs through the channel (``noise_test_energy``) peaks at
    ``N = n`` too, and the noise-in-channel fraction (its share of the test-output energy) peaks
    inside the threshold window ``[0.8n, 1.25n]``. The train-side dissipated noise fraction of
    ``W_∞`` rises to 1 and stays there (it cannot peak: ``W_∞ = (n/2)Π_range(K)``; see
    :mod:`dyntheory.randfeat`).

    Trained part (one-hidden-layer ReLU MLP, squared loss, full-batch GD, ``n = 128``): with
    20 % label noise the final test MSE vs width peaks near the interpolation threshold
    (``#params ≈ n``); without label noise the curve has no such peak. Per width: the four-cell
    decomposition from the dissipation probe and the noise-in-channel fraction.

    ``paper``: ``n = 1000`` for the exact part, more widths and steps (an hour on a CPU).
    ``tiny``: the smoke test (seconds).

    Attributes:
      exact: the random-features sweep (:class:`ExactConfig`); ``run_exact`` turns it off.
      mlp_n_train, mlp_n_test, mlp_d_in, mlp_task, data_seed: the trained part's teacher data.
      mlp_label_noises: noise levels compared (0 = clean).
      widths: hidden widths swept; ``activation`` of the hidden layer.
      optimizer, lr: ``gd`` (full-batch GD with step ``lr · n/λ_max(K_0)``, per width) or ``adam``
        (step ``lr``; see :mod:`experiments.double_descent.trained` for the probe's caveat).
      probe_schedule: when the dissipation probe refreshes the NTK (``log:K``, ``every:N``).
      split_threshold: channel = dissipated fraction ``λ(W_S)/(n/2)`` above this.
      poprisk: on the noisy runs, also the LOO PopulationRisk probe every step (needs
        ``eval_every=1``): ``poprisk_check`` correlates its predicted change with the test loss's
        change (THEORY.md §6) and ``stopping`` gains the LOO rule next to the W_S rule. Every
        noisy run's ``stopping`` reads the test loss at each rule's step from the last
        evaluation at or before it: for a fine comparison, probe and evaluate on one grid
        (``probe_schedule=every:N``, ``eval_every=N``).
      interp_tol: train MSE below which a width counts as interpolating.
      dissipation_method, dissipation_rank, dissipation_vectors: the W_S accumulator of the
        trained part (:class:`dyntheory.probes.Dissipation`): ``"dense"`` or ``"lowrank"`` with a
        basis of ``dissipation_rank`` directions, ``dissipation_vectors`` kernel eigenvectors
        added per probe step (rank = mlp_n_train with as many vectors is exact).
    """

    exact: ExactConfig = dataclasses.field(default_factory=ExactConfig)
    run_exact: bool = True
    run_trained: bool = True
    mlp_n_train: int = 128
    mlp_n_test: int = 512
    mlp_d_in: int = 8
    mlp_task: Literal["regression", "binary"] = "regression"
    mlp_label_noises: tuple[float, ...] = (0.0, 0.2)
    data_seed: int = 0
    widths: tuple[int, ...] = (2, 4, 8, 12, 16, 20, 24, 32, 64, 256)
    activation: str = "relu"
    optimizer: Literal["gd", "adam"] = "gd"
    lr: float = 0.25
    probe_schedule: str = "log:6"
    split_threshold: float = 0.5
    poprisk: bool = False
    interp_tol: float = 1e-2
    dissipation_method: Literal["dense", "lowrank"] = "dense"
    dissipation_rank: int = 128
    dissipation_vectors: int = 128
    # the engine's knobs: --set steps=... (or train.steps=...) reaches them
    train: TrainConfig = TrainConfig(
        steps=40_000,
        seeds=2,
        fuse=1000,
        eval_every=1000,
        log_every=1000,
    )

    # what `dyntheory resume --set` may change besides the engine's schedule keys
    RESUMABLE: ClassVar[tuple[str, ...]] = ("lr",)

    def __post_init__(self):
        check_numbers(self)
        for name in ("mlp_n_train", "mlp_n_test", "mlp_d_in"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if not self.widths or any(w < 1 for w in self.widths):
            raise ConfigError(f"widths must be positive integers, got {self.widths}.")
        if not self.mlp_label_noises or any(not 0 <= p < 1 for p in self.mlp_label_noises):
            raise ConfigError(f"mlp_label_noises must lie in [0, 1), got {self.mlp_label_noises}.")
        if not self.lr > 0 or (self.optimizer == "gd" and not self.lr < 2):
            raise ConfigError(
                f"lr must be positive (and below 2 for gd: it is η·λ_max(K_0)/n), got {self.lr}."
            )
        if not 0 < self.split_threshold < 1:
            raise ConfigError(f"split_threshold must lie in (0, 1), got {self.split_threshold}.")
        if self.poprisk and self.train.eval_every != 1:
            raise ConfigError(
                "poprisk=true compares the probe's predicted change with the test loss's change "
                f"step by step: set eval_every=1 (got {self.train.eval_every})."
            )
        if self.run_trained:
            check_dissipation(self, self.mlp_n_train)
        if not (self.run_exact or self.run_trained):
            raise ConfigError("run_exact and run_trained are both false: nothing to do.")


_TINY = replace(
    Config(),
    exact=ExactConfig(
        n_train=16, n_test=40, d_in=6, seeds=2, n_ratios=(0.25, 1.0, 4.0), tasks=("regression",)
    ),
    mlp_n_train=16,
    mlp_n_test=16,
    mlp_d_in=4,
    widths=(2, 8),
    steps=40,
    seeds=2,
    fuse=20,
    eval_every=20,
    log_every=20,
    probe_schedule="every:20",
)

PRESETS: dict[str, Preset] = {
    "tiny": Preset(_TINY, "smoke test: n = 16, three N, two widths, 40 steps (seconds)"),
    "quick": Preset(
        Config(),
        "exact RF sweep n = 200 (2 tasks × 2 feature maps × 6 seeds) and a 10-width MLP sweep, "
        "n = 128, 40,000 GD steps, 2 seeds, with and without 20 % label noise (≈ 2 min)",
    ),
    "paper": Preset(
        replace(
            Config(),
            exact=ExactConfig(n_train=1000, n_test=2000, d_in=100, seeds=20),
            mlp_n_train=256,
            mlp_n_test=1024,
            mlp_d_in=16,
            widths=(2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 24, 28, 32, 48, 64, 128, 256, 512),
            steps=200_000,
            seeds=4,
            probe_schedule="log:16",
            fuse=2000,
            eval_every=2000,
            log_every=2000,
        ),
        "exact RF sweep n = 1000 (20 seeds), an 18-width MLP sweep with n = 256, 200,000 steps, "
        "4 seeds (an hour or more on a CPU; minutes on a GPU)",
    ),
}
DEFAULT_PRESET = "quick"
