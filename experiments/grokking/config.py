"""Config and presets of the grokking experiment: AdamW vs PRM on modular arithmetic."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from dyntheory.engine.config import (
    ConfigError,
    Preset,
    TrainConfig,
    check_numbers,
    replace,
)
from dyntheory.optim.config import RESUMABLE as OPTIMIZER_KEYS
from dyntheory.optim.config import OptimizerConfig, check_families
from experiments.grokking.data import OPS, check_task

CHOICES = ("adamw", "prm", "grokfast")  # grokfast: the positive control (Lee et al. 2024)


@dataclasses.dataclass(frozen=True)
class Config:
    r"""Grokking: ``a ∘ b mod p``, AdamW vs PRM on the same data and seeds.

    Main job (``bash scripts/demo.sh`` runs it without the W_S probes)::

        dyntheory run grokking --preset quick      # ≈ 4.5 min on this 2-core CPU, all included

    Expected result of ``quick`` (embedding MLP, ÷ mod 59, half the pairs, batch 512, 3 seeds, 5,000
    steps): both optimizers memorize first (PRM later than AdamW) and generalize thousands of
    steps later, PRM not sooner than AdamW, far from the paper's factor. ``results.json`` holds
    the per-seed and median steps; ``grokking.png`` the curves and PRM's gate; the numbers and
    the verdict are in ``docs/results/grokking.md``.

    The paper's setting (hours on a CPU; minutes on a GPU)::

        dyntheory run grokking --preset paper --out runs/grokking-paper

    (paper: 95 % test at step 5,950 with PRM vs 29,450 with AdamW, 4.9×; THEORY.md §8).

    The positive control, Grokfast's own task as its reference code runs it (× mod 97 with b ≠ 0,
    half the pairs, batch 512, lr 1e-3 with a 10-step warm-up; Adam with weight decay 0 against
    Grokfast-EMA α 0.98, λ 2 with ``torch.optim.Adam``'s L2 decay 0.005 after the filter; Lee et
    al. 2024 report 39,890 vs 910 steps to 95 % validation with their transformer)::

        dyntheory run grokking --preset grokfast-transformer   # their decoder (GPU; CPU: slow)
        dyntheory run grokking --preset grokfast               # the embedding MLP, 6,000 steps

    Expected: Grokfast groks within a few thousand steps where Adam without decay does not; the
    ablations (decoupled decay, no filter) and their numbers are in ``docs/results/grokking.md``
    ("PRM against controls"). With the embedding MLP neither optimizer generalizes at
    Grokfast's weight decays.

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
      optimizers: which of ``adamw``, ``prm``, ``grokfast`` to run (each on every seed).
      optim: the optimizers' numbers and knobs (:class:`dyntheory.optim.config.OptimizerConfig`;
        ``--set lr=...`` reaches ``optim.lr``): Power et al.'s AdamW (lr 1e-3, betas 0.9/0.98,
        weight decay 1) shared by every optimizer; PRM's ``prm_mask, prm_softness, prm_rho,
        prm_alpha`` (``None`` = ``b/(n − b)``, the paper's value for minibatches of ``b`` from a
        fixed set of ``n``; a full batch needs an explicit α), ``prm_gate_weight_decay``;
        Grokfast's ``grokfast_alpha, grokfast_lamb, grokfast_weight_decay`` (``None`` =
        ``weight_decay``) and ``grokfast_weight_decay_mode`` (``l2``: ``torch.optim.Adam``'s
        decay after the filter, as Grokfast's reference code ``main.py``); ``warmup_steps``, a
        linear lr warm-up from 0 (W_S must start after it: ``dissipation_start``). A tuple of
        values (``--set lr=1e-3,3e-3`` or ``--grid prm_alpha=0.1,1``) is a grid: every cell
        trains in one compiled program and lands in its own sub-run (``prm_lr0.001``, ...).
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
        first steps, with a tiny ``v̂``, leave the linearized step's stable region);
        ``dissipation_warm_start``, ``dissipation_refresh_tol``: the refresh seeded with the
        last one's Ritz vectors, and the adaptive schedule's tolerance (0: refresh at every
        probe step), :class:`dyntheory.probes.Dissipation`'s ``warm_start`` / ``refresh_tol``.
      dissipation_integrator: how W_S's propagator is integrated: ``"stepwise"`` (default:
        advanced at every training step inside the fused scan, :class:`dyntheory.probes.
        StepwiseDissipation`, the reference, one NTK-vector product over the training set per
        step and per tracked direction; chosen from the measured frontier of
        docs/results/ws-whole-run.md), ``"refresh"`` (the kernel refreshed at the probe steps
        and held fixed between them, :class:`dyntheory.probes.Dissipation`, which the
        ``dissipation_method/rank/vectors`` options configure) or ``"both"`` (one trajectory,
        both probes; results.json's ``dissipation`` block is then the refresh probe's);
        ``stepwise_rank``: its tracked directions (0: the loss identity only; with ``r``, the
        spectrum, channel and split of the same Gramian in ``r`` directions);
        ``stepwise_rule``: ``"midpoint"`` (default, second order) or ``"left"`` (first order);
        ``stepwise_gradient``: ``"batch"`` (each step's own minibatch, the step as taken) or
        ``"full"`` (the whole training set's gradient at every step);
        ``stepwise_check_spectrum``: ``k > 0`` checks the tracked block's top ``k`` eigenvalues
        against a complete basis carried beside it (``n (p − 1)`` more directions: for small
        tasks; results.json ``spectrum_rel_err``); ``stepwise_exact_topk``: ``k > 0`` keeps the
        path from ``dissipation_start`` on and, after training, takes the top ``k`` eigenvalues of
        the whole ``W_gg`` at the last step by the adjoint (:func:`dyntheory.probes.
        stepwise_path.exact_topk`; memory ``(2L + 1)`` parameter vectors for ``L`` steps, and
        about 60 forward and backward passes over the path: for small tasks), with the tracked
        block's and the complete basis's top ``k`` checked against it.
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
    optimizers: tuple[str, ...] = ("adamw", "prm")
    optim: OptimizerConfig = OptimizerConfig(lr=1e-3, b2=0.98, weight_decay=1.0)
    # what is measured
    train_target: float = 0.99
    test_target: float = 0.95
    probes_per_decade: int = 2
    probe_set: Literal["train", "subset"] = "train"
    dissipation_method: Literal["dense", "lowrank"] = "lowrank"
    dissipation_rank: int = 64
    dissipation_vectors: int = 8
    dissipation_start: int = 10
    dissipation_warm_start: bool = False
    dissipation_refresh_tol: float = 0.0
    dissipation_integrator: Literal["refresh", "stepwise", "both"] = "stepwise"
    stepwise_rank: int = 0
    stepwise_rule: Literal["left", "midpoint"] = "midpoint"
    stepwise_gradient: Literal["batch", "full"] = "batch"
    stepwise_check_spectrum: int = 0
    stepwise_exact_topk: int = 0
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
    RESUMABLE: ClassVar[tuple[str, ...]] = (*OPTIMIZER_KEYS, "train_target", "test_target")

    def __post_init__(self):
        check_numbers(self)
        try:
            check_task(self.p, self.op, self.train_fraction)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        try:
            check_families(self.optimizers, CHOICES)
        except ValueError as e:
            raise ConfigError(str(e)) from None
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
        if self.stepwise_check_spectrum < 0 or (
            self.stepwise_check_spectrum and not self.stepwise_rank
        ):
            raise ConfigError(
                "stepwise_check_spectrum=k compares the top k eigenvalues of the tracked "
                "directions with a complete basis: needs stepwise_rank >= 1 and k >= 0, got "
                f"k = {self.stepwise_check_spectrum} with stepwise_rank = {self.stepwise_rank}."
            )
        if self.stepwise_exact_topk < 0 or (
            self.stepwise_exact_topk and self.dissipation_integrator == "refresh"
        ):
            raise ConfigError(
                "stepwise_exact_topk=k takes the top k eigenvalues of the per-step reference's "
                "W_gg by the adjoint: needs k >= 0 and dissipation_integrator stepwise or both, "
                f"got k = {self.stepwise_exact_topk} with {self.dissipation_integrator!r}."
            )
        if self.poprisk and self.train.eval_every != 1:
            raise ConfigError(
                "poprisk=true compares the probe's predicted change with the test loss's change "
                f"step by step: set eval_every=1 (got {self.train.eval_every})."
            )
        warmup = self.optim.warmup_steps
        if warmup and (
            self.poprisk or (self.probes_per_decade and warmup > self.dissipation_start)
        ):
            raise ConfigError(
                f"warmup_steps={warmup}: the probes' model of the step (its decay lr · λ_wd) "
                "assumes the constant lr; turn the probes off (probes_per_decade=0, "
                f"poprisk=false) or start W_S after the warm-up (dissipation_start >= {warmup})."
            )
        if self.probes_per_decade < 0:
            raise ConfigError(f"probes_per_decade must be >= 0, got {self.probes_per_decade}.")

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
    optimizers=("adamw", "grokfast"),
    optim=OptimizerConfig(
        lr=1e-3,
        b2=0.98,
        weight_decay=0.0,
        warmup_steps=10,
        grokfast_alpha=0.98,
        grokfast_lamb=2.0,
        grokfast_weight_decay=0.005,
    ),
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
            stepwise_rank=2,
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
        "≈ 6 min (results.json: optimizers.adamw.poprisk_check)",
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
            optim__grokfast_weight_decay_mode="l2",
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
