"""The one exception type for problems the user can fix (params, data, missing inputs).

Its message is shown as is, as one line: what is wrong, where, and how to fix it.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's params or data; the message is shown as is."""
