"""Config and presets of the grokking experiment: AdamW vs PRM on modular arithmetic."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from dyntheory.engine.config import (
    ConfigError,
    Preset,
    TrainConfig,
    check_numbers,
    check_range,
    replace,
)
from experiments.grokking.data import OPS, check_task
from experiments.optimizers import OPTIMIZERS, check_optimizers
from experiments.optimizers import RESUMABLE as OPTIMIZER_KEYS


@dataclasses.dataclass(frozen=True)
class Config:
    r"""Grokking: ``a ∘ b mod p``, AdamW vs PRM on the same data and seeds.

    Main job (README's first command)::

        dyntheory run grokking --preset quick      # ≈ 4.5 min on this 2-core CPU, all included

    Expected result of ``quick`` (embedding MLP, ÷ mod 59, half the pairs, batch 512, 3 seeds, 5,000
    steps): both optimizers memorize first (99 % train at step 300 with AdamW, 800 with PRM) and
    generalize much later (95 % test at median step 3,600 with AdamW, 3,850 with PRM): the ratio
    AdamW/PRM is ≈ 0.94, not the paper's ≥ 2 (the package docstring says why). ``results.json``
    holds the per-seed and median steps; ``grokking.png`` the curves and PRM's gate.

    The paper's setting (hours on a CPU; minutes on a GPU)::

        dyntheory run grokking --preset paper --out runs/grokking-paper

    (paper: 95 % test at step 5,950 with PRM vs 29,450 with AdamW, 4.9×; THEORY.md §8).

    The positive control, Grokfast's own task as its reference code runs it (× mod 97 with b ≠ 0,
    half the pairs, batch 512, lr 1e-3 with a 10-step warm-up; Adam with weight decay 0 against
    Grokfast-EMA α 0.98, λ 2 with ``torch.optim.Adam``'s L2 decay 0.005 after the filter; Lee et
    al. 2024 report 39,890 vs 910 steps to 95 % validation with their transformer)::

        dyntheory run grokking --preset grokfast-transformer   # their decoder (GPU; CPU: slow)
        dyntheory run grokking --preset grokfast               # the embedding MLP, 6,000 steps

    Measured with ``grokfast-transformer --set optimizers=grokfast --set steps=2500`` (3 seeds,
    22 min on the shared 2-core CPU): 95 % test at steps 1,750 / 1,200 / 1,300 (paper: 910). The
    same filter with the decay decoupled (``grokfast_weight_decay_mode=decoupled``) memorizes and
    stays at 1.4 % test accuracy through 2,000 steps: the L2 term inside Adam's normalization is
    what makes it grok: Adam with that L2 term and no filter (``grokfast_lamb=0``) groks at
    750 / 1,000 / 800 (README "PRM against controls" has the baseline and the ablations). With
    the embedding MLP neither optimizer generalizes at Grokfast's weight decays.

    Attributes:
      p, op, train_fraction, split_seed: the task (:mod:`experiments.grokking.data`); ``op`` is
        ``add``, ``sub``, ``mul`` or ``div``.
      b_nonzero: leave out the pairs with ``b = 0`` for every ``op`` (always so for ``div``), as
        Grokfast's reference task does (``a × b mod 97`` over 97 · 96 pairs).
      model: ``"mlp"`` (embedding MLP on ``[a, b]``: shared embedding ``width`` per token,
        concatenated, one ReLU layer of ``hidden``, readout ``p``) or ``"transformer"`` (Power et
        al.'s decoder on ``[a, op, b, =]``: ``depth`` blocks of ``width`` with ``heads`` heads,
        logits of the last position).
      transformer_style: ``"gpt"`` (default: GPT-2's pre-LN blocks, embeddings N(0, 0.02²), a
        readout bias) or ``"grokfast"``, the decoder of Grokfast's reference code (``main.py``):
        embeddings N(0, 1) (``torch.nn.Embedding``'s init), blocks whose residual carries the
        normalized stream (``Transformer(residual="normed")``), a bias-free head.
      optimizers: which of ``adamw``, ``prm`` to run (each on every seed).
      lr, b1, b2, eps, weight_decay: shared by both optimizers (Power et al.'s AdamW).
      warmup_steps: linear learning-rate warm-up from 0 over this many updates, for every
        optimizer (``optax.linear_schedule``; Grokfast's reference code warms up over 10); 0 =
        constant ``lr``. The probes' preconditioners assume the constant ``lr``, so a warm-up
        longer than ``dissipation_start`` or with ``poprisk`` is rejected.
      prm_mask, prm_softness, prm_rho: PRM's own knobs (Algorithm 1; defaults the package's).
      grokfast_alpha, grokfast_lamb: Grokfast-EMA's EMA rate and amplification (Lee et al. 2024,
        arXiv:2405.20233), for ``optimizers=...,grokfast`` (the positive control).
      grokfast_weight_decay: the weight decay of Grokfast's inner AdamW only; ``None`` (default) =
        ``weight_decay``. Grokfast's paper compares Adam without weight decay (the baseline:
        ``weight_decay=0``) with Grokfast-EMA at wd 0.005, which this field expresses.
      grokfast_weight_decay_mode: ``"decoupled"`` (AdamW's decay, default) or ``"l2"``: the decay
        added to the filtered gradient before Adam, as ``torch.optim.Adam(weight_decay=...)``
        does in Grokfast's reference code (``main.py``: the filter, then ``Adam.step``).
      prm_gate_weight_decay: gate PRM's weight decay too (``prm(gate_weight_decay=True)``; ours,
        not Algorithm 1, which leaves the decoupled decay ungated: the default ``False``).
      prm_alpha: the gate's noise multiplier α; ``None`` = ``b/(n − b)``, the paper's value for
        minibatches of ``b`` from a fixed set of ``n`` (full batch has no sampling noise, so it
        then needs an explicit α).
      train_target, test_target: the accuracies whose first crossing ``results.json`` reports.
      probes_per_decade: the (costly) NTK / W_S probes run at step 0, at log-spaced steps
        (``Schedule.log``: 1, 10, 100, ... for 1 per decade; 1, 3, 10, 32, ... for 2) and at the
        last step; 0 turns them off. The steps do not depend on ``steps``, so a run extended by
        ``dyntheory resume --set steps=...`` equals a longer run from the start. The gate statistics
        are logged at every eval step.
      probe_set: ``"train"`` (default): the NTK spectrum (Lanczos, SLQ density, Hutchinson trace)
        and W_S are measured on the whole training set, W_S of the run itself (THEORY.md §10:
        a subset's own W_S describes another run); ``"subset"``: the first ``probe_size`` train
        examples with dense kernels (the older, cheaper and misleading measurement).
      dissipation_method, dissipation_rank: the W_S accumulator (``"lowrank"`` with a basis of
        ``dissipation_rank`` tracked directions, or ``"dense"``, which forms (n·p)² matrices);
        ``dissipation_vectors``: kernel eigenvectors added to the basis per probe step;
        ``dissipation_start``: W_S(s, T) starts at the first probe step ``s ≥`` this (Adam's
        first steps, with a tiny ``v̂``, leave the linearized step's stable region).
      dissipation_integrator: how W_S's propagator is integrated: ``"refresh"`` (the kernel
        refreshed at the probe steps and held fixed between them, :class:`dyntheory.probes.
        Dissipation`), ``"stepwise"`` (advanced at every training step inside the fused scan,
        :class:`dyntheory.probes.StepwiseDissipation`: the reference, one NTK-vector product
        over the training set per step and per tracked direction) or ``"both"``;
        ``stepwise_rank``: its tracked directions (0: the loss identity only);
        ``stepwise_rule``: ``"left"`` (first order) or ``"midpoint"`` (second order).
      ntk_spectrum: run the NTK spectrum probe at the probe steps.
      poprisk: run :class:`dyntheory.probes.PopulationRisk` every step (needs ``eval_every=1``);
        results.json's ``poprisk_check`` correlates its predicted change with the test loss's
        change per step and over windows of 10, 100 and 1,000 steps.
      norms: log :class:`dyntheory.probes.Norms` at every eval step: the global and per-tensor
        parameter and gradient norms (``probe/norms/param/global`` ...), to see what the weight
        decay and PRM's gate do to the weights while the network groks.
    """

    # task
    p: int = 97
    op: str = "div"
    train_fraction: float = 0.25
    split_seed: int = 0
    b_nonzero: bool = False
    # model
    model: Literal["mlp", "transformer"] = "transformer"
    transformer_style: Literal["gpt", "grokfast"] = "gpt"
    width: int = 128
    hidden: int = 512
    depth: int = 2
    heads: int = 4
    # optimizers
    optimizers: tuple[str, ...] = OPTIMIZERS
    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-8
    weight_decay: float = 1.0
    warmup_steps: int = 0
    prm_mask: Literal["snr", "soft", "hard"] = "snr"
    prm_softness: float = 1.0
    prm_rho: float = 0.99
    prm_alpha: float | None = None
    grokfast_alpha: float = 0.98
    grokfast_lamb: float = 2.0
    grokfast_weight_decay: float | None = None
    grokfast_weight_decay_mode: Literal["decoupled", "l2"] = "decoupled"
    prm_gate_weight_decay: bool = False
    # what is measured
    train_target: float = 0.99
    test_target: float = 0.95
    probes_per_decade: int = 2
    probe_set: Literal["train", "subset"] = "train"
    dissipation_method: Literal["dense", "lowrank"] = "lowrank"
    dissipation_rank: int = 64
    dissipation_vectors: int = 8
    dissipation_start: int = 10
    dissipation_integrator: Literal["refresh", "stepwise", "both"] = "refresh"
    stepwise_rank: int = 0
    stepwise_rule: Literal["left", "midpoint"] = "left"
    ntk_spectrum: bool = True
    poprisk: bool = False
    norms: bool = False
    # the engine's knobs: --set steps=... (or train.steps=...) reaches them
    train: TrainConfig = TrainConfig(
        steps=40_000,
        batch_size=512,
        seeds=3,
        eval_every=50,
        log_every=50,
        probe_size=4,
    )

    # what `dyntheory resume --set` may change (besides the engine's schedule keys): the
    # optimizers' hyperparameters (resume the last good checkpoint with a smaller lr) and targets
    RESUMABLE: ClassVar[tuple[str, ...]] = (
        "lr",
        *OPTIMIZER_KEYS,
        "grokfast_alpha",
        "grokfast_lamb",
        "grokfast_weight_decay",
        "train_target",
        "test_target",
    )

    def __post_init__(self):
        check_numbers(self)
        try:
            check_task(self.p, self.op, self.train_fraction)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        check_optimizers(self.optimizers)
        if self.width % self.heads and self.model == "transformer":
            raise ConfigError(f"width {self.width} is not divisible by heads {self.heads}.")
        for name in ("train_target", "test_target"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must lie in (0, 1], got {getattr(self, name)}.")
        for name in ("dissipation_rank", "dissipation_vectors"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.stepwise_rank < 0:
            raise ConfigError(f"stepwise_rank must be >= 0, got {self.stepwise_rank}.")
        if self.poprisk and self.train.eval_every != 1:
            raise ConfigError(
                "poprisk=true compares the probe's predicted change with the test loss's change "
                f"step by step: set eval_every=1 (got {self.train.eval_every})."
            )
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}.")
        if self.warmup_steps and (
            self.poprisk or (self.probes_per_decade and self.warmup_steps > self.dissipation_start)
        ):
            raise ConfigError(
                f"warmup_steps={self.warmup_steps}: the probes' preconditioners assume the "
                "constant lr; turn the probes off (probes_per_decade=0, poprisk=false) or start "
                f"W_S after the warm-up (dissipation_start >= {self.warmup_steps})."
            )
        if self.probes_per_decade < 0:
            raise ConfigError(f"probes_per_decade must be >= 0, got {self.probes_per_decade}.")
        check_range(self, ("lr", "eps", "prm_softness"), 0.0, low_open=True)
        check_range(
            self, ("weight_decay", "prm_alpha", "grokfast_lamb", "grokfast_weight_decay"), 0.0
        )
        check_range(self, ("b1", "b2", "prm_rho", "grokfast_alpha"), 0.0, 1.0, high_open=True)

    @property
    def op_symbol(self) -> str:
        return OPS[self.op]


_QUICK = replace(
    Config(),
    p=59,
    op="div",
    train_fraction=0.5,
    model="mlp",
    steps=5000,
    batch_size=512,
    seeds=3,
    eval_every=50,
    log_every=50,
    probes_per_decade=1,
    dissipation_rank=32,
)

# Grokfast's own setting (Lee et al. 2024, arXiv:2405.20233, Sec. 3 / Fig. 1): a·b mod 97, half of
# the pairs, batch 512, Adam lr 1e-3, betas (0.9, 0.98); the baseline without weight decay (their
# 39,890 iterations to 95 % validation), Grokfast-EMA (α 0.98, λ 2) with wd 0.005 (910).
GROKFAST_MLP_STEPS = 6000
_GROKFAST = replace(
    Config(),
    p=97,
    op="mul",
    b_nonzero=True,
    train_fraction=0.5,
    warmup_steps=10,
    optimizers=("adamw", "grokfast"),
    weight_decay=0.0,
    grokfast_alpha=0.98,
    grokfast_lamb=2.0,
    grokfast_weight_decay=0.005,
    batch_size=512,
    seeds=3,
    eval_every=50,
    log_every=50,
    probes_per_decade=0,
)

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        replace(
            _QUICK,
            p=11,
            train_fraction=0.5,
            width=16,
            hidden=32,
            steps=40,
            batch_size=24,
            seeds=2,
            eval_every=10,
            log_every=10,
            fuse=20,
            probes_per_decade=1,
            probe_size=2,
        ),
        "smoke test: ÷ mod 11, a 16-wide embedding MLP, 40 steps, 2 seeds (seconds; no grokking)",
    ),
    "quick": Preset(
        _QUICK,
        "main job: embedding MLP, ÷ mod 59, half the pairs, batch 512, AdamW vs PRM, 3 seeds, "
        "5,000 steps (a few minutes on a 2-core CPU)",
    ),
    "poprisk": Preset(
        replace(
            _QUICK,
            optimizers=("adamw",),
            steps=1000,
            seeds=1,
            eval_every=1,
            log_every=1,
            probes_per_decade=0,
            poprisk=True,
            checkpoint_every=1000,
        ),
        "the validation-free estimate against held-out data (THEORY §6) on the quick task: "
        "AdamW, the LOO predicted change of population risk every step against the change of "
        "the test loss, 1,000 steps (memorization; the test accuracy rises later), 1 seed, "
        "5.6 min (results.json: optimizers.adamw.poprisk_check)",
    ),
    "grokfast": Preset(
        replace(_GROKFAST, model="mlp", steps=GROKFAST_MLP_STEPS),
        "positive control on CPU: Grokfast's task (× mod 97, half the pairs, batch 512) with the "
        "embedding MLP; Adam (wd 0) vs Grokfast-EMA (α 0.98, λ 2, wd 0.005), 3 seeds, probes off",
    ),
    "grokfast-transformer": Preset(
        replace(
            _GROKFAST,
            model="transformer",
            transformer_style="grokfast",
            grokfast_weight_decay_mode="l2",
            steps=50_000,
            checkpoint_every=2000,
        ),
        "Grokfast's headline setting: × mod 97, half the pairs, batch 512, 2-layer width-128 "
        "4-head decoder, Adam (wd 0; paper 39,890 steps) vs Grokfast-EMA (wd 0.005; paper 910), "
        "3 seeds, 50,000 steps (hours on a CPU)",
    ),
    "paper": Preset(
        replace(Config(), eval_every=100, log_every=100, checkpoint_every=2000),
        "the paper's setting: ÷ mod 97, 25 % of pairs, 2-layer width-128 4-head decoder, "
        "batch 512, AdamW (lr 1e-3, wd 1, betas 0.9/0.98) vs PRM, 3 seeds, 40,000 steps "
        "(hours on a CPU)",
    ),
}
