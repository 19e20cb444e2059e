"""Errors shared by every stage's command line (a leaf module: imports nothing)."""


class CommandError(Exception):
    """A user-facing failure: printed as one clear line, exit status 2, no traceback."""
