"""The one error type for bad input.

A user error (a bad file, record, field, option or argument) raises `InputError` (or a subclass) whose message
is one line naming where the problem is (file and line, or record id) and which field or option is wrong. The
command line prints it as one line and exits 2; any other exception is a bug of ours and keeps its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user: the message is one line naming the file, record or option and the field."""
