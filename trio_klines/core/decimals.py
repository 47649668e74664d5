"""Binance's decimal strings, exactly: their shape, a canonical form, and scaled integers. Pure.

Binance sends every price and volume as a decimal string (``"66477.91000000"``): digits, then optionally
a dot and more digits; never a sign, an exponent or a space. A float64 keeps about 15-17 significant
digits, so a quote volume such as ``"148205200.10773722"`` does not survive it (2,312 of the 148,864
strings in ``../shared/realdata`` do not). These functions never go through float:

- :func:`canonical` is the string without the zeros that do not change its value (``"0.01000000"`` →
  ``"0.01"``, ``"00012.50"`` → ``"12.5"``, ``"0.000"`` → ``"0"``), so that the same value sent with different
  padding (a WebSocket frame, a REST row, an archive CSV) compares equal as a string;
- :func:`scaled` is the value times ``10**scale`` as an ``int``: what an Arrow ``decimal128(precision,
  scale)`` holds, and how two values compare exactly; :func:`unscaled` is its inverse, in canonical form.

A dataset of exact numbers (``numbers = "exact"``) stores the strings as decimals; :func:`canonical`
compares them with what the exchange sends (``verify``).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "DECIMAL_PATTERN", "NUMBERS", "VALUE_RE", "VALUE_SHAPE", "canonical", "fraction_digits", "is_decimal", "scaled",
    "unscaled",
]  # fmt: skip

#: How a dataset stores prices and volumes: ``float`` (float64, the seed's) or ``exact`` (decimals, digit for
#: digit). Here, not in the store, so that a config can be checked without loading pyarrow.
NUMBERS: Final = ("float", "exact")
#: Binance's decimal strings: ASCII digits, then optionally a dot and at least one digit (``\Z``, not ``$``,
#: which would let a trailing newline in). Anchored for ``re.search``, as msgspec's ``Meta(pattern=)`` uses it.
DECIMAL_PATTERN: Final = r"^[0-9]+(?:\.[0-9]+)?\Z"
_DECIMAL: Final = re.compile(DECIMAL_PATTERN)
#: What the exact parsers and exact tables take as a value, unanchored (Python's ``fullmatch``; ``^…$`` for
#: Arrow's RE2, where ``$`` is the end of the text): ASCII digits with at most one dot, ``".5"`` and ``"5."``
#: too, which Binance never sends but which are exact all the same.
VALUE_SHAPE: Final = r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)"
#: :data:`VALUE_SHAPE` compiled, for ``fullmatch``.
VALUE_RE: Final = re.compile(VALUE_SHAPE)


def is_decimal(text: object) -> bool:
    """Whether ``text`` is a decimal string of Binance's shape (``"1"``, ``"0.5"``; not ``".5"``, ``"1e3"``,
    ``"-1"``, ``"1."``, ``" 1"``, ``"１"``: only ASCII digits)."""
    return isinstance(text, str) and _DECIMAL.match(text) is not None


def _split(text: str) -> tuple[str, str]:
    if not is_decimal(text):
        raise ValueError(f"not a decimal string: {text!r}")
    whole, _, fraction = text.partition(".")
    return whole, fraction


def canonical(text: str) -> str:
    """``text`` without leading zeros in its whole part, trailing zeros in its fraction, nor a bare dot.

    Raises :class:`ValueError` for a string that is not a decimal of Binance's shape.
    """
    whole, fraction = _split(text)
    whole = whole.lstrip("0") or "0"
    fraction = fraction.rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole


def fraction_digits(text: str) -> int:
    """How many digits ``text`` needs after the dot to be exact (its canonical fraction's length)."""
    return len(_split(text)[1].rstrip("0"))


def scaled(text: str, scale: int) -> int:
    """The value of ``text`` times ``10**scale``, exactly.

    Raises :class:`ValueError` for a string that is not a decimal of Binance's shape, a negative scale,
    and a value that needs more than ``scale`` digits after the dot (zeros past them are fine).
    """
    if scale < 0:
        raise ValueError(f"scale must be >= 0, not {scale}")
    whole, fraction = _split(text)
    if len(fraction) > scale:
        if fraction[scale:].strip("0"):
            raise ValueError(f"{text!r} needs {fraction_digits(text)} digits after the dot, more than {scale}")
        fraction = fraction[:scale]
    return int(whole + fraction.ljust(scale, "0"))


def unscaled(value: int, scale: int) -> str:
    """The canonical decimal string of ``value / 10**scale`` (``value`` >= 0); :func:`scaled`'s inverse."""
    if value < 0 or scale < 0:
        raise ValueError(f"need value >= 0 and scale >= 0, not {value} and {scale}")
    digits = str(value).rjust(scale + 1, "0")
    whole, fraction = digits[: len(digits) - scale], digits[len(digits) - scale :]
    fraction = fraction.rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole
