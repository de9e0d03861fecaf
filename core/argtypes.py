"""argparse types for numeric flags: a value out of range is refused by the parser itself, with
one line naming the flag ("argument --batch-size: must be a whole number of at least 1, got '0'"),
exit 2, before anything loads. Config files get the same checks from their options' `check()`.
"""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind=float):
    try:
        value = kind(text)
    except ValueError:
        word = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {word}, got '{text}'") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got '{text}'")
    return value


def _refusing(kind, out_of_range, words: str, name: str):
    """An argparse type: `kind` parsed from the text, refused ("must be {words}") when out of range."""

    def parse(text: str):
        value = _number(text, kind)
        if out_of_range(value):
            raise argparse.ArgumentTypeError(f"must be {words}, got '{text}'")
        return value

    parse.__name__ = parse.__qualname__ = name
    return parse


positive_int = _refusing(int, lambda v: v < 1, "a whole number of at least 1", "positive_int")
nonnegative_int = _refusing(int, lambda v: v < 0, "a whole number of at least 0", "nonnegative_int")
positive_float = _refusing(float, lambda v: v <= 0, "a positive number", "positive_float")
nonnegative_float = _refusing(float, lambda v: v < 0, "zero or positive", "nonnegative_float")
