"""Test configuration: several fake CPU devices, strict dtype promotion, no rank promotion.

Strict promotion makes silent float64 leaks and implicit broadcasting fail loudly
(the equinox convention). Four host devices let the sharding code run on a laptop.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
