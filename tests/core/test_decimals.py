"""Binance's decimal strings without float: properties against Python's Decimal, and every real capture."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from decimal import Decimal, localcontext
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from realdata_support import REALDATA, needs_realdata

from trio_klines.core.decimals import canonical, fraction_digits, is_decimal, scaled, unscaled

pytestmark = pytest.mark.timeout(120)

#: A scale and precision wider than the store's (core.validity.EXACT_FRACTION_DIGITS): the functions hold there too.
SCALE, PRECISION = 18, 38

# Binance's shapes: a whole part (zero-padded or not), and a fraction padded to the symbol's precision.
wholes = st.integers(0, 10**20 - 1).map(str) | st.integers(0, 999).map(lambda n: f"{n:05d}")
fractions = st.none() | st.text("0123456789", min_size=1, max_size=SCALE)
decimals = st.builds(lambda w, f: w if f is None else f"{w}.{f}", wholes, fractions)


def plain(value: Decimal) -> str:
    """``value`` written out without exponent or padding zeros: what canonical() must give."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


@given(decimals)
def test_canonical_is_the_decimal_value_written_plainly(text: str) -> None:
    assert is_decimal(text)
    assert canonical(text) == plain(Decimal(text))
    assert Decimal(canonical(text)) == Decimal(text) and canonical(canonical(text)) == canonical(text)


@given(decimals, st.integers(0, 24))
def test_scaled_is_exact_or_refused(text: str, scale: int) -> None:
    value = Decimal(text)
    if fraction_digits(text) <= scale:
        with localcontext(prec=100):  # Decimal's default 28 digits would round these 38-digit values
            expected = int(value.scaleb(scale))
        assert scaled(text, scale) == expected
        assert unscaled(scaled(text, scale), scale) == canonical(text)
    else:
        with pytest.raises(ValueError, match="digits after the dot"):
            scaled(text, scale)


@given(decimals, decimals)
def test_scaled_integers_order_as_the_values_do(a: str, b: str) -> None:
    assert (scaled(a, SCALE) < scaled(b, SCALE)) == (Decimal(a) < Decimal(b))
    assert (scaled(a, SCALE) == scaled(b, SCALE)) == (canonical(a) == canonical(b))


@given(st.integers(0, 10**38 - 1), st.integers(0, 20))
def test_unscaled_inverts_scaled(value: int, scale: int) -> None:
    assert scaled(unscaled(value, scale), scale) == value


@pytest.mark.parametrize(
    "text", ["", ".5", "1.", "1e3", "-1", "+1", " 1", "1 ", "1\n", "1,5", "0x10", "\uff11", "NaN", "inf"]
)
def test_what_is_not_a_binance_decimal_is_refused(text: str) -> None:
    assert not is_decimal(text)
    with pytest.raises(ValueError, match="not a decimal string"):
        canonical(text)
    with pytest.raises(ValueError, match="not a decimal string"):
        scaled(text, 8)


def test_bad_scales_are_refused() -> None:
    with pytest.raises(ValueError, match="scale must be >= 0"):
        scaled("1", -1)
    with pytest.raises(ValueError, match="need value >= 0"):
        unscaled(-1, 2)


# --- every decimal string of the real captures ----------------------------------------------------


def realdata_strings() -> Iterator[str]:
    """Every price and volume string in ../shared/realdata: WebSocket frames, REST rows, archive CSVs."""
    for path in sorted(REALDATA.iterdir()):
        if path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    yield from _kline_values(json.loads(line))
        elif path.suffix == ".json":
            yield from _kline_values(json.loads(path.read_text(encoding="utf-8")))
        elif path.suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as rows:
                for row in csv.reader(rows):
                    if row and row[0].isdigit():
                        yield from (row[i] for i in (1, 2, 3, 4, 5, 7, 9, 10))


def _kline_values(payload: object) -> Iterator[str]:
    if isinstance(payload, dict):
        event = payload.get("data", payload)
        kline = event.get("k") if isinstance(event, dict) else None
        if isinstance(kline, dict):
            yield from (kline[name] for name in "ohlcvqVQ" if name in kline)
    elif isinstance(payload, list):
        for row in payload:
            if isinstance(row, list) and len(row) >= 11:
                yield from (row[i] for i in (1, 2, 3, 4, 5, 7, 9, 10))


@needs_realdata
def test_every_real_decimal_string_survives_exactly_where_float64_does_not() -> None:
    texts = list(realdata_strings())
    assert len(texts) == 148_864 and all(isinstance(t, str) and is_decimal(t) for t in texts)
    # The float64 the store keeps today loses 2,312 of them (the count).
    assert sum(Decimal(repr(float(t))) != Decimal(t) for t in texts) == 2_312
    assert max(fraction_digits(t) for t in texts) == 8
    for text in texts:
        assert unscaled(scaled(text, SCALE), SCALE) == canonical(text)
    # Through Arrow's decimal128, as an exact store would hold them: digit for digit, on the way back too.
    column = pa.array(texts).cast(pa.decimal128(PRECISION, SCALE))
    back = column.to_pylist()
    assert back == [Decimal(t) for t in texts]
    assert [canonical(format(d, "f")) for d in back] == [canonical(t) for t in texts]
    # Arrow's own cast back to string writes zero as "0E-18": string equality goes through canonical().
    assert pa.array(["0.00000000"]).cast(pa.decimal128(PRECISION, SCALE)).cast(pa.string()).to_pylist() == ["0E-18"]
    assert pa.array([scaled(t, SCALE) for t in texts[:1000]], pa.decimal128(PRECISION, 0)).to_pylist() == [
        Decimal(scaled(t, SCALE)) for t in texts[:1000]
    ]


def test_realdata_support_points_at_a_directory() -> None:
    assert isinstance(REALDATA, Path)
