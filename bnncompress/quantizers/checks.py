"""Type checks of method options: a number is an int or float (numpy's too), never a bool (``true`` on
the command line is not 1)."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_number(value: Any) -> bool:
    """``value`` is a real number and not a bool.

    Example:
        >>> is_number(0.5), is_number(np.float32(2)), is_number(True), is_number("0.5")
        (True, True, False, False)
    """
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def is_integer(value: Any) -> bool:
    """``value`` is an integer and not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
