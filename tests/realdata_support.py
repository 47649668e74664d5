"""Where the real Binance captures are (``../shared/realdata``, see its MANIFEST.md), and their kinds.

Set ``TRIO_KLINES_REALDATA`` to read them from elsewhere; tests that need them skip without them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REALDATA = Path(os.environ.get("TRIO_KLINES_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))
needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"no real Binance captures at {REALDATA}")


def market_of(name: str) -> str:
    if "coinm" in name:
        return "coin_futures"
    if "usdm" in name:
        return "usdt_futures"
    return "spot"  # spot, Binance.US and Binance TR share spot's format; the mixed files hold no closed candle


def csv_files() -> list[Path]:
    return sorted(REALDATA.glob("*.csv")) if REALDATA.is_dir() else []


def rest_series(path: Path) -> tuple[str, str, str]:
    """The series of a REST capture, from its name: ``gct_usdm_rest_btcusdt_5m_10rows_…`` → usdt_futures BTCUSDT 5m."""
    parts = path.stem.split("_rest_")[1].split("_")
    interval_at = next(i for i, part in enumerate(parts) if part[:-1].isdigit() and part[-1] in "smhdwM")
    return market_of(path.name), "_".join(parts[:interval_at]).upper(), parts[interval_at]
