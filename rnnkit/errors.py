"""Exceptions that rnnkit raises on purpose."""


class UnsupportedBackendError(ValueError):
    """A kernel backend cannot run the requested configuration.

    With ``backend="auto"`` rnnkit catches it and falls back to the next backend
    (in the end the reference loop, which runs everything).  A user who names a
    backend explicitly gets this error, whose message names what is unsupported.
    It subclasses ValueError so ``except ValueError`` keeps working.
    """
