"""Argument types for the command lines (`acd`, `python -m sim`, `python -m loadtest`).

argparse turns an `ArgumentTypeError` into a usage error that names the option, so a bad
number stops the command before it starts anything.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def positive(kind: Callable[[str], float] = float) -> Callable[[str], float]:
    """A number > 0 (`kind` is float or int)."""
    return _bounded(kind, lambda value: value > 0, "> 0")


def non_negative(kind: Callable[[str], float] = float) -> Callable[[str], float]:
    """A number >= 0 (`kind` is float or int)."""
    return _bounded(kind, lambda value: value >= 0, ">= 0")


def _bounded(kind: Callable[[str], float], ok: Callable[[float], bool], what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if value != value or not ok(value):  # NaN fails every bound
            raise argparse.ArgumentTypeError(f"{text!r} must be {what}")
        return value

    parse.__name__ = getattr(kind, "__name__", "number")  # argparse names the type in its messages
    return parse
