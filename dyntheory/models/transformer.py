r"""A small decoder-only transformer (GPT-style, pre-LN) with a last-position or per-token readout.

.. math::  h^0_t = E[x_t] + P_t,\qquad
           h \leftarrow h + \mathrm{Attn}(\mathrm{norm}(h)),\qquad
           h \leftarrow h + W_2\,\phi(W_1\,\mathrm{norm}(h)),

or, with ``residual="normed"``, :math:`h \leftarrow \mathrm{norm}(h)` and then
:math:`h \leftarrow h + \mathrm{Attn}(h)` (the block of Grokfast's reference code, whose
residual carries the normalized stream); causal multi-head self-attention
:math:`\mathrm{softmax}(QK^\top/\sqrt{d_h} + M)V` with
:math:`M_{ts} = -\infty` for :math:`s > t`, a final norm, and logits
:math:`f(x) = W_{\rm out} h^L_{T} + b` of the last position (the answer token of a sequence task
such as ``a ∘ b =``), or with ``readout="all"`` the logits :math:`W_{\rm out} h^L_t + b` of every
position ``t`` (next-token prediction of a language model). Every projection (fused QKV,
attention output, both MLP layers, readout) is a tapped :class:`~dyntheory.models.layers.Linear`
applied per token.

References:
  Radford et al. (2019), GPT-2; Power et al. (2022), "Grokking", arXiv:2201.02177.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from dyntheory.models.activations import get_activation, is_gated
from dyntheory.models.layers import Linear, check_norm, make_norm


class CausalSelfAttention(nnx.Module):
    """``(n, T, width) -> (n, T, width)``; position ``t`` attends to positions ``s <= t``."""

    def __init__(self, width: int, heads: int, *, dtype, rngs: nnx.Rngs):
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = Linear(width, 3 * width, dtype=dtype, rngs=rngs)
        self.out = Linear(width, width, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        n, T, w = x.shape
        dh = w // self.heads
        qkv = self.qkv(x).reshape(n, T, 3, self.heads, dh)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # slices: see activations._gated
        scores = jnp.einsum("nthd,nshd->nhts", q, k) / math.sqrt(dh)
        causal = jnp.tril(jnp.ones((T, T), bool))[None, None]
        scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
        attn = jax.nn.softmax(scores, axis=-1)
        o = jnp.einsum("nhts,nshd->nthd", attn, v).reshape(n, T, w)
        return self.out(o)


class Block(nnx.Module):
    """Pre-norm transformer block: attention, then a (possibly gated) MLP, each residual.

    ``residual="stream"`` adds the attention output to the block's input; ``"normed"`` to its
    normalized input (``h = norm1(h); h = h + attn(h)``, as Grokfast's reference ``Block``).
    """

    def __init__(self, width, heads, mlp_ratio, activation, norm, beta, *, residual, dtype, rngs):
        self.residual = residual
        self.norm1 = make_norm(norm, width, dtype=dtype, rngs=rngs)
        self.attn = CausalSelfAttention(width, heads, dtype=dtype, rngs=rngs)
        self.norm2 = make_norm(norm, width, dtype=dtype, rngs=rngs)
        self.act = get_activation(activation, beta=beta)
        gate = 2 if is_gated(activation) else 1
        self.mlp_in = Linear(width, gate * mlp_ratio * width, dtype=dtype, rngs=rngs)
        self.mlp_out = Linear(mlp_ratio * width, width, dtype=dtype, rngs=rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        u = h if self.norm1 is None else self.norm1(h)
        h = (u if self.residual == "normed" else h) + self.attn(u)
        u = h if self.norm2 is None else self.norm2(h)
        return h + self.mlp_out(self.act(self.mlp_in(u)))


class Transformer(nnx.Module):
    """``(n, T) int tokens, T <= max_len -> (n, out_features)`` logits of the last position, or
    ``(n, T, out_features)`` of every position with ``readout="all"``.

    Args:
      vocab_size, max_len: token vocabulary and the longest sequence (learned positions).
      out_features: readout size (default ``vocab_size``).
      width, depth, heads, mlp_ratio: model width, number of blocks, attention heads, MLP
        expansion.
      activation: MLP activation (any name in :data:`dyntheory.models.ACTIVATIONS`).
      norm: ``"layernorm"`` (default), ``"dyt"`` or ``None``.
      readout: ``"last"`` (default: the last position's logits) or ``"all"`` (every position's).
      embed_std: standard deviation of the normal init of the token and position embeddings
        (default 0.02, nanoGPT's; ``torch.nn.Embedding``'s default is 1).
      residual: ``"stream"`` (default, GPT-2's pre-LN) or ``"normed"`` (see :class:`Block`).
      readout_bias: whether the readout has a bias (default True).
    """

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        out_features: int | None = None,
        *,
        width: int = 128,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: int = 4,
        activation: str = "gelu",
        norm: str | None = "layernorm",
        beta: float = 1.0,
        dtype=jnp.float32,
        readout: Literal["last", "all"] = "last",
        embed_std: float = 0.02,
        residual: Literal["stream", "normed"] = "stream",
        readout_bias: bool = True,
        rngs: nnx.Rngs,
    ):
        check_norm(norm)
        if readout not in ("last", "all"):
            raise ValueError(f"readout must be 'last' or 'all', got {readout!r}")
        if residual not in ("stream", "normed"):
            raise ValueError(f"residual must be 'stream' or 'normed', got {residual!r}")
        if not embed_std > 0:
            raise ValueError(f"embed_std must be > 0, got {embed_std!r}")
        self.max_len = max_len
        self.readout_at = readout
        init = nnx.initializers.normal(stddev=embed_std)
        self.token_embed = nnx.Embed(
            vocab_size, width, embedding_init=init, dtype=dtype, param_dtype=dtype, rngs=rngs
        )
        self.pos_embed = nnx.Param(init(rngs.params(), (max_len, width), dtype))
        self.blocks = nnx.List(
            [
                Block(
                    width,
                    heads,
                    mlp_ratio,
                    activation,
                    norm,
                    beta,
                    residual=residual,
                    dtype=dtype,
                    rngs=rngs,
                )
                for _ in range(depth)
            ]
        )
        self.norm_f = make_norm(norm, width, dtype=dtype, rngs=rngs)
        out = vocab_size if out_features is None else out_features
        self.readout = Linear(width, out, use_bias=readout_bias, dtype=dtype, rngs=rngs)

    def hidden_states(self, tokens: jax.Array) -> jax.Array:
        """Final-norm hidden states of every position, ``(n, T, width)``."""
        if tokens.ndim != 2 or not 1 <= tokens.shape[1] <= self.max_len:
            raise ValueError(
                f"Transformer expects integer tokens (n, T) with 1 <= T <= {self.max_len}, got "
                f"shape {tuple(tokens.shape)}"
            )
        T = tokens.shape[1]
        h = self.token_embed(tokens) + self.pos_embed[...][None, :T]
        for block in self.blocks:
            h = block(h)
        return h if self.norm_f is None else self.norm_f(h)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        h = self.hidden_states(tokens)
        return self.readout(h if self.readout_at == "all" else h[:, -1])
