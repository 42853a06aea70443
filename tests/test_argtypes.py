"""The shared number types of the command lines: clear usage errors, never a traceback."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from acd.argtypes import non_negative, positive


def test_positive_and_non_negative_accept_their_ranges_and_keep_the_kind() -> None:
    assert positive()("2.5") == 2.5
    assert positive(int)("3") == 3 and isinstance(positive(int)("3"), int)
    assert non_negative()("0") == 0.0
    assert non_negative(int)("0") == 0


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (positive(), "0", "'0' must be > 0"),
        (positive(), "-1.5", "'-1.5' must be > 0"),
        (positive(), "nan", "'nan' must be > 0"),
        (non_negative(), "-0.1", "'-0.1' must be >= 0"),
        (non_negative(), "nan", "'nan' must be >= 0"),
        (positive(int), "1.5", "'1.5' is not a whole number"),
        (positive(), "x", "'x' is not a number"),
    ],
)
def test_out_of_range_or_not_a_number_is_an_argument_error(parse: Callable[[str], float], text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(text)


def test_argparse_reports_the_option_by_name() -> None:
    parser = argparse.ArgumentParser(prog="t", exit_on_error=False)
    parser.add_argument("--speed", type=positive())
    with pytest.raises(argparse.ArgumentError, match="argument --speed: '0' must be > 0"):
        parser.parse_args(["--speed", "0"])
