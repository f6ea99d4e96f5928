"""Test configuration: several fake CPU devices, strict dtype promotion, no rank promotion,
and warnings as errors.

Strict promotion makes silent float64 leaks and implicit broadcasting fail loudly
(the equinox convention). Four host devices let the sharding code run on a laptop.

Every warning fails the test that raised it (``filterwarnings = error`` in
pyproject.toml), and an unknown marker or an ``xfail`` that passes fails the run
(``--strict-markers``, ``xfail_strict``). No exception is needed today: the
installed jax, optax, flax, pandas and matplotlib emit no warning on the suite's
paths. A justified one goes into ``_ALLOWED_WARNINGS`` with the reason beside it.
"""

import os

# Four devices; and XLA's backend without its LLVM optimization passes: the suite's programs
# are small and run briefly, so compiling them is most of its time, and this halves that.
# Every comparison is between programs compiled the same way (the README's blocks and the
# subprocess tests set their own flags).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
# One persistent compilation cache for the suite's processes: programs that several tests
# (or both xdist workers) compile are compiled once.
jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# (filter, why it is allowed): pytest's -W syntax, e.g. "ignore::DeprecationWarning:somepkg".
_ALLOWED_WARNINGS: tuple[tuple[str, str], ...] = ()


def pytest_configure(config):
    # Added after pyproject's "error", so these take precedence.
    for spec, _why in _ALLOWED_WARNINGS:
        config.addinivalue_line("filterwarnings", spec)
