"""Exceptions that carry one sentence for the user.

`UsageError` (and its subclasses) means bad input: the CLI prints the sentence and
exits 2, the GUI shows it in a dialog. `ModelOutputError` is a model failure the user did
not cause (exit 1, one line). Anything else is an internal error (exit 1).
"""


class UsageError(ValueError):
    """Bad input from the user: a flag, a field, a file, a folder."""


class BundleError(UsageError):
    """A model bundle that cannot be loaded; the message names the reason."""


class ModelOutputError(RuntimeError):
    """The network's output is unusable (NaN or Inf): a model failure, not bad input."""


class Cancelled(Exception):
    """A long task stopped because the user asked it to."""
