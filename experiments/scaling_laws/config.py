"""Config and presets of the scaling-laws experiment."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from dyntheory.engine.config import ConfigError, Preset, TrainConfig, check_numbers, replace


def _positive(obj, prefix: str, names) -> None:
    for name in names:
        if not getattr(obj, name) > 0:
            raise ConfigError(f"{prefix}{name} must be positive, got {getattr(obj, name)}.")


def _sizes(obj, prefix: str, names, least: int = 4) -> None:
    for name in names:
        v = getattr(obj, name)
        if len(v) < least or any(s < 1 for s in v) or list(v) != sorted(set(v)):
            raise ConfigError(
                f"{prefix}{name} needs >= {least} distinct positive sizes in increasing order, "
                f"got {v}."
            )


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    r"""Exact teacher-student sweeps (:mod:`experiments.scaling_laws.teacher`).

    Theory (noiseless, ``λ_k = k^{−a}``, target power ``c_k = k^{−b}``, ``1 < b < 2a + 1``)::

        L(D) ∝ D^{−(b−1)},   L(N) ∝ N^{−(b−1)},   L(t) ∝ t^{−(b−1)/a}

    (data: ridgeless/optimally regularized regression; model: the best ``N``-random-projection
    student; time: gradient flow). Defaults ``a = 1.5``, ``b = 2``: exponents 1, 1 and 2/3.

    Attributes:
      M: input dimension (the stand-in for ∞; keep it ≥ 8× the largest D and N).
      a, b: covariance and target-power exponents.
      data_sizes, model_sizes: the D and N grids of the one-variable sweeps.
      gd_steps: the log-spaced GD steps of the time sweep, on ``D_time`` samples at ``lr``·(stable
        maximum) step size.
      joint_model_sizes, joint_data_sizes: the (N, D) grid of the joint sweep (oracle ridge over
        ``n_ridges`` values of ``10^ridge_min … 10^ridge_max`` times ``s_max²``).
      seeds, seed: seeds (vmapped) and the root seed.
      fit_lo, fit_hi_frac: rank window of the spectral exponent fits.
      holdout: how many of the largest sizes the extrapolation check holds out.
    """

    M: int = 4096
    a: float = 1.5
    b: float = 2.0
    data_sizes: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    model_sizes: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512)
    gd_steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
    D_time: int = 1024
    lr: float = 1.0
    joint_model_sizes: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
    joint_data_sizes: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    ridge_min: float = -7.0
    ridge_max: float = 1.0
    n_ridges: int = 25
    seeds: int = 4
    seed: int = 0
    fit_lo: int = 2
    fit_hi_frac: float = 0.25
    holdout: int = 1

    def __post_init__(self):
        check_numbers(self)
        _positive(self, "ts.", ("M", "a", "b", "D_time", "lr", "n_ridges", "seeds", "holdout"))
        if not 1 < self.b < 2 * self.a + 1:
            raise ConfigError(
                f"ts.b must satisfy 1 < b < 2a + 1 for the theory used here, got a={self.a}, "
                f"b={self.b}."
            )
        if self.lr >= 2:
            raise ConfigError(f"ts.lr must be < 2 (GD diverges beyond), got {self.lr}.")
        _sizes(
            self,
            "ts.",
            ("data_sizes", "model_sizes", "gd_steps", "joint_model_sizes", "joint_data_sizes"),
        )
        big = max(
            *self.data_sizes,
            *self.model_sizes,
            *self.joint_model_sizes,
            *self.joint_data_sizes,
            self.D_time,
        )
        if self.M < 2 * big:
            raise ConfigError(f"ts.M = {self.M} must be at least 2× the largest size ({big}).")

    @property
    def theory(self) -> dict[str, float]:
        return {
            "data_exponent": self.b - 1,
            "model_exponent": self.b - 1,
            "time_exponent": (self.b - 1) / self.a,
            "covariance_exponent": self.a,
        }


@dataclasses.dataclass(frozen=True)
class ClassifyConfig:
    """The MLP classification sweep (:mod:`experiments.scaling_laws.classify`).

    Attributes:
      d_in, classes, a, b, teacher_width, n_test, data_seed: the teacher task: inputs with
        covariance ``∝ k^{−a}``, labels the argmax of a random ReLU network of ``teacher_width``
        units whose ``j``-th unit has output weights ``∝ j^{−b/2}``.
      widths, data_sizes: the (N, D) grid (≥ 3 each; the one-variable fits need 4 sizes and the
        extrapolation checks 5); N is the hidden width.
      lr: Adam's learning rate (full batch, ``steps`` of the top-level config).
      ntk_top_k, ntk_fit_lo, ntk_fit_hi: NTK eigenvalues kept by the probe and the rank window of
        their power-law fit; spectral_n: examples for the init-NTK spectral prediction.
    """

    d_in: int = 32
    classes: int = 4
    a: float = 1.0
    b: float = 1.5
    teacher_width: int = 256
    n_test: int = 2048
    data_seed: int = 0
    widths: tuple[int, ...] = (8, 16, 32, 64, 128)
    data_sizes: tuple[int, ...] = (64, 128, 256, 512, 1024)
    lr: float = 1e-3
    ntk_top_k: int = 64
    ntk_fit_lo: int = 2
    ntk_fit_hi: int = 32
    spectral_n: int = 512

    def __post_init__(self):
        check_numbers(self)
        _positive(
            self,
            "cls.",
            ("d_in", "a", "b", "teacher_width", "n_test", "lr", "ntk_top_k", "spectral_n"),
        )
        if self.classes < 2:
            raise ConfigError(f"cls.classes must be >= 2, got {self.classes}.")
        if not 1 <= self.ntk_fit_lo < self.ntk_fit_hi:
            raise ConfigError("cls.ntk_fit_lo must be >= 1 and below cls.ntk_fit_hi.")
        _sizes(self, "cls.", ("widths", "data_sizes"), least=3)


@dataclasses.dataclass(frozen=True)
class Config:
    r"""Scaling laws L(N, D, t): exact teacher-student sweeps and an MLP classification sweep.

    Command, runtime and expected result (``quick``: ≈ 2 min on an idle 2-core CPU)::

        dyntheory run scaling_laws --preset quick

    Teacher-student (``a = 1.5``, ``b = 2``; theory: data and model exponents ``b − 1 = 1``, time
    exponent ``(b − 1)/a = 2/3``; see :class:`TeacherConfig`): the fitted exponents land within
    ``tolerance`` of theory (``teacher_student.<sweep>.within_tolerance`` in results.json), with
    bootstrap intervals over seeds and the largest size held out for extrapolation.
    Classification (one-hidden-layer MLP, 4-way labels of a random ReLU teacher, early-stopped
    test cross-entropy): no theory; data and model exponents with the init NTK's spectral
    prediction beside them. Numbers: ``docs/results/scaling_laws.md``.

    ``paper``: larger M, D, N and the MLP grid (an hour on a CPU); ``tiny``: smoke test.

    Attributes:
      ts: :class:`TeacherConfig`; ``run_teacher`` turns it off.
      cls: :class:`ClassifyConfig`; ``run_classify`` turns it off.
      n_boot: bootstrap replicates (resampling seeds) for every confidence interval.
      tolerance: the acceptance band on the teacher-student exponents.
      huber_delta: δ of the Huber loss on log residuals.
    """

    ts: TeacherConfig = dataclasses.field(default_factory=TeacherConfig)
    cls: ClassifyConfig = dataclasses.field(default_factory=ClassifyConfig)
    run_teacher: bool = True
    run_classify: bool = True
    n_boot: int = 200
    tolerance: float = 0.1
    huber_delta: float = 1e-3
    # the engine's knobs: --set steps=... (or train.steps=...) reaches them
    train: TrainConfig = TrainConfig(
        steps=1000,
        seeds=2,
        fuse=250,
        eval_every=25,
        log_every=25,
        probe_size=128,
    )

    # what `dyntheory resume --set` may change besides the engine's schedule keys
    RESUMABLE: ClassVar[tuple[str, ...]] = ("cls.lr",)

    def __post_init__(self):
        check_numbers(self)
        if self.n_boot < 2:
            raise ConfigError(f"n_boot must be >= 2, got {self.n_boot}.")
        if not (self.run_teacher or self.run_classify):
            raise ConfigError("run_teacher and run_classify are both false: nothing to do.")
        _positive(self, "", ("tolerance", "huber_delta"))


_TINY = replace(
    Config(),
    ts=TeacherConfig(
        M=256,
        data_sizes=(8, 16, 32, 64, 128),
        model_sizes=(4, 8, 16, 32, 64),
        gd_steps=(1, 4, 16, 64, 256),
        D_time=64,
        joint_model_sizes=(4, 8, 16, 32),
        joint_data_sizes=(8, 16, 32, 64),
        n_ridges=9,
        seeds=2,
    ),
    cls=ClassifyConfig(
        d_in=8,
        classes=3,
        n_test=64,
        widths=(4, 8, 16),
        data_sizes=(16, 32, 64),
        ntk_top_k=16,
        ntk_fit_hi=8,
        spectral_n=64,
    ),
    n_boot=10,
    steps=40,
    fuse=20,
    eval_every=10,
    log_every=10,
    seeds=2,
    probe_size=16,
)

PRESETS: dict[str, Preset] = {
    "tiny": Preset(_TINY, "smoke test: M = 256, small grids, a 3×3 MLP grid of 40 steps"),
    "quick": Preset(
        Config(),
        "teacher-student M = 4096 (D ≤ 512, N ≤ 512, t ≤ 4096, 6×6 joint grid, 4 seeds) and a "
        "5×5 MLP width × data grid, 1,000 Adam steps, 2 seeds (≈ 5–8 min)",
    ),
    "paper": Preset(
        replace(
            Config(),
            ts=TeacherConfig(
                M=16384,
                data_sizes=(16, 32, 64, 128, 256, 512, 1024, 2048),
                model_sizes=(8, 16, 32, 64, 128, 256, 512, 1024, 2048),
                gd_steps=tuple(2**k for k in range(15)),
                D_time=2048,
                joint_model_sizes=(8, 16, 32, 64, 128, 256, 512),
                joint_data_sizes=(16, 32, 64, 128, 256, 512, 1024),
                seeds=16,
            ),
            cls=ClassifyConfig(
                widths=(8, 16, 32, 64, 128, 256, 512),
                data_sizes=(64, 128, 256, 512, 1024, 2048, 4096),
            ),
            steps=4000,
            seeds=4,
            n_boot=500,
        ),
        "teacher-student M = 16384 up to D, N = 2048 (16 seeds) and a 7×7 MLP grid, 4,000 "
        "steps, 4 seeds (an hour or more on a CPU; minutes on a GPU)",
    ),
}
DEFAULT_PRESET = "quick"
