"""jaxopt_lab: a JAX toolkit for studying how deep-learning optimizers behave."""

__version__ = "0.1.0"
