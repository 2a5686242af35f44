"""The one exception type that means "the user gave us something wrong".

The CLI turns it into a single line on stderr and exit status 2, with no
traceback: users should see what to fix, not where our code noticed it.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2


class WorkbenchError(Exception):
    """Bad input: a file, value, query or config key that we cannot use."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
