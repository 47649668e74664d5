"""Gap-free record, end to end: faults, a SIGKILLed recorder restarted, an outage, then status and verify."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from trio_klines.core.markets import count_open_times

from e2e_support import (
    MIN,
    SERIES,
    START,
    check_against_truth,
    complete_through,
    holds,
    python,
    record_args,
    run_status,
    start_exchange,
    stop,
    total_rows,
    wait_for,
    wait_ready,
)

pytestmark = pytest.mark.timeout(180)

# Exchange time runs 600× faster: the recorder starts about 15 exchange minutes in.
OUTAGE = (START + 40 * MIN, START + 50 * MIN)
FAULTS = f"drop=0.003,stall=0.002,stall_s=3,cutoff=1500,outage={OUTAGE[0]}-{OUTAGE[1]},rest429=0.05,rest5xx=0.05"


def start_recorder(endpoints: Path, data: Path, log: Path) -> subprocess.Popen[str]:
    """``record`` with its stderr in ``log`` (a pipe nobody reads while it runs could fill and block it).

    ``--since START``: the record starts at the exchange's start, before the outage, however late a loaded
    machine starts the first recorder (at 600×, a few seconds late is past the outage).
    """
    with log.open("w", encoding="utf-8") as err:
        args = record_args(endpoints, data, "--since", str(START))
        return python(*args, stdout=subprocess.DEVNULL, stderr=err)


def test_killed_and_restarted_under_faults_the_record_is_exact(tmp_path: Path) -> None:
    data = tmp_path / "data"
    exchange, endpoints = start_exchange(tmp_path, FAULTS)
    try:
        first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
        first = start_recorder(endpoints, data, first_log)
        wait_ready(first, first_log)
        wait_for("a few candles of every series", lambda: holds(data, 5), first, first_log)
        first.kill()  # SIGKILL: no flush, no sealing (its landing files wait for the next run)
        first.wait(timeout=10)
        time.sleep(1.5)  # not a wait for anything: the exchange moves on, ~15 minutes nobody records live
        second = start_recorder(endpoints, data, second_log)
        wait_ready(second, second_log)
        # Stopped once the store holds everything from the first candle to well past the outage, and
        # enough of it for the comparison below.
        wait_for("the store to be complete through the outage", lambda: total_rows(data) > 200
                 and complete_through(data, OUTAGE[1] + 20 * MIN, outages=(OUTAGE,)), second, second_log)  # fmt: skip
        second.send_signal(signal.SIGINT)
        second.wait(timeout=30)
        err = second_log.read_text(encoding="utf-8")
        assert second.returncode == 130, err  # a clean stop on SIGINT
        assert "Traceback" not in err

        compared = check_against_truth(data, outages=(OUTAGE,))
        assert compared > 200

        code, report = run_status(data)
        assert code == 0, report
        assert set(report) == set(SERIES)
        for (market, symbol, interval), s in report.items():
            assert s["missing"] == 0
            assert s["exchange_gaps"] == count_open_times(interval, *OUTAGE), (market, symbol, interval, s)

        verify = python("verify", "--data", str(data), "--endpoints", str(endpoints), stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)  # fmt: skip
        out, err = verify.communicate(timeout=60)
        assert verify.returncode == 0, out + err
        assert "0 missing, 0 extra, 0 different" in out
    finally:
        stop(exchange)
