"""Test set-up: 8 fake CPU devices, float64 available, strict rank promotion.

Must run before anything imports jax, so the device count and config take effect.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

# float64 is available for closed-form comparisons; library code passes dtypes explicitly,
# so float32 models stay float32.
jax.config.update("jax_enable_x64", True)
# Implicit rank promotion hides shape bugs: make it an error.
jax.config.update("jax_numpy_rank_promotion", "raise")
# Dtype promotion stays "standard": optax 0.2.8's bias correction mixes a Python float with an
# int32 count, which "strict" rejects inside optax itself.
jax.config.update("jax_numpy_dtype_promotion", "standard")
