"""argparse value types that refuse what a subcommand cannot use (NaN, 0, negatives), and the
parser whose errors are one line `bertqa: error: ...` (exit 2), like every other bad input."""
from __future__ import annotations

import argparse
import math
import sys


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, naming the --help to read."""

    def error(self, message: str):
        sys.stderr.write(f"bertqa: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def finite_float(text: str) -> float:
    """A float that is a number: 'nan' and 'inf' would compare false with every bound."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value
