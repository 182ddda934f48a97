"""Config and presets of the DPO experiment: AdamW vs PRM on preferences with swapped labels."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from dyntheory.engine.config import ConfigError, Preset, TrainConfig, check_numbers, replace
from dyntheory.optim.config import RESUMABLE as OPTIMIZER_KEYS
from dyntheory.optim.config import OptimizerConfig, check_families
from experiments.dpo.data import Task, check_task


@dataclasses.dataclass(frozen=True)
class Config:
    r"""DPO on a synthetic preference task with a known reward, AdamW vs PRM, 30 % swapped pairs.

    Main job::

        dyntheory run dpo --preset quick    # ≈ 5 min on an idle 2-core CPU

    Expected result of ``quick`` (2,048 train pairs, 30 % swapped, a 2-block width-32 decoder,
    β = 0.1, 320 DPO steps of 64 pairs = 10 epochs, lrs 3e-6/1e-5/3e-5, 3 seeds): both optimizers
    pick the same lr by validation accuracy and reach about the same clean reward accuracy; PRM
    drifts a little less from the reference, far from the paper's factor; its gate passes a
    fraction of each update, like a smaller lr. Numbers and verdict: ``docs/results/dpo.md``.

    The paper-sized run (hours on a CPU, minutes on a GPU)::

        dyntheory run dpo --preset paper --out runs/dpo-paper

    (paper, Qwen2.5-0.5B-Instruct on UltraFeedback with 30 % swapped pairs: clean reward accuracy
    0.566 with AdamW, 0.641 with PRM; AdamW's mean |implicit reward drift| 3.05× PRM's.)

    Attributes:
      task: the preference task (:class:`experiments.dpo.data.Task`: vocab, prompt and response
        lengths, the hidden reward's weights, ``flip`` = the fraction of swapped train pairs, split
        sizes, seeds); its keys are set unqualified (``--set flip=0.2``) or as ``task.flip``.
      width, depth, heads: the decoder transformer (policy and reference), per-token readout.
      sft_steps, sft_batch, sft_lr: supervised fine-tuning (AdamW, no weight decay) of the
        reference on both responses of every train pair, from seed ``seed``.
      beta: DPO's β.
      optimizers, optim: every optimizer runs at every lr of ``optim.lr`` (``--set lr=...``; one
        compiled program per optimizer); the reported lr of each is the one with the best median
        final *validation* reward accuracy (the test pairs are not used to tune). The numbers of
        :class:`dyntheory.optim.config.OptimizerConfig` are shared by both (weight decay 0:
        DPO's usual AdamW); ``optim.prm_alpha`` ``None`` = ``b/(n_train − b)`` (paper Sec. 6, a
        fixed dataset).
      steps, batch_size, seeds: DPO steps, pairs per step, seeds; every DPO seed starts from the
        same reference and differs in its minibatch order (as one fixed pretrained reference in
        the paper).
    """

    # the preference task (experiments.dpo.data.Task): --set flip=... (or task.flip=...)
    task: Task = Task(n_train=8192, n_val=1024, n_test=4096)
    # model
    width: int = 64
    depth: int = 2
    heads: int = 4
    # reference (SFT)
    sft_steps: int = 3000
    sft_batch: int = 256
    sft_lr: float = 1e-3
    # DPO
    beta: float = 0.1
    optimizers: tuple[str, ...] = ("adamw", "prm")
    optim: OptimizerConfig = OptimizerConfig(lr=(1e-5, 3e-5, 1e-4, 3e-4), weight_decay=0.0)
    # the engine's knobs: --set steps=... (or train.steps=...) reaches them
    train: TrainConfig = TrainConfig(
        steps=2560,
        batch_size=64,
        seeds=3,
        eval_every=128,
        log_every=128,
        fuse=64,
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
        try:
            check_task(self.task)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if not self.beta > 0:
            raise ConfigError(f"beta (DPO's β) must be > 0, got {self.beta}.")
        try:
            check_families(self.optimizers, ("adamw", "prm", "grokfast"))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if self.width % self.heads:
            raise ConfigError(f"width {self.width} is not divisible by heads {self.heads}.")
        for name in ("sft_steps", "sft_batch", "width", "depth", "heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if not self.sft_lr > 0:
            raise ConfigError(f"sft_lr must be > 0, got {self.sft_lr}.")
        if self.train.batch_size is None or self.train.batch_size >= self.task.n_train:
            raise ConfigError(
                f"batch_size must be smaller than n_train={self.task.n_train} "
                f"(got {self.train.batch_size}): "
                "PRM's gate compares the gradient with its minibatch noise, and a full batch has "
                "none."
            )


_QUICK = replace(
    Config(),
    n_train=2048,
    n_val=512,
    n_test=1024,
    width=32,
    depth=2,
    heads=2,
    sft_steps=800,
    sft_batch=128,
    lr=(3e-6, 1e-5, 3e-5),
    steps=320,
    batch_size=64,
    seeds=3,
    eval_every=64,
    log_every=64,
    fuse=64,
)

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        replace(
            _QUICK,
            vocab=8,
            prompt_len=3,
            len_max=4,
            n_train=64,
            n_val=16,
            n_test=32,
            width=16,
            depth=1,
            heads=2,
            sft_steps=16,
            sft_batch=32,
            lr=(1e-3,),
            steps=16,
            batch_size=16,
            seeds=2,
            eval_every=8,
            log_every=8,
            fuse=8,
        ),
        "dyntheory run dpo --preset tiny: ≈ 1 min (compilation), 64 pairs, a 1-block "
        "width-16 decoder, 16 SFT + 16 DPO steps, 1 lr, 2 seeds; a smoke test, its numbers "
        "mean nothing",
    ),
    "quick": Preset(
        _QUICK,
        "dyntheory run dpo --preset quick: ≈ 5 min on an idle 2-core CPU; 2,048 train "
        "pairs (30 % swapped), a 2-block width-32 decoder, 800 SFT + 320 DPO steps (10 epochs), "
        "lrs 3e-6/1e-5/3e-5, 3 seeds (results: docs/results/dpo.md)",
    ),
    "paper": Preset(
        Config(),
        "dyntheory run dpo --preset paper: 8,192 train pairs (30 % swapped), a 2-block width-64 "
        "decoder, 3,000 SFT steps, 2,560 DPO steps of 64 pairs (20 epochs), lrs 1e-5 to 3e-4, "
        "3 seeds (hours on a CPU, minutes on a GPU; not run here)",
    ),
}
