"""Operating a running ``record``: scrape its metrics, watch /healthz follow the exchange, reload its series
with SIGHUP, and hear it talk to systemd, all against the fake exchange as a process.

The exchange runs at real speed with ``1s`` series, so a series goes stale (two intervals plus a one-second
grace) within seconds of the exchange freezing (SIGSTOP) and fresh again once it thaws (SIGCONT). Every
step waits for what it needs (a log line, a datagram, a scrape), never for a fixed time.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from trio_klines.store.dataset import load

from e2e_support import WAIT, python, stop, wait_for

pytestmark = pytest.mark.timeout(180)

SEED = 5


def write_config(path: Path, streams: list[str]) -> None:
    quoted = ", ".join(json.dumps(s) for s in streams)
    path.write_text(f"streams = [{quoted}]\nreceive_timeout = 2.0\nbackoff_max = 1.0\n", encoding="utf-8")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def symbols_with_age(text: str) -> set[str]:
    return {dict(labels)["symbol"] for name, labels in samples(text)
            if name == "trio_klines_series_last_candle_age_seconds"}  # fmt: skip


class Notifications:
    """A fake systemd notify socket: the datagrams the recorder sends, in order."""

    def __init__(self) -> None:
        # A short directory: a Unix socket's path must fit in 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="tk-notify-"))
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)
        self.received: list[str] = []

    def read(self) -> list[str]:
        while True:
            try:
                self.received.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.received

    def seen(self, prefix: str) -> bool:
        return any(m.startswith(prefix) for m in self.read())

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notifications() -> Iterator[Notifications]:
    n = Notifications()
    try:
        yield n
    finally:
        n.close()


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=10)


def test_metrics_health_reload_and_notify_of_a_running_recorder(tmp_path: Path, notifications: Notifications) -> None:
    exchange = python("exchange", "--seed", str(SEED), "--faults", "garbage=0.05,error=0.05",
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    assert exchange.stdout is not None
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text(exchange.stdout.readline(), encoding="utf-8")
    config, data, log = tmp_path / "record.toml", tmp_path / "data", tmp_path / "record.log"
    write_config(config, ["spot:1s:BTCUSDT,BNBUSDT"])
    env_notify = {"NOTIFY_SOCKET": str(notifications.path)}
    with log.open("w", encoding="utf-8") as err:
        recorder = python("record", "--config", str(config), "--endpoints", str(endpoints), "--data", str(data),
                          "--flush-seconds", "0.2", "--metrics", "127.0.0.1:0", "--health-grace", "1", "--quiet",
                          "--log-format", "json", stdout=subprocess.DEVNULL, stderr=err,
                          extra_env=env_notify)  # fmt: skip
    frozen = False
    try:
        def logged(pattern: str) -> Callable[[], bool]:
            return lambda: re.search(pattern, log.read_text(encoding="utf-8")) is not None

        wait_for("READY=1 on the notify socket", lambda: notifications.seen("READY=1"), recorder, log)
        wait_for("the metrics URL in the log", logged(r"serving (http://127\.0\.0\.1:\d+)/metrics"), recorder, log)
        base = re.search(r"serving (http://127\.0\.0\.1:\d+)/metrics", log.read_text(encoding="utf-8"))
        assert base is not None
        metrics, health = base.group(1) + "/metrics", base.group(1) + "/healthz"

        # The counters move, faults included, and promtool accepts what is served.
        first = value(get(metrics).text, "trio_klines_closed_candles_total")
        wait_for("candles and faults counted", lambda: (t := get(metrics).text) is not None
                 and value(t, "trio_klines_closed_candles_total") > first + 4
                 and value(t, "trio_klines_malformed_frames_total") > 0
                 and value(t, "trio_klines_binance_errors_total") > 0, recorder, log)  # fmt: skip
        exposition = get(metrics).text
        tool = shutil.which("promtool")
        if tool is not None:  # tests/ops/test_metrics.py requires it in CI
            checked = subprocess.run([tool, "check", "metrics"], input=exposition, capture_output=True, text=True,
                                     timeout=30)  # fmt: skip
            assert checked.returncode == 0, checked.stdout + checked.stderr

        # Fresh, then stale while the exchange is frozen, then fresh again.
        wait_for("/healthz 200", lambda: get(health).status_code == 200, recorder, log)
        exchange.send_signal(signal.SIGSTOP)
        frozen = True
        wait_for("/healthz 503", lambda: get(health).status_code == 503, recorder, log)
        body = get(health).json()
        assert body["status"] == "unhealthy" and body["writer"] == "ok"
        assert {s["symbol"] for s in body["stale_series"]} == {"BTCUSDT", "BNBUSDT"}
        assert value(get(metrics).text, "trio_klines_stale_series", market="spot", interval="1s") == 2
        exchange.send_signal(signal.SIGCONT)
        frozen = False
        wait_for("/healthz 200 after the exchange resumed", lambda: get(health).status_code == 200, recorder, log,
                 timeout=WAIT)  # fmt: skip

        # SIGHUP: ETHUSDT added, BNBUSDT removed, live.
        write_config(config, ["spot:1s:BTCUSDT,ETHUSDT"])
        recorder.send_signal(signal.SIGHUP)
        wait_for("the reload", logged(r"config reloaded: added 1 series \(spot ETHUSDT-1s\); removed 1 series "
                                      r"\(spot BNBUSDT-1s\)"), recorder, log)  # fmt: skip
        wait_for("ETHUSDT recorded and BNBUSDT gone from the metrics",
                 lambda: symbols_with_age(get(metrics).text) == {"BTCUSDT", "ETHUSDT"}
                 and value(get(metrics).text, "trio_klines_series", market="spot", interval="1s") == 2,
                 recorder, log)  # fmt: skip
        assert notifications.seen("RELOADING=1\nMONOTONIC_USEC=")
        wait_for("ETHUSDT's candles in the store", lambda: len(load(data, "spot", "ETHUSDT", "1s")) >= 3, recorder, log)

        # A config that cannot be read is refused; the running series stay.
        config.write_text("streams = [\n", encoding="utf-8")
        recorder.send_signal(signal.SIGHUP)
        wait_for("the refusal", logged(r"SIGHUP: config refused, still recording 2 series as before: config file .* is "
                                       r"not valid TOML"), recorder, log)  # fmt: skip
        assert get(health).status_code in (200, 503)  # still serving
        assert symbols_with_age(get(metrics).text) == {"BTCUSDT", "ETHUSDT"}

        recorder.send_signal(signal.SIGINT)
        assert recorder.wait(timeout=60) == 130
        assert notifications.seen("STOPPING=1")
    finally:
        if frozen:
            exchange.send_signal(signal.SIGCONT)
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
        stop(exchange)

    lines = log.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]  # --log-format json: every line one object
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["time"]) for r in records)
    assert len(load(data, "spot", "ETHUSDT", "1s")) >= 3
    assert not [r for r in records if r["level"] == "ERROR" and "SIGHUP" not in r["message"]]
