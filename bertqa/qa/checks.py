"""Checks of option values: a ValueError that names the option and the value it got."""
from __future__ import annotations

import numpy as np


def check_int(name: str, value, minimum: int) -> None:
    """ValueError unless value is an integer >= minimum (True/False are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_bool(name: str, value) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
