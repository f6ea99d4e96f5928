"""The one exception for bad input.

Every check of what a user gives (an argument, a grid axis, a file, a dataset, a
command-line flag) raises :class:`InputError` with one line that names the
argument, the bad value and the valid choices. It is a ``ValueError``, so code
that catches ``ValueError`` keeps working; the ``jaxopt-lab`` command turns it,
and only it, into exit code 2. Any other exception is a bug in this package or
in a library beneath it and ends the command with its traceback.
"""

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input: the message names the argument, the bad value and the valid choices."""
