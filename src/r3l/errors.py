"""The one exception type a user can cause.

Every error that comes from user input (a file, a config key, a command-line value) is raised as
:class:`R3LError` with a one-line message naming what is wrong and what was expected. The command line
prints that line alone and exits non-zero; anything else is a bug and keeps its traceback.
"""


class R3LError(Exception):
    """A user-facing error with a one-line message."""
