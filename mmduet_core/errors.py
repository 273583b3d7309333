"""The one error type for bad input.

A user error (a bad file, record, field, option or argument) raises `InputError` (or a subclass) whose message
is one line naming where the problem is (file and line, or record id) and which field or option is wrong. The
command line prints it as one line and exits 2; any other exception is a bug of ours and keeps its traceback.
"""

from __future__ import annotations

import math


class InputError(ValueError):
    """Bad input from the user: the message is one line naming the file, record or option and the field."""


def is_finite_number(value) -> bool:
    """An int or float that is finite; not a bool, not a numeric string (what every numeric input field takes)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
