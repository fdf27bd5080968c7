"""The one exception type a user can cause, and the one warning type r3l gives.

Every error that comes from user input (a file, a config key, a command-line value) is raised as
:class:`R3LError` with a one-line message naming what is wrong and what was expected. The command line
prints that line alone and exits non-zero; anything else is a bug and keeps its traceback.

Warnings (something worked, but not as asked: a fallback checkpoint, weights that differ from the published
file) are :class:`R3LWarning`, given through Python's ``warnings`` so that library users can filter them; the
command line prints each as one plain line, ``r3l: warning: ...``.
"""

from __future__ import annotations

import warnings


class R3LError(Exception):
    """A user-facing error with a one-line message."""


class R3LWarning(UserWarning):
    """A user-facing warning with a one-line message."""


def warn(message: str) -> None:
    """Give ``message`` as an :class:`R3LWarning`."""
    warnings.warn(message, R3LWarning, stacklevel=3)


def plain_warnings() -> None:
    """Print :class:`R3LWarning` as one plain line on stderr (no file:line); other warnings as Python does."""
    import sys

    warnings.simplefilter("always", R3LWarning)  # each occurrence is news to the user, not only the first
    default = warnings.showwarning
    if getattr(default, "r3l_plain", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, R3LWarning):
            print(f"r3l: warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    show.r3l_plain = True
    warnings.showwarning = show
