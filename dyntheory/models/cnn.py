"""A small convolutional network: conv stages, global average pooling, dense readout.

Stage ``k``: ``h <- pool(φ(conv_k(h)))`` with a 'SAME' ``kernel_size × kernel_size`` convolution
and a 2×2 average pool after every stage but the last; then the spatial mean and a
:class:`~dyntheory.models.layers.Linear` readout. A gated φ doubles the conv's output channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from dyntheory.models.activations import get_activation, is_gated
from dyntheory.models.layers import Linear


class CNN(nnx.Module):
    """``(n, H, W, in_channels) -> (n, out_features)`` (NHWC)."""

    def __init__(
        self,
        in_channels: int,
        out_features: int,
        *,
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 3,
        activation: str = "relu",
        beta: float = 1.0,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_channels = in_channels
        self.act = get_activation(activation, beta=beta)
        gate = 2 if is_gated(activation) else 1
        c_in = (in_channels, *channels[:-1])
        self.convs = nnx.List(
            [
                nnx.Conv(
                    a,
                    gate * b,
                    (kernel_size, kernel_size),
                    padding="SAME",
                    dtype=dtype,
                    param_dtype=dtype,
                    rngs=rngs,
                )
                for a, b in zip(c_in, channels, strict=True)
            ]
        )
        self.readout = Linear(channels[-1], out_features, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"CNN expects NHWC inputs (n, H, W, {self.in_channels}), got shape {tuple(x.shape)}"
            )
        for i, conv in enumerate(self.convs):
            x = self.act(conv(x))
            if i < len(self.convs) - 1:
                x = nnx.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME")
        return self.readout(jnp.mean(x, axis=(1, 2)))
