"""Config files and endpoint maps: what is accepted, and what each mistake says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trio_klines.config import RecorderConfig, load_endpoints, load_toml, merge, parse_stream_spec
from trio_klines.core.markets import Series
from trio_klines.errors import ConfigError


def test_stream_specs() -> None:
    assert parse_stream_spec("usdt_futures:1m:BTCUSDT, ethusdt") == [
        Series("usdt_futures", "BTCUSDT", "1m"),
        Series("usdt_futures", "ETHUSDT", "1m"),
    ]
    for bad, why in [
        ("spot:1m", "MARKET:INTERVAL:SYMBOL"),
        ("spot:1m:", "MARKET:INTERVAL:SYMBOL"),
        ("spot:1m:,", "invalid symbol"),
        ("margin:1m:BTCUSDT", "unknown market 'margin'"),
        ("spot:1m:../../etc", "invalid symbol"),
    ]:
        with pytest.raises(ConfigError, match=why):
            parse_stream_spec(bad)


def test_toml_config(tmp_path: Path) -> None:
    path = tmp_path / "rec.toml"
    path.write_text(
        """
data = "klines"
receive_timeout = 30
flush_seconds = 2.5
streams = [
  "spot:1m:BTCUSDT,ETHUSDT",
  { market = "coin_futures", interval = "1h", symbols = ["btcusd_perp"] },
]
[endpoints.spot]
ws = "ws://127.0.0.1:9000/spot"
rest = "http://127.0.0.1:9000/spot"
""",
        encoding="utf-8",
    )
    cfg = RecorderConfig.build(**load_toml(path))
    assert cfg.data_dir == tmp_path / "klines"  # relative to the config file
    assert cfg.receive_timeout == 30
    assert cfg.flush_seconds == 2.5
    assert Series("coin_futures", "BTCUSD_PERP", "1h") in cfg.streams
    assert cfg.market("spot").ws_url == "ws://127.0.0.1:9000/spot"
    assert cfg.market("usdt_futures").ws_url == "wss://fstream.binance.com/market"


def test_universes_come_from_specs_and_toml_tables(tmp_path: Path) -> None:
    path = tmp_path / "universe.toml"
    path.write_text(
        """
universe_refresh = 60
streams = [
  "usdt_futures:1m,1h:*USDT?contract=perpetual",
  "spot:1m,5m:BTCUSDT",
  { market = "coin_futures", intervals = ["1d"], symbols = "*", exclude = ["btcusd_perp"], status = ["TRADING"] },
]
""",
        encoding="utf-8",
    )
    cfg = RecorderConfig.build(**load_toml(path))
    assert cfg.streams == (Series("spot", "BTCUSDT", "1m"), Series("spot", "BTCUSDT", "5m"))
    assert [str(u) for u in cfg.universes] == [
        "usdt_futures:1m,1h:*USDT?contract=perpetual",
        "coin_futures:1d:*?exclude=BTCUSD_PERP",
    ]
    assert cfg.universe_refresh == 60 and cfg.markets_recorded == ["coin_futures", "spot", "usdt_futures"]
    only = RecorderConfig.build(streams=["spot:1s:*"])  # a universe alone is enough to record
    assert only.streams == () and [str(u) for u in only.universes] == ["spot:1s:*"]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('streams = [{ market = "spot", intervals = ["1m"], symbols = "BTC*" }]', r"symbols \('\*' or '\*QUOTE'\)"),
        ('streams = [{ market = "spot", intervals = "1m", symbols = "*" }]', "intervals \\(a list\\)"),
        ('streams = [{ market = "spot", intervals = ["1m"], symbols = "*", contract = "perpetual" }]', "spot has no"),
        ('streams = [{ market = "spot", intervals = ["1m"], symbols = "*", colour = 1 }]', "a universe table has"),
        ('streams = ["spot:1m:*"]\nuniverse_refresh = 0', "universe_refresh must be a positive number"),
    ],
)
def test_bad_universes_say_what_to_fix(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=why):
        RecorderConfig.build(**load_toml(path))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('streams = ["spot:1m:BTCUSDT"]\nflush_secs = 1', r"unknown key\(s\) .*flush_secs"),
        ("streams = [", "not valid TOML"),
        ("streams = 5", "must be a list"),
        ('streams = [{ market = "spot", interval = "1m" }]', "non-empty symbols list"),
        ("streams = [5]", "string or a table"),
        ("data = 5", "path string"),
    ],
)
def test_bad_toml_says_what_to_fix(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=why):
        load_toml(path)


def test_bad_values_in_toml_surface_at_build(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('streams = ["spot:1m:BTCUSDT"]\nreceive_timeout = "soon"', encoding="utf-8")
    with pytest.raises(ConfigError, match="receive_timeout must be a positive number"):
        RecorderConfig.build(**load_toml(path))
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_toml(tmp_path / "missing.toml")


def test_flags_override_the_file_and_streams_add_up() -> None:
    merged = merge({"streams": ["spot:1m:BTCUSDT"], "flush_seconds": 3}, {"streams": ["spot:1m:ETHUSDT"],
                   "flush_seconds": None, "receive_timeout": 9})  # fmt: skip
    assert merged == {"streams": ["spot:1m:BTCUSDT", "spot:1m:ETHUSDT"], "flush_seconds": 3, "receive_timeout": 9}


def test_endpoints_file(tmp_path: Path) -> None:
    good = {"spot": {"ws": "ws://127.0.0.1:1/spot", "rest": "http://127.0.0.1:1/spot"}}
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps(good) + "\nanything after the first line is ignored\n", encoding="utf-8")
    assert load_endpoints(path) == good
    path.write_text("not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="JSON object"):
        load_endpoints(path)
    path.write_text(json.dumps({"spot": {"ws": "http://x"}}), encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid URL"):
        load_endpoints(path)
    with pytest.raises(ConfigError, match="cannot read endpoints file"):
        load_endpoints(tmp_path / "nope.json")


def test_times_for_since() -> None:
    from trio_klines.config import parse_time

    assert parse_time("2024-06-30") == 1719705600000
    assert parse_time("2024-06-30T15:00") == 1719759600000
    assert parse_time("2024-06-30T17:00+02:00") == 1719759600000
    assert parse_time("1719705600000") == 1719705600000
    assert parse_time(1719705600000) == 1719705600000
    for bad in ("yesterday", -5, 1.5, None, "2024-13-01"):
        with pytest.raises(ConfigError, match="invalid time"):
            parse_time(bad)


def test_the_symbol_check_can_be_turned_off_by_file_and_by_flag(tmp_path: Path) -> None:
    from trio_klines.cli import build_parser
    from trio_klines.cli.record import record_config

    path = tmp_path / "c.toml"
    path.write_text('streams = ["spot:1m:BTCUSDT"]\ncheck_symbols = false\ncheck_symbols_timeout = 5\n')
    cfg = RecorderConfig.build(**load_toml(path))
    assert (cfg.check_symbols, cfg.check_symbols_timeout) == (False, 5)
    assert RecorderConfig.build(streams=["spot:1m:BTCUSDT"]).check_symbols is True
    args = build_parser().parse_args(["record", "--stream", "spot:1m:BTCUSDT", "--no-check-symbols",
                                      "--data", str(tmp_path)])  # fmt: skip
    assert record_config(args).check_symbols is False
    plain = build_parser().parse_args(["record", "--stream", "spot:1m:BTCUSDT", "--data", str(tmp_path)])
    assert record_config(plain).check_symbols is True
    with pytest.raises(ConfigError, match="check_symbols must be true or false"):
        RecorderConfig.build(streams=["spot:1m:BTCUSDT"], check_symbols="no")
