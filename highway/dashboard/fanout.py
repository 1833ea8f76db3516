"""Every worker's events to every worker's dashboards, through PostgreSQL LISTEN/NOTIFY.

Each worker publishes its events with NOTIFY on one channel and listens on it, its own
included, so all dashboards see the same events in the same order (PostgreSQL delivers
notifications in commit order). Publishing never waits for the database: events queue, and
one task sends whatever has queued in one transaction. If the queue overflows, or the
listening connection drops, subscribers are interrupted, and dashboards reconnect and
start again from a snapshot of the database, which has every call's record and events.
"""

from __future__ import annotations

import logging
import uuid

import orjson
import trio

from highway.dashboard.hub import Event, EventHub
from highway.store import DatabaseUnavailable, Store
from highway.store.listen import listen

__all__ = ["PostgresFanout", "fit_payload"]

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "highway_events"
# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more.
MAX_PAYLOAD_BYTES = 7900
QUEUE_LENGTH = 10_000
MAX_BATCH = 500
RECONNECT_SECONDS = (0.5, 1.0, 2.0, 5.0)


class PostgresFanout:
    """Relays a hub's events through PostgreSQL; `run` it for as long as the hub is used."""

    def __init__(self, hub: EventHub, store: Store, url: str, *, timeout: float) -> None:
        self.hub = hub
        self.store = store
        self.url = url
        self.timeout = timeout
        self.dropped = 0
        # A pid is no name for a worker across hosts: each relay has an id of its own.
        self._id = uuid.uuid4().hex[:16]
        self._sequence = 0
        self._last_seq: dict[object, int] = {}  # by relay: the last `seq` delivered
        self._send, self._receive = trio.open_memory_channel[str](QUEUE_LENGTH)

    def relay(self, event: Event) -> None:
        """Queue `event` for NOTIFY (the hub calls this for every published event).

        Each carries this relay's id and next `seq`, so that the other workers can tell
        when some were lost on the way (dropped here, or a NOTIFY that failed)."""
        self._sequence += 1
        marked = {**event, "relay": self._id, "seq": self._sequence}
        try:
            self._send.send_nowait(fit_payload(marked))
        except trio.WouldBlock:
            self.dropped += 1
            self.hub.interrupt("events were dropped: the database is not keeping up")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen (the first connection must succeed: else DatabaseUnavailable), then relay
        until cancelled, reconnecting whenever the connection drops."""
        channel = await self.store.notification_channel(CHANNEL_PREFIX)
        unavailable: DatabaseUnavailable | None = None
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(self._listen, channel)
            except DatabaseUnavailable as error:
                # Raised below: from in here the nursery would wrap it in an ExceptionGroup.
                unavailable = error
            else:
                self.hub.relay_through(self.relay)
                try:
                    nursery.start_soon(self._notify, channel)
                    task_status.started()
                    await trio.sleep_forever()
                finally:
                    self.hub.relay_through(None)
        if unavailable is not None:
            raise unavailable

    async def _listen(
        self, channel: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        failures = 0
        started = False
        while True:
            try:
                async with listen(self.url, channel, timeout=self.timeout) as listener:
                    if failures:
                        log.info("dashboard events: listening again on PostgreSQL")
                        # Dashboards that reconnected while this was down missed events.
                        self.hub.interrupt("the database connection was lost")
                    failures = 0
                    if not started:
                        task_status.started()
                        started = True
                    async for payload in listener:
                        self._deliver(payload)
            except DatabaseUnavailable as error:
                if not started:
                    raise  # start-up fails, with the database's reason
                self.hub.interrupt("the database connection was lost")
                delay = RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)]
                failures += 1
                log.warning("dashboard events: %s; reconnecting in %g s", error, delay)
                await trio.sleep(delay)

    def _deliver(self, payload: str) -> None:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("dashboard events: ignored a notification that is not JSON")
            return
        if not isinstance(event, dict):
            return
        relay, seq = event.pop("relay", None), event.pop("seq", None)
        if isinstance(seq, int):
            last = self._last_seq.get(relay)
            self._last_seq[relay] = seq
            if last is not None and seq != last + 1:
                self.hub.interrupt(f"events from worker {event.get('worker')} were lost")
        self.hub.deliver(event)

    async def _notify(self, channel: str) -> None:
        async for first in self._receive:
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                await self.store.notify(channel, batch)
            except DatabaseUnavailable as error:
                log.warning("dashboard events: %d not sent: %s", len(batch), error)
                self.hub.interrupt("events were lost: the database is unavailable")


def fit_payload(event: Event) -> str:
    """`event` as JSON within NOTIFY's limit: long texts are cut, and the event says so."""
    payload = orjson.dumps(event)
    if len(payload) <= MAX_PAYLOAD_BYTES:
        return payload.decode()
    cut = dict(event, truncated=True)
    longest_first = sorted(
        (key for key, value in event.items() if isinstance(value, str)),
        key=lambda key: len(event[key]),
        reverse=True,
    )
    for key in longest_first:
        if len(orjson.dumps(cut)) <= MAX_PAYLOAD_BYTES:
            break
        cut[key] = _longest_start_that_fits(cut, key)
    payload = orjson.dumps(cut)
    if len(payload) > MAX_PAYLOAD_BYTES:
        # Nested values (a tool's result) are too big: keep only what identifies the event.
        payload = orjson.dumps(
            {
                key: event[key]
                for key in ("type", "callId", "at", "worker", "relay", "seq")
                if key in event
            }
            | {"truncated": True}
        )
    return payload.decode()


def _longest_start_that_fits(event: Event, key: str) -> str:
    """`event[key]` cut to as many characters as keep the event within the limit, and "…".

    Found by bisection, since a character takes one to four bytes, or more once escaped:
    cutting by the excess in bytes could cut all of a text that has room for much of it.
    Just "…" if no start fits.
    """
    text: str = event[key]
    fits, too_long = 0, len(text)
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if len(orjson.dumps(event | {key: text[:middle] + "…"})) <= MAX_PAYLOAD_BYTES:
            fits = middle
        else:
            too_long = middle
    return text[:fits] + "…"
