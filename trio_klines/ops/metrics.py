"""Prometheus metrics of a running :class:`~trio_klines.recorder.Recorder`, read when scraped.

Nothing is counted twice: the recorder's own counters (connections, writer, REST clients, backfill) are
read at scrape time by one collector, so the hot path pays nothing for metrics and a recorder without
``--metrics`` carries none. prometheus-client writes the exposition format.

Label cardinality stays bounded at 45,000 series: connection counters carry no label; REST answers carry
market and status; freshness is summed per market and interval (3 markets × 16 intervals at most). One age
gauge per series is exported only while the recorder has at most ``metrics_series_limit`` series (default
1,000); above that, only the stale ones are, stalest first, up to the same limit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from ..core.gaps import RangeSet
from ..core.health import Judged, stalest
from ..core.histogram import Histogram
from ..core.markets import count_open_times
from ..net.stream import ConnectionState

if TYPE_CHECKING:
    from ..recorder import Recorder

__all__ = ["CONTENT_TYPE", "RecorderCollector", "exposition", "metrics_registry"]

#: The text exposition format prometheus-client writes.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
PREFIX: Final = "trio_klines"

#: Counters of :class:`~trio_klines.recorder.RecorderStats`: (attribute, metric name, help).
_RECORDER_COUNTERS: Final = (
    ("messages", "messages", "WebSocket messages received (kline updates, open and closed)"),
    ("candles", "closed_candles", "closed candles received from the WebSocket streams"),
    ("written", "candles_written", "candles written durably to the store (live and backfilled)"),
    ("duplicates", "duplicates_dropped", "candles dropped as repeats of one already written"),
    ("revised", "candles_revised", "candles closed again with other values (written; the later wins)"),
    ("malformed", "malformed_frames", "WebSocket frames that were not a kline message"),
    ("binance_errors", "binance_errors", "error payloads Binance sent on a stream"),
    ("reconnects", "reconnects", "WebSocket reconnections"),
    ("silent_alarms", "silent_streams", "streams found silent for too long (the connection was replaced)"),
    ("write_errors", "write_errors", "failed writes to the store (kept and retried)"),
    ("rejected", "rejected_candles", "candles the store refused as invalid (dropped)"),
    ("gaps", "gaps", "holes found in a series' live record (each filled from REST)"),
    ("missing_candles", "gap_candles", "candles in the holes found"),
)


class RecorderCollector(Collector):
    """Every metric of ``recorder``, built from a snapshot of its counters on each scrape.

    ``clock`` gives wall-clock seconds for the ages (default: the recorder's, as ``/healthz`` uses). Runs on
    the recorder's event loop: the counters it reads change only between checkpoints, so a scrape sees them
    consistent.
    """

    def __init__(self, recorder: Recorder, *, clock: Callable[[], float] | None = None) -> None:
        self._rec = recorder
        self._clock = clock

    def collect(self) -> Iterator[Any]:
        rec = self._rec
        now = None if self._clock is None else int(self._clock() * 1000)
        stats = rec.stats()
        writer = rec.writer_stats
        yield from self._build_info()
        for attr, name, doc in _RECORDER_COUNTERS:
            counter = CounterMetricFamily(f"{PREFIX}_{name}", doc)
            counter.add_metric([], getattr(stats, attr))
            yield counter
        yield _gauge("pending_candles", "candles received and not yet durable", stats.pending)
        states = GaugeMetricFamily(f"{PREFIX}_connections", "WebSocket connections by state", labels=["state"])
        for state in ConnectionState:
            states.add_metric([state.value], sum(c.state == state for c in stats.connections))
        yield states
        yield _gauge("writer_failing", "1 while writes to the store fail (they are retried), else 0",
                     int(writer.failing_since is not None))  # fmt: skip
        yield from self._rest()
        yield from self._backfill()
        judged = rec.freshness(now, keep_every=len(rec.series) <= rec.config.metrics_series_limit)
        yield _gauge("healthy", "1 while /healthz answers 200 (every series fresh, the writer writing), else 0",
                     int(not judged.stale and rec.problem() is None))  # fmt: skip
        yield from self._freshness(judged)
        yield _histogram("close_to_durable_seconds", "seconds from a candle's close until it is durable, for the "
                         "newest closed candle of its series (one per series and flush)", writer.latency)  # fmt: skip
        yield _histogram("flush_duration_seconds", "seconds one write of a batch to the store took",
                         writer.flush_seconds)  # fmt: skip

    def _build_info(self) -> Iterator[Any]:
        info = InfoMetricFamily(f"{PREFIX}_build", "the trio-klines version running")
        info.add_metric([], {"version": _version()})
        yield info

    def _rest(self) -> Iterator[Any]:
        requests = CounterMetricFamily(f"{PREFIX}_rest_requests", "REST answers by market and HTTP status "
                                       "('error': none came: network, timeout, undecodable body)",
                                       labels=["market", "status"])  # fmt: skip
        for market, rest in sorted(self._rec.rest_stats().items()):
            for status, count in sorted(rest.statuses.items()):
                requests.add_metric([market, status], count)
        yield requests

    def _backfill(self) -> Iterator[Any]:
        backfiller = self._rec.backfiller
        stats = backfiller.stats if backfiller is not None else None
        counter = CounterMetricFamily(f"{PREFIX}_backfilled_candles", "candles fetched over REST by the backfill")
        counter.add_metric([], stats.candles if stats is not None else 0)
        yield counter
        yield _gauge("missing_candles", "candles known missing that the backfill has still to fetch",
                     stats.to_fetch if stats is not None else 0)  # fmt: skip
        gaps = GaugeMetricFamily(f"{PREFIX}_exchange_gap_candles", "candles of the recorded series that the "
                                 "exchange confirmed it never had (the exchange-gap ledger)",
                                 labels=["market", "interval"])  # fmt: skip
        if backfiller is not None:
            recorded = set(self._rec.series)
            totals: dict[tuple[str, str], int] = {}
            for s, ranges in backfiller.ledger.all().items():
                if s in recorded:
                    key = (s.market, s.interval)
                    totals[key] = totals.get(key, 0) + _candles(s.interval, ranges)
            for (market, interval), n in sorted(totals.items()):
                gaps.add_metric([market, interval], n)
        yield gaps

    def _freshness(self, judged: Judged) -> Iterator[Any]:
        labels = ["market", "interval"]
        count = GaugeMetricFamily(f"{PREFIX}_series", "series being recorded", labels=labels)
        stale = GaugeMetricFamily(f"{PREFIX}_stale_series", "series whose last closed candle is older than two "
                                  "intervals plus the health grace", labels=labels)  # fmt: skip
        oldest = GaugeMetricFamily(f"{PREFIX}_last_candle_age_seconds", "the largest age among the series of a "
                                   "market and interval: seconds since its last durable candle closed (or since "
                                   "its recording started, before its first)", labels=labels)  # fmt: skip
        for (market, interval), g in sorted(judged.groups.items()):
            count.add_metric([market, interval], g.series)
            stale.add_metric([market, interval], g.stale)
            if g.max_age_ms is not None:
                oldest.add_metric([market, interval], g.max_age_ms / 1000)
        yield from (count, stale, oldest)
        limit = self._rec.config.metrics_series_limit
        shown = judged.every if judged.every is not None else stalest(judged.stale, limit)
        each = GaugeMetricFamily(f"{PREFIX}_series_last_candle_age_seconds", "seconds since a series' last "
                                 "durable candle closed; every series up to metrics_series_limit, above it only "
                                 "the stale ones", labels=["market", "symbol", "interval"])  # fmt: skip
        for f in shown:
            each.add_metric([f.series.market, f.series.symbol, f.series.interval], f.age_ms / 1000)
        yield each


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trio-klines")
    except PackageNotFoundError:  # run from a tree that is not installed
        return "unknown"


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(f"{PREFIX}_{name}", doc)
    gauge.add_metric([], value)
    return gauge


def _histogram(name: str, doc: str, h: Histogram) -> HistogramMetricFamily:
    buckets = [("+Inf" if bound == float("inf") else repr(float(bound)), n) for bound, n in h.cumulative()]
    return HistogramMetricFamily(f"{PREFIX}_{name}", doc, buckets=buckets, sum_value=h.sum)


def _candles(interval: str, ranges: RangeSet) -> int:
    return sum(count_open_times(interval, lo, hi) for lo, hi in ranges)


def metrics_registry(recorder: Recorder, **options: Any) -> CollectorRegistry:
    """A registry holding only ``recorder``'s metrics (not the process-wide default registry, so two
    recorders in one process, or tests, never collide)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RecorderCollector(recorder, **options))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(registry)
