"""Exact integers of any size as decimal text, and model counts for JSON.

Python refuses int <-> decimal conversions beyond 4300 digits (a guard against
quadratic-time conversions of untrusted input); model counts exceed that easily
(4400 digits have 10**4400 models). These convert in pieces below the limit.
"""
from __future__ import annotations

import re

# Model counts up to this are JSON integers (`json_safe_count`); larger ones are decimal strings,
# because many JSON readers hold numbers as doubles (exact only below 2**53).
JSON_SAFE_INTEGER = 2**53

_DIGITS_PER_PIECE = 4000


def decimal_string(number: int) -> str:
    """The decimal digits of an integer of any size."""
    if number < 0:
        return "-" + decimal_string(-number)
    if number < 10**_DIGITS_PER_PIECE:
        return str(number)
    powers = [10**_DIGITS_PER_PIECE]  # powers[i] = 10**(piece * 2**i)
    while powers[-1] <= number:
        powers.append(powers[-1] * powers[-1])

    def digits(value: int, level: int) -> str:  # value < powers[level], zero-padded
        if level == 0:
            return str(value).zfill(_DIGITS_PER_PIECE)
        high, low = divmod(value, powers[level - 1])
        return digits(high, level - 1) + digits(low, level - 1)

    return digits(number, len(powers) - 1).lstrip("0") or "0"


def parse_decimal(text: str) -> int:
    """The integer written as decimal digits (any number of them); ValueError otherwise."""
    if not re.fullmatch(r"[0-9]+", text):
        raise ValueError(f"not a string of decimal digits: {text[:40]!r}")
    if len(text) <= _DIGITS_PER_PIECE:
        return int(text)
    half = len(text) // 2
    return parse_decimal(text[:-half]) * 10**half + parse_decimal(text[-half:])


def json_safe_count(count: int) -> int | str:
    """A model count for JSON: the int itself below 2**53, else its decimal digits as a string."""
    return count if count < JSON_SAFE_INTEGER else decimal_string(count)

