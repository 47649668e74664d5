"""Times for messages: epoch ms as ISO-8601 UTC, exact for every datetime, never raising for any int."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from trio_klines.core.timefmt import iso_ms, iso_range, iso_stamp

#: Epoch ms of 0001-01-01T00:00:00Z and of the last ms of 9999: what a datetime holds.
FIRST_MS = -62_135_596_800_000
LAST_MS = 253_402_300_799_999
in_range = st.integers(FIRST_MS, LAST_MS)


def _parse_ms(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // datetime.resolution // 1000


def test_examples() -> None:
    assert iso_ms(1_796_033_700_000) == "2026-11-30T10:15:00Z"
    assert iso_ms(1_796_033_700_250) == "2026-11-30T10:15:00.250Z"
    assert iso_ms(0) == "1970-01-01T00:00:00Z"
    assert iso_ms(-1) == "1969-12-31T23:59:59.999Z"
    assert iso_ms(FIRST_MS) == "0001-01-01T00:00:00Z"
    assert iso_ms(LAST_MS) == "9999-12-31T23:59:59.999Z"
    assert iso_stamp(1_796_033_700_000) == "2026-11-30T10:15:00.000Z"
    assert iso_range(0, 60_000) == "from 1970-01-01T00:00:00Z to 1970-01-01T00:01:00Z"
    assert iso_range(0, None) == "from 1970-01-01T00:00:00Z to now"


def test_out_of_range_values_are_shown_as_ms() -> None:
    assert iso_ms(LAST_MS + 1) == f"{LAST_MS + 1} ms"
    assert iso_ms(FIRST_MS - 1) == f"{FIRST_MS - 1} ms"
    assert iso_stamp(2**63) == f"{2**63} ms"
    assert iso_ms(10**400) == f"{10**400} ms"


@settings(max_examples=500)
@given(in_range)
@example(FIRST_MS)
@example(LAST_MS)
@example(0)
@example(-1)
def test_round_trips_through_datetime(ms: int) -> None:
    text = iso_ms(ms)
    assert text.endswith("Z")
    assert _parse_ms(text) == ms
    assert _parse_ms(iso_stamp(ms)) == ms
    # Milliseconds only when they are not zero; the stamp always has them (a fixed width).
    assert ("." in text) == (ms % 1000 != 0)
    assert len(iso_stamp(ms)) == len("2026-11-30T10:15:00.000Z")


@settings(max_examples=500)
@given(st.integers() | st.integers(-(2**200), 2**200))
def test_never_raises_for_any_int(ms: int) -> None:
    for text in (iso_ms(ms), iso_stamp(ms), iso_range(ms, ms)):
        assert isinstance(text, str)
    if not FIRST_MS <= ms <= LAST_MS:
        assert iso_ms(ms) == f"{ms} ms"
