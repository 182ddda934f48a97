r"""Sequence log-probabilities, the SFT loss and the DPO loss (Rafailov et al. 2023).

A causal language model ``apply_fn(params, tokens (n, T−1)) -> logits (n, T−1, V)`` (the
transformer with ``readout="all"``) predicts token ``t + 1`` of a sequence from its first ``t + 1``
tokens. The log-probability of the response ``y`` of a sequence ``[x, SEP, y, EOS, PAD …]`` is

.. math::  \log \pi(y \mid x) = \sum_{j \ge P,\; s_{j+1} \ne \mathrm{PAD}}
           \log \mathrm{softmax}\big(f(s_{\le j})\big)_{s_{j+1}}

(``P`` = prompt length: the positions predicting the response tokens and EOS). DPO
(arXiv:2305.18290, Eq. 7), with the implicit reward ``r̂(x, y) = β (log π(y|x) − log π_ref(y|x))``:

.. math::  L_{\rm DPO} = -\frac1n \sum_i \log \sigma\big(
           \beta[(\log\pi(y_w^i) - \log\pi_{\rm ref}(y_w^i))
           - (\log\pi(y_l^i) - \log\pi_{\rm ref}(y_l^i))]\big)

The reference's log-probabilities are constants, computed once (:func:`batched_logprob`) and
carried in the data as ``ref_w``, ``ref_l``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def response_mask(seq: jax.Array, prompt_len: int, pad: int) -> jax.Array:
    """``(n, T−1)`` float: 1 where target ``seq[:, j+1]`` is a response token or EOS."""
    target = seq[:, 1:]
    j = jnp.arange(target.shape[1])[None, :]
    return ((j >= prompt_len) & (target != pad)).astype(jnp.float32)


def sequence_logprob(
    apply_fn: Callable, params, seq: jax.Array, prompt_len: int, pad: int
) -> jax.Array:
    """``log π(y|x)`` ``(n,)`` of sequences ``(n, T)`` (module docstring's sum)."""
    if seq.ndim != 2 or seq.shape[1] <= prompt_len + 1:
        raise ValueError(
            f"sequences must be (n, T) with T > prompt_len + 1 = {prompt_len + 1}, got shape "
            f"{tuple(seq.shape)}."
        )
    logits = apply_fn(params, seq[:, :-1])  # (n, T−1, V)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, seq[:, 1:, None], axis=-1)[..., 0]  # (n, T−1)
    return jnp.sum(picked * response_mask(seq, prompt_len, pad), axis=1)


def dpo_loss(
    pi_w: jax.Array, pi_l: jax.Array, ref_w: jax.Array, ref_l: jax.Array, beta: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The DPO loss (module docstring) of ``(n,)`` log-probabilities; returns ``(loss, r̂_w,
    r̂_l)``, the implicit rewards ``β (log π − log π_ref)`` of chosen and rejected ``(n,)``."""
    if not beta > 0:
        raise ValueError(f"β must be > 0, got {beta}.")
    rw, rl = beta * (pi_w - ref_w), beta * (pi_l - ref_l)
    return -jnp.mean(jax.nn.log_sigmoid(rw - rl)), rw, rl


def pair_scores(rw: jax.Array, rl: jax.Array, tie: float = 0.0) -> jax.Array:
    """``(n,)``: 1 where ``r̂_w − r̂_l > tie``, ½ where ``|r̂_w − r̂_l| <= tie``, else 0; their mean
    is the reward accuracy. The reference itself ties every pair (``r̂ = 0``): ``tie`` absorbs the
    float32 rounding of recomputing its log-probabilities in another batch."""
    d = rw - rl
    return jnp.where(d > tie, 1.0, jnp.where(d >= -tie, 0.5, 0.0))


TIE = 1e-4  # |log-ratio margin| (nats) counted as a tie: float32 noise is ~1e-6 here
PARTS = ("train", "val", "test")  # values 0, 1, 2 of an evaluation batch's "part" column


def pair_metrics(batch: dict, rw: jax.Array, rl: jax.Array, weight: jax.Array, beta: float):
    """Metrics of the pairs with ``weight`` 1 (module docstring of :func:`make_dpo_loss`)."""
    won = pair_scores(rw, rl, TIE * beta)
    mean = lambda v: jnp.sum(weight * v) / jnp.maximum(jnp.sum(weight), 1.0)
    flipped = weight * batch["flipped"]
    return {
        "acc": mean(won),
        "true_acc": mean(jnp.where(batch["r_w"] > batch["r_l"], won, 1.0 - won)),
        "drift": 0.5 * mean(jnp.abs(rw) + jnp.abs(rl)),
        "flip_fit": jnp.sum(flipped * won) / jnp.maximum(jnp.sum(flipped), 1.0),
        "dlogp_w": mean(rw) / beta,
        "dlogp_l": mean(rl) / beta,
    }


def make_dpo_loss(beta: float, prompt_len: int, pad: int) -> Callable:
    """``loss_fn(apply_fn, params, batch, key) -> (L_DPO, aux)`` for :func:`dyntheory.engine.fit`.

    ``batch``: ``w, l`` (n, T) chosen / rejected sequences, ``ref_w, ref_l`` (n,) the reference's
    log-probabilities, ``r_w, r_l`` (n,) the hidden true rewards, ``flipped`` (n,) 1 for swapped
    pairs. Aux metrics: ``acc`` (labels), ``true_acc`` (ranked as the true reward ranks them),
    ``drift`` (mean ``|r̂|`` over both responses), ``flip_fit`` (fraction of swapped pairs whose
    swapped label is fitted; 0 without any), ties counting ½; ``dlogp_w``, ``dlogp_l`` (mean
    ``log π − log π_ref``). A batch with a ``part`` column (an evaluation set holding several
    splits, values indexing :data:`PARTS`) gets them per split instead: ``test_acc``, ...
    (one evaluation set instead of three compiles the fused training loop several times faster).
    """
    if not beta > 0:
        raise ValueError(f"β must be > 0, got {beta}.")

    def loss_fn(apply_fn, params, batch, key):
        del key
        n = batch["w"].shape[0]
        both = jnp.concatenate([batch["w"], batch["l"]])  # one forward pass for both responses
        lp = sequence_logprob(apply_fn, params, both, prompt_len, pad)
        loss, rw, rl = dpo_loss(lp[:n], lp[n:], batch["ref_w"], batch["ref_l"], beta)
        if "part" not in batch:
            return loss, pair_metrics(batch, rw, rl, jnp.ones_like(rw), beta)
        aux = {}
        for i, name in enumerate(PARTS):
            weight = (batch["part"] == i).astype(rw.dtype)
            aux |= {f"{name}_{k}": v for k, v in pair_metrics(batch, rw, rl, weight, beta).items()}
        return loss, aux

    return loss_fn


def make_sft_loss(prompt_len: int, pad: int) -> Callable:
    """``loss_fn`` of supervised fine-tuning on ``batch["x"]`` (n, T): the response tokens' mean
    negative log-likelihood ``−Σ_i log π(y_i|x_i) / Σ_i (ℓ_i + 1)``; aux ``seq_nll`` (per
    sequence)."""

    def loss_fn(apply_fn, params, batch, key):
        del key
        seq = batch["x"]
        total = sequence_logprob(apply_fn, params, seq, prompt_len, pad)
        tokens = jnp.sum(response_mask(seq, prompt_len, pad))
        return -jnp.sum(total) / tokens, {"seq_nll": -jnp.mean(total)}

    return loss_fn


# jitted once: every chunk of :func:`batched_logprob` has the same shape, so one program
_jitted_logprob = jax.jit(sequence_logprob, static_argnums=(0, 3, 4))


def batched_logprob(
    apply_fn: Callable, params, seq: np.ndarray, prompt_len: int, pad: int, chunk: int = 2048
) -> np.ndarray:
    """``log π(y|x)`` ``(n,)`` float32 of many sequences, ``min(chunk, n)`` at a time (the
    reference's constants). The last chunk is padded with copies of its first sequence, so
    every call has one shape; a sequence's value does not depend on the others in its chunk."""
    n = len(seq)
    size = min(chunk, n)
    parts = []
    for i in range(0, n, size):
        part = seq[i : i + size]
        if len(part) < size:
            part = np.concatenate([part, np.repeat(part[:1], size - len(part), axis=0)])
        lp = np.asarray(_jitted_logprob(apply_fn, params, part, prompt_len, pad))
        parts.append(lp[: min(size, n - i)])
    return np.concatenate(parts).astype(np.float32)
