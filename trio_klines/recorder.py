"""The public engine: connections and the writer under one nursery, embeddable in any trio program.

::

    async with Recorder(config) as rec:      # connections and writer start here
        async for batch in rec.candles():    # optional: each durable batch, as it is written
            ...
    # leaving the block: connections stop, everything received is flushed, the store is compacted

or ``await Recorder(config).run()`` to record until cancelled. Signals are the CLI's business.

Data flows one way: each :class:`~trio_klines.net.stream.StreamConnection` sends batches of closed candles
into one bounded memory channel; the single writer task (:func:`~trio_klines.pipeline.writer.run_writer`) drops
repeats, reports gaps and appends to the store. A failing connection reconnects on its own and never
takes the others down; only a bug in the writer (not a disk error: those are retried) ends the recorder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Self

import httpx
import trio

from .config import RecorderConfig
from .core.gaps import ContinuityTracker, Gap
from .core.health import Judged, health_body, judge
from .core.markets import (
    Market,
    Series,
    count_open_times,
    next_open_time,
    plan_connections,
    stream_name,
)
from .core.paging import catch_up_plan
from .core.parse import Candle
from .core.symbols import Listing, describe_not_trading, describe_unknown
from .core.timefmt import iso_ms
from .core.validity import STORED_AHEAD_MS
from .errors import ConfigError, StoreError
from .net.exchange_info import check_series, fetch_listings
from .net.rest import RestClient, RestStats, new_http_client, rest_clients
from .net.stream import ConnectionStats, StreamConnection
from .net.transport import Transport, trio_websocket_transport
from .pipeline.backfill import Backfiller
from .pipeline.supervision import single_error
from .pipeline.threads import run_in_thread
from .pipeline.universe import UniverseFollower
from .pipeline.writer import CandleSink, SinkRunner, WriterStats, run_writer
from .store.ended import mark_ended, unmark_ended
from .store.ledger import ExchangeGapLedger

if TYPE_CHECKING:
    from .pipeline.archive import ArchiveImporter

__all__ = ["Reconfigured", "Recorder", "RecorderStats"]

log = logging.getLogger("trio_klines.recorder")
record_log = logging.getLogger("trio_klines.record")


@dataclass(frozen=True)
class RecorderStats:
    """A snapshot of the recorder's counters (``rec.stats()``)."""

    messages: int
    candles: int
    reconnects: int
    malformed: int
    binance_errors: int
    silent_alarms: int
    written: int
    duplicates: int
    gaps: int
    missing_candles: int
    write_errors: int
    #: Candles received and not written (yet): after a stop cut short, those that were lost.
    pending: int
    connections: tuple[ConnectionStats, ...] = field(default=())
    #: Candles the store refused one by one (not valid candles); the rest of their batch was written.
    rejected: int = 0
    #: Candles closed again with other values: written, the later wins.
    revised: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        live = sum(c.state == "live" for c in self.connections)
        return (
            f"{self.written} candles written, {self.messages} messages, {live}/{len(self.connections)} connections "
            f"live, {self.reconnects} reconnects, {self.gaps} gaps ({self.missing_candles} candles), "
            f"{self.malformed} malformed, {self.rejected} rejected, {self.write_errors} write errors, "
            f"{self.pending} pending"
        )


def _configured_transport(config: RecorderConfig) -> Transport:
    """The transport ``config.transport`` names (the config has checked the name)."""
    connect_timeout = min(10.0, config.receive_timeout)
    if config.transport == "websockets":
        from .net.websockets_transport import websockets_transport  # only this transport needs the websockets library

        return websockets_transport(connect_timeout=connect_timeout, read_interval=config.read_interval)
    return trio_websocket_transport(connect_timeout=connect_timeout)


class Recorder:
    """Records ``config.streams`` into ``config.data_dir`` (or into ``sink``) until stopped.

    ``sink`` replaces the Parquet store (anything with ``append(candles)``); ``transport`` replaces the
    WebSocket transport; ``run_sink`` how the sink is called (a worker thread by default). They exist
    for tests and unusual embeddings.

    Entering (``async with``) opens the store, plans the start-up catch-up and starts the connections, the
    writer and the backfiller; leaving stops the connections, flushes everything received and compacts.
    The blocking parts of both (opening the store and replaying its journal, reading the store's coverage,
    reading and saving the exchange-gap ledger, the final compaction) run in worker threads, never on the
    event loop.

    Raises:
      ConfigError: a setting the recorder cannot use.
      StoreLocked: another process records into ``config.data_dir``.
      StoreError: the data directory cannot be opened or written.
      Exception: a bug in one of the recorder's tasks, as it was raised. Whatever happens inside, the
        recorder raises a single exception, never an exception group: connections that fail reconnect,
        disk errors are retried, and a failing REST call is retried later.
    """

    def __init__(
        self,
        config: RecorderConfig,
        *,
        sink: CandleSink | None = None,
        transport: Transport | None = None,
        run_sink: SinkRunner | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        self._run_sink = run_sink or run_in_thread
        self._sink = sink
        self._owns_sink = sink is None
        self._transport = transport or _configured_transport(config)
        self._connections: dict[str, tuple[StreamConnection, trio.CancelScope]] = {}
        # What ended connections counted: kept as sums, not as the connections, so churn costs no memory.
        self._retired_counts = dict.fromkeys(_CONNECTION_COUNTS, 0)
        # The series being recorded, the truth for add/remove (config.streams cannot be empty).
        self._series: dict[Series, None] = dict.fromkeys(config.streams)
        self._writer_stats = WriterStats()
        self._tracker = ContinuityTracker()
        self._subscribers: list[trio.MemorySendChannel[list[Candle]]] = []
        self._stack: AsyncExitStack | None = None
        self._send: trio.MemorySendChannel[Sequence[Candle]] | None = None
        self._conn_nursery: trio.Nursery | None = None
        self._counter = 0
        self._http = http
        self._owns_http = http is None
        self._clients: dict[str, RestClient] | None = None
        self.backfiller: Backfiller | None = None
        self.gaps: list[Gap] = []
        self._receive: trio.MemoryReceiveChannel[Sequence[Candle]] | None = None
        # Set by the writer each time it has emptied the channel: a stop waits for it, not by polling.
        self._caught_up = trio.Event()
        #: Follows ``config.universes`` (None without any): the listings, the series they selected.
        self.universe: UniverseFollower | None = None
        #: The start-up catch-up's archive import, once started (its ``stats``).
        self.archive: ArchiveImporter | None = None
        self._universe_scope = trio.CancelScope()
        self._explicit = frozenset(config.streams)
        # When each series' recording started (ms): a series with no candle yet is fresh until two intervals on.
        self._since: dict[Series, int] = {}
        #: The base URL of ``/metrics`` and ``/healthz`` once served (``config.metrics``), else None.
        self.ops_url: str | None = None
        self._ops_scope = trio.CancelScope()
        # The start-up catch-up's ranges per series (end None: up to now), until it is done.
        self._catching_up: dict[Series, list[tuple[int, int | None]]] = {}
        #: ``float`` or ``exact`` prices and volumes: the store's, once it is open (``config.numbers`` before).
        self.numbers: str = config.numbers or "float"

    # --- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("this Recorder is already running")
        try:
            if self.config.check_symbols and self.config.streams:
                await self._check_symbols()
            if self.config.universes:
                await self._resolve_universe()
            if self._sink is None:
                self._sink = await trio.to_thread.run_sync(self._open_store)
            sink = self._sink
            self._set_numbers(getattr(sink, "numbers", None) or self.config.numbers or "float")
            stored, plan, ledger = await trio.to_thread.run_sync(self._prepare, sink)
            if self.universe is not None:  # with the store locked: ours to write
                await self._mark_ended(sorted(self.universe.recorded), None)
        except BaseException:  # nothing runs yet: close what was opened (a locked store, say, after the check)
            await self._close_http()
            await self._close_owned_store()
            raise
        for series, open_time in stored.items():
            self._tracker.seed(series, open_time)
            self._writer_stats.last_open_time[series] = open_time
        stack = AsyncExitStack()
        try:
            outer = await stack.enter_async_context(trio.open_nursery())
            send, receive = trio.open_memory_channel[Sequence[Candle]](self.config.channel_size)
            self._send, self._receive = send, receive
            outer.start_soon(self._run_writer, receive, sink)
            if self.config.metrics_address is not None:
                self.ops_url = await outer.start(self._serve_ops)
            self._since = dict.fromkeys(self._series, _now_ms())
            self._conn_nursery = await outer.start(self._run_connections)
            if ledger is not None:
                self._start_backfill(plan, ledger)
            recorded = list(self._series)
            for market in sorted({s.market for s in recorded}):
                streams = [stream_name(s.symbol, s.interval) for s in recorded if s.market == market]
                for group in plan_connections(self.config.market(market), streams, max_url_length=None):
                    self._start_connection(market, group)
            if self.universe is not None:
                self._conn_nursery.start_soon(self._follow_universe, name="universe")
        except BaseException as exc:
            try:
                await _exit_unwrapped(stack, exc)
            finally:
                await self._after_stop()
            raise
        self._stack = stack
        for line in self._describe():
            log.info("%s", line)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        try:
            await self._stop()
        finally:
            try:
                await _exit_unwrapped(stack, None)
            finally:
                await self._after_stop()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Record until cancelled; on cancellation everything received is flushed first.

        ``await nursery.start(recorder.run)`` returns once the recorder is running (store open,
        connections and writer started). Raises what entering the recorder raises (see the class).
        """
        async with self:
            task_status.started()
            await trio.sleep_forever()

    async def _stop(self) -> None:
        """Stop the connections, give the writer and running backfills a moment, then drain and flush."""
        self._universe_scope.cancel()
        for _conn, scope in self._connections.values():
            scope.cancel()
        try:
            if self.backfiller is not None:
                # Holes would otherwise wait for the next start; bounded, so a stop stays prompt. The
                # writer finds holes as it takes candles off the channel: let it take what the connections
                # sent first, so the holes in that are filled too.
                with trio.move_on_after(self.config.stop_grace):
                    assert self._send is not None
                    if self._send.statistics().current_buffer_used:
                        self._caught_up = trio.Event()
                        await self._caught_up.wait()
                    await self.backfiller.wait_idle()
        finally:
            if self._conn_nursery is not None:
                self._conn_nursery.cancel_scope.cancel()
            if self._send is not None:
                self._send.close()
            self._ops_scope.cancel()

    async def _after_stop(self) -> None:
        """The cleanup, on every exit path (a cancellation too): each step shielded, and run whatever the
        steps before it did; the first error is raised once all have run."""
        for channel in self._subscribers:
            channel.close()
        self._count_unwritten()
        error: Exception | None = None
        for step in (self._close_http, self._save_ledger, self._close_owned_store):
            try:
                await step()
            except Exception as exc:
                log.error("cleanup: %s failed: %r", step.__name__.strip("_").replace("_", " "), exc)
                error = error or exc
        if error is not None:
            raise error

    def _count_unwritten(self) -> None:
        """A stop cut short leaves batches in the channel that the writer never took: count them as pending,
        so ``stats().pending`` says how many received candles were not written."""
        if self._receive is None:
            return
        while True:
            try:
                self._writer_stats.pending += len(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return

    async def _close_http(self) -> None:
        if self._owns_http and self._http is not None:
            # Bounded: closing waits for nothing that matters, and a stuck socket must not hold the stop up.
            with trio.CancelScope(shield=True), trio.move_on_after(HTTP_CLOSE_GRACE):
                await self._http.aclose()

    async def _save_ledger(self) -> None:
        if self.backfiller is not None:
            with trio.CancelScope(shield=True):  # exchange gaps a full disk kept from being written
                await trio.to_thread.run_sync(self.backfiller.ledger.save)

    async def _close_owned_store(self) -> None:
        if self._owns_sink and self._sink is not None:
            sink, self._sink = self._sink, None
            # Shielded: a cancelled recorder still leaves the store sealed and unlocked.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._close_store, sink)

    def _open_store(self) -> CandleSink:
        from .store.dataset import Store  # imported here: a recorder given its own sink never loads pyarrow

        return Store(self.config.data_dir, seal_seconds=self.config.seal_seconds, numbers=self.config.numbers)

    def _set_numbers(self, numbers: str) -> None:
        """Record ``numbers`` (those of the store, else of the config): exact ones parse Binance's strings as sent."""
        self.numbers = numbers
        for client in (self._clients or {}).values():  # made for the symbol check, before the store was open
            client.exact = numbers == "exact"

    @staticmethod
    def _close_store(sink: Any) -> None:
        try:
            summary = sink.compact()
            log.info("sealed: %s", summary)
        except StoreError as exc:  # a full disk, say: expected, so no traceback
            log.error("sealing at shutdown failed (%s); the rows stay in the landing files, where load sees them", exc)
        except Exception:
            log.exception("sealing at shutdown failed; the rows stay in the landing files, where load sees them")
        finally:
            sink.close()

    # --- tasks --------------------------------------------------------------------------------

    def _prepare(
        self, sink: CandleSink
    ) -> tuple[dict[Series, int], list[tuple[Series, int, int | None]], ExchangeGapLedger | None]:
        """Where each series stands in ``sink``, the catch-up plan and the exchange-gap ledger (blocking)."""
        last = getattr(sink, "last_open_times", None)
        stored: dict[Series, int] = dict(last()) if callable(last) else {}
        # A stored row from the future (an older version let one in) is not where a series stands: seeded with
        # it, the gap tracker would call every later candle late. ``status`` sets such rows aside the same way.
        horizon = _now_ms() + STORED_AHEAD_MS
        beyond = sorted(s for s, t in stored.items() if t >= horizon)
        if beyond:
            log.error("%d series hold rows beyond the clock (%s); where they stand is read without them",
                      len(beyond), ", ".join(map(str, beyond[:5])))  # fmt: skip
            stored = {s: t for s, t in stored.items() if t < horizon}
        if not self.config.backfill:
            return stored, [], None
        return stored, self._catch_up_plan(stored, horizon), ExchangeGapLedger(self.config.data_dir)

    def _catch_up_plan(self, stored: dict[Series, int], horizon: int) -> list[tuple[Series, int, int | None]]:
        """What the start-up catch-up fetches: from ``since`` (or the first stored candle) to now, less what
        the store holds; rows opening at or after ``horizon`` (beyond the clock) are set aside. Reads the
        store's coverage: run it in a worker thread."""
        held: dict[Series, Any] = {}
        if self._owns_sink:
            from .store.coverage import coverage

            # Every series, stored or not: one whose only files were quarantined has its lost range to fetch.
            held = coverage(self.config.data_dir, list(self.config.streams), until=horizon)
        plan = []
        for s in self.config.streams:
            cov = held.get(s)
            if cov is not None and cov.first is not None:
                first, last, holes = cov.first, cov.last, cov.gaps
            else:  # a sink without coverage knows only where each series stands
                first = last = stored.get(s)
                holes = ()
            start = self.config.since if first is None or self.config.since is None else min(first, self.config.since)
            listed = self.universe.listed_at.get(s) if self.universe is not None else None
            if start is not None and listed is not None and first is None:
                start = max(start, listed)  # nothing to fetch from before the listing
            plan += [(s, lo, hi) for lo, hi in catch_up_plan(s.interval, first, last, holes, start)]
        return plan

    def _start_backfill(self, plan: Sequence[tuple[Series, int, int | None]], ledger: ExchangeGapLedger) -> None:
        """REST clients (one weight budget per pool), the backfiller, and the start-up catch-up (exchange gaps
        are skipped by the backfiller)."""
        assert self._conn_nursery is not None and self._send is not None
        self.backfiller = Backfiller(self._rest_clients(), self._send.clone(), ledger)
        self._conn_nursery.start_soon(self.backfiller.run, name="backfill")
        for s, start, end in plan:
            self._catching_up.setdefault(s, []).append((start, end))
        if plan:
            now = _now_ms()
            total = sum(count_open_times(s.interval, start, now if end is None else end) for s, start, end in plan)
            log.info("catch-up: %d candles of %d series to fetch from %s on (%s)", total, len(self._catching_up),
                     iso_ms(min(start for _, start, _ in plan)), self.config.history_source)  # fmt: skip
            self._conn_nursery.start_soon(self._report_catch_up, total, name="catch-up progress")
        if plan and self.config.history_source != "rest" and callable(getattr(self._sink, "append_table", None)):
            self.backfiller.hold()  # wait_idle() waits for the import to hand over what REST must fetch
            self._conn_nursery.start_soon(self._import_archive, plan, name="archive")
            return
        for s, start, end in plan:
            self.backfiller.request(s, start, end)

    def _expected_gap(self, gap: Gap) -> bool:
        """Whether the start-up catch-up is filling ``gap`` already (the hole a restart leaves)."""
        ranges = self._catching_up.get(gap.series, ())
        return any(lo <= gap.start and (hi is None or gap.end <= hi) for lo, hi in ranges)

    async def _report_catch_up(self, total: int) -> None:
        """Log the start-up catch-up's progress every :data:`CATCH_UP_LOG_EVERY` seconds, then its end."""
        assert self.backfiller is not None
        started = trio.current_time()
        while True:
            with trio.move_on_after(CATCH_UP_LOG_EVERY):
                await self.backfiller.wait_idle()
                log.info("catch-up: done, %d candles fetched in %.0fs", self._fetched(), trio.current_time() - started)
                self._catching_up.clear()
                return
            fetched = self._fetched()
            log.info("catch-up: %d of %d candles fetched (%.0f%%)", fetched, total,
                     100 * min(fetched, total) / max(total, 1))  # fmt: skip

    def _fetched(self) -> int:
        rest = self.backfiller.stats.candles if self.backfiller is not None else 0
        return rest + (self.archive.stats.candles if self.archive is not None else 0)

    async def _import_archive(self, plan: Sequence[tuple[Series, int, int | None]]) -> None:
        """The start-up catch-up through the data archive (what it has published), REST for the rest."""
        from .pipeline.archive import ArchiveImporter

        assert self.backfiller is not None and self._http is not None
        markets = {m: self.config.market(m) for m in self.config.markets_recorded}
        self.archive = ArchiveImporter(markets, self._http, self._sink, self.backfiller, self._rest_clients(),
                                       rest=self.config.history_source == "auto")  # fmt: skip
        try:
            stats = await self.archive.run(plan)
        finally:
            self.backfiller.release()
        if stats.files_total:
            log.info("archive: %d candles from %d files; %d missing, %d broken (their candles over REST)",
                     stats.candles, stats.files_stored, stats.missing, stats.failed)  # fmt: skip

    def _rest_clients(self) -> dict[str, RestClient]:
        """One REST client per market recorded, made once: the symbol check and the backfill share the budget."""
        if self._clients is None:
            if self._http is None:
                self._http = new_http_client()
            markets = self.config.markets_recorded
            self._clients = rest_clients([self.config.market(m) for m in markets], self._http,
                                         exact=self.numbers == "exact")  # fmt: skip
        return self._clients

    async def _check_symbols(self) -> None:
        """Every series against its market's exchangeInfo: unknown symbols refused, non-trading ones skipped."""
        check = await check_series(
            self.config.streams, self._rest_clients(), give_up_after=self.config.check_symbols_timeout
        )
        if check.unknown:
            raise ConfigError(f"unknown symbol(s): {describe_unknown(check.unknown)}")
        if check.not_trading:
            if not check.recordable:
                raise ConfigError(f"nothing to record, no symbol trades: {describe_not_trading(check.not_trading)}")
            log.warning(
                "not recording %d series whose symbol does not trade: %s",
                len(check.not_trading),
                describe_not_trading(check.not_trading),
            )
            self._series = dict.fromkeys(check.recordable)
            self._sync_config()

    async def _resolve_universe(self) -> None:
        """The universes' first selection, from the markets' listings: recorded from the start."""
        clients = self._rest_clients()
        timeout = self.config.check_symbols_timeout

        async def fetch(markets: Sequence[str]) -> Mapping[str, Mapping[str, Listing]]:
            return await fetch_listings(clients, markets, give_up_after=timeout)

        self.universe = UniverseFollower(self.config.universes, fetch, refresh=self.config.universe_refresh)
        selected = await self.universe.resolve()
        log.info(
            "universe: %d series from %s",
            len(selected),
            "; ".join(str(spec) for spec in self.config.universes),
        )
        if not selected and not self._series:
            log.warning("nothing to record yet: no listing selected a series; trying again every %gs",
                        self.config.universe_refresh)  # fmt: skip
        self._series.update(dict.fromkeys(selected))
        self._sync_config()

    async def _follow_universe(self) -> None:
        assert self.universe is not None
        with self._universe_scope:
            await self.universe.run(self._universe_added, self._universe_ended)

    async def _universe_added(self, added: Sequence[Series], starts: Mapping[Series, int | None]) -> None:
        """Record series a listing added; backfill each from its listing (or ``since``, if later)."""
        await self.add_streams(added)
        await self._mark_ended(added, None)
        if self.backfiller is None:
            return
        for s in added:
            known = [t for t in (starts.get(s), self.config.since) if t is not None]
            if known:
                self.backfiller.request(s, max(known))

    async def _universe_ended(self, ended: Sequence[Series], why: Mapping[Series, str]) -> None:
        """Stop recording series a listing no longer selects (delisted, halted), unless also listed by name;
        the store notes them as ended, for ``status``."""
        gone = [s for s in ended if s not in self._explicit]
        await self.remove_streams(gone)
        await self._mark_ended(gone, why)

    async def _mark_ended(self, series: Sequence[Series], why: Mapping[Series, str] | None) -> None:
        """Note ``series`` as ended in the store (``why`` given) or as recorded again; a failure is logged."""
        if not series or not self._owns_sink:
            return
        root, at = self.config.data_dir, _now_ms()
        try:
            if why is None:
                await trio.to_thread.run_sync(unmark_ended, root, series)
            else:
                await trio.to_thread.run_sync(mark_ended, root, series, at, why)
        except OSError as exc:
            log.error("cannot note %d series as %s in the store (%s)", len(series), "ended" if why else "recorded",
                      exc)  # fmt: skip

    def _on_gap(self, gap: Gap) -> None:
        self.gaps.append(gap)
        if self.backfiller is not None:
            self.backfiller.request_gap(gap)

    async def _serve_ops(self, task_status: trio.TaskStatus[str]) -> None:
        """``/metrics`` and ``/healthz`` until the stop's end (they answer while it flushes)."""
        from .ops.http import serve_ops  # only a recorder that serves metrics loads hypercorn and prometheus

        address = self.config.metrics_address
        assert address is not None
        with self._ops_scope:
            await serve_ops(self, *address, task_status=task_status)

    async def _run_connections(self, task_status: trio.TaskStatus[trio.Nursery]) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started(nursery)
            await trio.sleep_forever()

    async def _run_writer(self, receive: trio.MemoryReceiveChannel[Sequence[Candle]], sink: CandleSink) -> None:
        await run_writer(
            receive,
            sink,
            settings=self.config.writer_settings(),
            tracker=self._tracker,
            stats=self._writer_stats,
            on_gap=self._on_gap,
            on_written=self._written,
            on_caught_up=self._note_caught_up,
            run_sink=self._run_sink,
            expected_gap=self._expected_gap,
        )

    def _note_caught_up(self) -> None:
        self._caught_up.set()

    async def _written(self, batch: list[Candle]) -> None:
        if record_log.isEnabledFor(logging.INFO):
            for c in batch:
                end = datetime.fromtimestamp(c.end_time / 1000, UTC)
                record_log.info("Record %s %s-%s at %s", c.market, c.symbol, c.interval, end)
        for channel in list(self._subscribers):
            try:
                await channel.send(batch)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(channel)  # the embedder stopped listening

    def _start_connection(self, market: str, streams: Sequence[str]) -> StreamConnection:
        assert self._conn_nursery is not None and self._send is not None
        name = f"{market}-{self._counter}"
        self._counter += 1
        conn = StreamConnection(
            name,
            self.config.market(market),
            streams,
            self._send.clone(),
            settings=self.config.stream_settings(),
            transport=self._transport,
            exact=self.numbers == "exact",
        )
        scope = trio.CancelScope()

        async def run() -> None:
            try:
                with scope:
                    await conn.run()
            finally:
                self._connections.pop(name, None)
                for key in _CONNECTION_COUNTS:
                    self._retired_counts[key] += getattr(conn.stats, key)

        self._connections[name] = (conn, scope)
        self._conn_nursery.start_soon(run, name=name)
        return conn

    # --- run-time changes ---------------------------------------------------------------------

    @property
    def series(self) -> tuple[Series, ...]:
        """The series being recorded now, after every :meth:`add_streams` and :meth:`remove_streams`."""
        return tuple(self._series)

    async def add_streams(self, series: Iterable[Series]) -> None:
        """Start recording more series: ``SUBSCRIBE`` on a connection with room, or a new connection.

        Series already recorded are ignored. Raises :class:`ConfigError` for a market the config lacks.
        """
        self._check_running()
        wanted = [s for s in dict.fromkeys(series) if s not in self._series]
        for s in wanted:
            if s.market not in self.config.markets:
                raise ConfigError(f"unknown market {s.market!r}")
        self._series.update(dict.fromkeys(wanted))  # before any await: a concurrent call sees them
        self._since.update(dict.fromkeys(wanted, _now_ms()))
        self._sync_config()
        for market in sorted({s.market for s in wanted}):
            streams = [stream_name(s.symbol, s.interval) for s in wanted if s.market == market]
            await self._subscribe(self.config.market(market), streams)

    async def _subscribe(self, market: Market, streams: list[str]) -> None:
        """``streams`` of ``market`` onto the connections with room, then onto new ones."""
        for conn, _scope in list(self._connections.values()):
            if conn.market.name != market.name or not streams:
                continue
            room = market.max_streams_per_connection - len(conn.streams)
            take = streams[: max(room, 0)]  # beyond its URL, a connection subscribes (see url_streams)
            if take:
                await conn.subscribe(take)
                streams = streams[len(take) :]
        for group in plan_connections(market, streams, max_url_length=None):
            self._start_connection(market.name, group)

    async def remove_streams(self, series: Iterable[Series]) -> None:
        """Stop recording these series: ``UNSUBSCRIBE``, or stop a connection left with none.

        Series not recorded are ignored. Removing every series leaves the recorder running with none,
        ready for :meth:`add_streams`.
        """
        self._check_running()
        gone = [s for s in dict.fromkeys(series) if s in self._series]
        # (market, stream) pairs: the same symbol and interval on two markets are two streams.
        pairs = {(s.market, stream_name(s.symbol, s.interval)) for s in gone}
        for s in gone:
            del self._series[s]
            self._since.pop(s, None)
        self._sync_config()
        for name, (conn, scope) in list(self._connections.items()):
            mine = [st for st in conn.streams if (conn.market.name, st) in pairs]
            if not mine:
                continue
            if len(mine) == len(conn.streams):
                # Forgotten at once, so that an add_streams right after never subscribes on a dying socket.
                del self._connections[name]
                scope.cancel()
            else:
                await conn.unsubscribe(mine)

    async def reconfigure(self, config: RecorderConfig) -> Reconfigured:
        """Apply ``config``'s series to the running recorder (what a SIGHUP does with the re-read config file).

        Series listed by name that ``config`` adds are checked against exchangeInfo (unless ``check_symbols``
        is off), recorded, and caught up: from the newest stored candle, or from ``since`` for a series the
        store lacks. Series it no longer lists are removed, unless a universe selects them. Other settings
        that differ (timeouts, universes, the data directory…) apply at the next start: they are named in
        the result, not applied.

        Raises :class:`ConfigError`, changing nothing, for an unknown symbol or a market the running
        config lacks.
        """
        self._check_running()
        wanted = dict.fromkeys(config.streams)
        selected = self.universe.recorded if self.universe is not None else set()
        added = [s for s in wanted if s not in self._series]
        removed = [s for s in self._explicit if s not in wanted and s not in selected]
        unknown_markets = sorted({s.market for s in added} - set(self.config.markets))
        if unknown_markets:
            raise ConfigError(f"unknown market(s) {', '.join(unknown_markets)}")
        skipped: list[Series] = []
        if added and config.check_symbols:
            check = await check_series(added, self._rest_clients(), give_up_after=config.check_symbols_timeout)
            if check.unknown:
                raise ConfigError(f"unknown symbol(s): {describe_unknown(check.unknown)}")
            if check.not_trading:
                log.warning("not recording %d series whose symbol does not trade: %s", len(check.not_trading),
                            describe_not_trading(check.not_trading))  # fmt: skip
                recordable = set(check.recordable)
                skipped = [s for s in added if s not in recordable]
                added = [s for s in added if s in recordable]
        ignored = [f.name for f in fields(RecorderConfig) if f.name not in _LIVE_SETTINGS
                   and getattr(config, f.name) != getattr(self.config, f.name)]  # fmt: skip
        self._explicit = frozenset(wanted)
        await self.remove_streams(removed)
        await self.add_streams(added)
        self._catch_up_added(added)
        return Reconfigured(tuple(added), tuple(removed), tuple(skipped), tuple(ignored))

    def _catch_up_added(self, added: Sequence[Series]) -> None:
        """Backfill series added while running, at once rather than at their first live candle: from their
        newest candle stored or written (known for every stored series since the start), or from ``since``
        for a series the store lacks."""
        if self.backfiller is None:
            return
        for s in added:
            last = self._writer_stats.last_open_time.get(s)
            if last is not None:
                self.backfiller.request(s, next_open_time(s.interval, last))
            elif self.config.since is not None:
                self.backfiller.request(s, self.config.since)

    def _sync_config(self) -> None:
        # A config holds at least one series: with none left, it keeps the last ones (``series`` is current).
        if self._series:
            self.config = _with_series(self.config, list(self._series))

    def candles(self, buffer: int = 100) -> trio.MemoryReceiveChannel[list[Candle]]:
        """A channel of every batch of candles once it is durable on disk, deduplicated, in write order.

        The writer waits for a slow reader rather than drop anything, so read it promptly (or close it:
        a closed channel is forgotten). It ends when the recorder stops.
        """
        send, receive = trio.open_memory_channel[list[Candle]](buffer)
        self._subscribers.append(send)
        return receive

    # --- introspection ------------------------------------------------------------------------

    def stats(self) -> RecorderStats:
        conns = tuple(ConnectionStats(**asdict(c.stats)) for c, _ in self._connections.values())
        counts = {key: total + sum(getattr(c, key) for c in conns) for key, total in self._retired_counts.items()}
        unsent = counts.pop("unsent")
        w = self._writer_stats
        return RecorderStats(
            **counts,
            written=w.written,
            duplicates=w.duplicates,
            gaps=w.gaps,
            missing_candles=w.missing_candles,
            write_errors=w.write_errors,
            pending=w.pending + unsent,
            rejected=w.rejected,
            revised=w.revised,
            connections=conns,
        )

    @property
    def writer_stats(self) -> WriterStats:
        """The writer's live counters (read them, do not change them): ``last_open_time`` per series, the
        close-to-durable ``latency`` and ``flush_seconds`` histograms, ``failing_since``."""
        return self._writer_stats

    def rest_stats(self) -> dict[str, RestStats]:
        """The REST clients' counters per market (``statuses``: answers by HTTP status); empty before any."""
        return {market: client.stats for market, client in (self._clients or {}).items()}

    def freshness(self, now: int | None = None, *, keep_every: bool = False) -> Judged:
        """Every recorded series judged at ``now`` (ms, default the local clock): how old its last durable
        candle is and whether that is stale, summed per market and interval, the stale ones listed (and all,
        with ``keep_every``); see :mod:`trio_klines.core.health`."""
        now = _now_ms() if now is None else now
        grace = int(self.config.health_grace * 1000)
        return judge(self._series, self._writer_stats.last_open_time, self._since, now, grace, keep_every=keep_every)

    def health(self, now: int | None = None) -> tuple[bool, dict[str, Any]]:
        """What ``/healthz`` answers: healthy (every series fresh, the writer writing), and a JSON-ready body
        naming the stale series and the writer's problem otherwise."""
        return health_body(self.freshness(now), self.problem())

    def problem(self) -> str | None:
        """What keeps the recorder from being healthy whatever its series: failing writes, or not running."""
        w = self._writer_stats
        if w.failing_since is not None:
            return f"writes failing since {iso_ms(int(w.failing_since * 1000))}: {w.last_error}"
        if self._stack is None:
            return "not recording (starting or stopped)"
        return None

    def _check_running(self) -> None:
        if self._stack is None:
            raise RuntimeError("the Recorder is not running: use it as `async with Recorder(config) as rec:`")

    def _describe(self) -> list[str]:
        lines = [f"recording {len(self.config.streams)} series into {self.config.data_dir}"]
        lines += [
            f"{name}: {len(c.streams)} streams, {c.url.split('?')[0]}" for name, (c, _) in self._connections.items()
        ]
        return lines


async def _exit_unwrapped(stack: AsyncExitStack, exc: BaseException | None) -> None:
    """Leave ``stack`` (the recorder's nurseries), raising a single exception rather than a group."""
    info = (type(exc), exc, exc.__traceback__) if exc is not None else (None, None, None)
    with single_error():
        await stack.__aexit__(*info)


#: Seconds between two log lines on the start-up catch-up's progress.
CATCH_UP_LOG_EVERY: Final = 30.0
#: How long closing the recorder's own HTTP client may take when it stops.
HTTP_CLOSE_GRACE: Final = 5.0
#: The counters of a connection that a recorder's stats add up, ended connections included.
_CONNECTION_COUNTS: Final = (
    "messages", "candles", "reconnects", "malformed", "binance_errors", "silent_alarms", "unsent"
)  # fmt: skip


@dataclass(frozen=True)
class Reconfigured:
    """What :meth:`Recorder.reconfigure` did: series added and removed, series skipped (listed, not
    trading), and the settings that differ but apply only at the next start."""

    added: tuple[Series, ...]
    removed: tuple[Series, ...]
    skipped: tuple[Series, ...] = ()
    ignored: tuple[str, ...] = ()

    def summary(self) -> str:
        def names(series: Sequence[Series]) -> str:
            shown = ", ".join(map(str, series[:10]))
            return shown + (f" and {len(series) - 10} more" if len(series) > 10 else "")

        parts = []
        if self.added:
            parts.append(f"added {len(self.added)} series ({names(self.added)})")
        if self.removed:
            parts.append(f"removed {len(self.removed)} series ({names(self.removed)})")
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} not trading ({names(self.skipped)})")
        if not parts:
            parts.append("no series changed")
        if self.ignored:
            parts.append(f"changed at the next start only: {', '.join(self.ignored)}")
        return "; ".join(parts)


#: Settings :meth:`Recorder.reconfigure` applies live (the series); every other one needs a restart.
_LIVE_SETTINGS: Final = frozenset({"streams"})


def _now_ms() -> int:
    return int(time.time() * 1000)


def _with_series(config: RecorderConfig, streams: Sequence[Series]) -> RecorderConfig:
    return replace(config, streams=tuple(streams))
