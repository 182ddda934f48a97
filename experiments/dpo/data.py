r"""A preference task with a known reward: token prompts, two responses each, Bradley–Terry labels.

**Tokens.** ``vocab`` content tokens ``0 … V−1`` and three specials: ``PAD = V``, ``SEP = V + 1``,
``EOS = V + 2`` (the model's vocabulary is ``V + 3``). A prompt ``x`` is ``prompt_len`` content
tokens drawn uniformly. A response ``y`` has a length ``ℓ`` uniform in ``[len_min, len_max]``;
each of its tokens is, with probability ``copy_prob``, a uniformly chosen token of the prompt, and
otherwise a uniform content token. One example is the sequence, of length
``T = prompt_len + len_max + 2``::

    [x_1 … x_P, SEP, y_1 … y_ℓ, EOS, PAD … PAD]

**Hidden reward** (fixed by ``reward_seed``; ``θ_v ~ N(0, 1)`` per content token):

.. math::  r(x, y) = \frac1\ell \sum_{t=1}^{\ell} \theta_{y_t}
           + \kappa\, \frac1\ell \sum_{t=1}^{\ell} 1[y_t \in x] + \lambda\, \frac{\ell}{\ell_{\max}}

a bag-of-tokens term, a prompt-relevance (copy) term of weight ``κ = copy_weight`` and a length
term of weight ``λ = length_weight``.

**Labels.** Each prompt gets two independent responses ``a, b``; ``a`` is *chosen* with the
Bradley–Terry probability ``σ(s (r(x, a) − r(x, b)))``, ``s = bt_scale`` (else ``b``). The pairs
are split into ``n_train`` train, ``n_val`` validation and ``n_test`` test pairs. Exactly
``round(flip · n_train)`` train pairs, chosen uniformly without replacement, then have chosen and
rejected swapped; the validation and test pairs are never swapped ("clean": their labels are the
Bradley–Terry draws). Everything is drawn from ``numpy.random.default_rng(data_seed)``.

Example:
  >>> d = make_task(Task(vocab=8, prompt_len=4, len_min=2, len_max=5, n_train=10, n_val=4,
  ...                    n_test=6, flip=0.3))
  >>> d.train["w"].shape, int(d.train["flipped"].sum()), int(d.test["flipped"].sum())
  ((10, 11), 3, 0)
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class Task:
    """The knobs of the preference task (module docstring); :func:`check_task` validates them."""

    vocab: int = 16
    prompt_len: int = 6
    len_min: int = 2
    len_max: int = 8
    copy_prob: float = 0.3
    copy_weight: float = 1.0
    length_weight: float = 0.5
    bt_scale: float = 4.0
    flip: float = 0.3
    n_train: int = 2048
    n_val: int = 512
    n_test: int = 1024
    reward_seed: int = 0
    data_seed: int = 0

    @property
    def pad(self) -> int:
        return self.vocab

    @property
    def sep(self) -> int:
        return self.vocab + 1

    @property
    def eos(self) -> int:
        return self.vocab + 2

    @property
    def vocab_size(self) -> int:
        """Embedding rows and logits: content tokens plus PAD, SEP, EOS."""
        return self.vocab + 3

    @property
    def seq_len(self) -> int:
        """``T = prompt_len + 1 (SEP) + len_max + 1 (EOS)``."""
        return self.prompt_len + self.len_max + 2


def check_task(task: Task) -> None:
    """Raise ``ValueError`` naming the problem if ``task`` is not a valid preference task."""
    if task.vocab < 1:
        raise ValueError(f"the vocabulary is empty (vocab={task.vocab}); it needs >= 2 tokens.")
    if task.vocab < 2:
        raise ValueError(f"vocab must be >= 2 content tokens, got {task.vocab}.")
    if task.prompt_len < 1:
        raise ValueError(f"prompt_len must be >= 1, got {task.prompt_len}.")
    if not 1 <= task.len_min <= task.len_max:
        raise ValueError(
            f"response lengths need 1 <= len_min <= len_max, got len_min={task.len_min}, "
            f"len_max={task.len_max}."
        )
    if not 0.0 <= task.flip < 1.0:
        raise ValueError(
            f"flip (fraction of swapped train pairs) must lie in [0, 1), got {task.flip}."
        )
    if not 0.0 <= task.copy_prob <= 1.0:
        raise ValueError(f"copy_prob must lie in [0, 1], got {task.copy_prob}.")
    if not task.bt_scale > 0:
        raise ValueError(
            f"bt_scale (Bradley–Terry inverse temperature) must be > 0, got {task.bt_scale}."
        )
    for name in ("n_train", "n_val", "n_test"):
        if getattr(task, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(task, name)}.")


class Responses(NamedTuple):
    tokens: np.ndarray  # (n, len_max) int32 content tokens, PAD after the length
    length: np.ndarray  # (n,) int32 in [len_min, len_max]


def reward_weights(task: Task) -> np.ndarray:
    """``θ`` ``(vocab,)``: the hidden per-token reward, ``N(0, 1)`` from ``reward_seed``."""
    return np.random.default_rng([task.reward_seed, 1]).standard_normal(task.vocab)


def sample_responses(task: Task, prompts: np.ndarray, rng: np.random.Generator) -> Responses:
    """One response per prompt ``(n, prompt_len)`` (module docstring)."""
    n = len(prompts)
    length = rng.integers(task.len_min, task.len_max + 1, size=n)
    fresh = rng.integers(0, task.vocab, size=(n, task.len_max))
    copied = np.take_along_axis(prompts, rng.integers(0, task.prompt_len, (n, task.len_max)), 1)
    tokens = np.where(rng.random((n, task.len_max)) < task.copy_prob, copied, fresh)
    tokens = np.where(np.arange(task.len_max)[None, :] < length[:, None], tokens, task.pad)
    return Responses(tokens.astype(np.int32), length.astype(np.int32))


def true_reward(task: Task, prompts: np.ndarray, resp: Responses) -> np.ndarray:
    """``r(x, y)`` ``(n,)`` (module docstring's equation)."""
    theta = reward_weights(task)
    live = np.arange(task.len_max)[None, :] < resp.length[:, None]  # (n, len_max)
    tok = np.where(live, resp.tokens, 0)
    in_prompt = (tok[:, :, None] == prompts[:, None, :]).any(axis=2)  # (n, len_max)
    ell = resp.length.astype(np.float64)
    bag = (theta[tok] * live).sum(axis=1) / ell
    copy = (in_prompt & live).sum(axis=1) / ell
    return bag + task.copy_weight * copy + task.length_weight * ell / task.len_max


def sequences(task: Task, prompts: np.ndarray, resp: Responses) -> np.ndarray:
    """``[x, SEP, y, EOS, PAD …]`` ``(n, T)`` int32."""
    n = len(prompts)
    body = np.concatenate([resp.tokens, np.full((n, 1), task.pad)], axis=1)  # (n, len_max + 1)
    body[np.arange(n), resp.length] = task.eos
    sep = np.full((n, 1), task.sep)
    return np.concatenate([prompts, sep, body], axis=1).astype(np.int32)


class PreferenceData(NamedTuple):
    """Three splits of ``{"w", "l": (n, T) int32 chosen / rejected sequences, "r_w", "r_l": (n,)
    float32 true rewards, "flipped": (n,) float32 1 where chosen and rejected were swapped}``."""

    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    task: Task


def make_task(task: Task) -> PreferenceData:
    """Prompts, response pairs, Bradley–Terry labels, the split and the flips (module docstring)."""
    check_task(task)
    rng = np.random.default_rng([task.data_seed, 2])
    n = task.n_train + task.n_val + task.n_test
    prompts = rng.integers(0, task.vocab, size=(n, task.prompt_len))
    a, b = sample_responses(task, prompts, rng), sample_responses(task, prompts, rng)
    ra, rb = true_reward(task, prompts, a), true_reward(task, prompts, b)
    a_chosen = rng.random(n) < 1.0 / (1.0 + np.exp(-task.bt_scale * (ra - rb)))
    sa, sb = sequences(task, prompts, a), sequences(task, prompts, b)
    w = np.where(a_chosen[:, None], sa, sb)
    lo = np.where(a_chosen[:, None], sb, sa)
    rw, rl = np.where(a_chosen, ra, rb), np.where(a_chosen, rb, ra)
    flipped = np.zeros(n, bool)
    flipped[rng.choice(task.n_train, round(task.flip * task.n_train), replace=False)] = True
    w, lo = np.where(flipped[:, None], lo, w), np.where(flipped[:, None], w, lo)
    rw, rl = np.where(flipped, rl, rw), np.where(flipped, rw, rl)
    cols = {
        "w": w.astype(np.int32),
        "l": lo.astype(np.int32),
        "r_w": rw.astype(np.float32),
        "r_l": rl.astype(np.float32),
        "flipped": flipped.astype(np.float32),
    }
    cut = np.cumsum([task.n_train, task.n_val])
    parts = [{k: v[s] for k, v in cols.items()} for s in np.split(np.arange(n), cut)]
    return PreferenceData(*parts, task)


def agreement(split: dict[str, np.ndarray]) -> float:
    """Fraction of pairs whose label agrees with the true reward (``r_w > r_l``)."""
    return float(np.mean(split["r_w"] > split["r_l"]))
