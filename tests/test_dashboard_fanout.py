"""The event hub on one worker, and its relay through PostgreSQL to every worker."""

from __future__ import annotations

import itertools
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import orjson
import pytest
import trio

from highway.dashboard.fanout import (
    CHANNEL_PREFIX,
    MAX_PAYLOAD_BYTES,
    PostgresFanout,
    fit_payload,
)
from highway.dashboard.hub import Event, EventHub, FeedInterrupted, Subscriber
from highway.store import DatabaseUnavailable, Store, open_store
from highway.testing.postgres import PostgresCluster

IDENTIFYING_KEYS = ("type", "callId", "at", "worker")


async def _next(subscriber: Subscriber, seconds: float = 5) -> Event:
    with trio.fail_after(seconds):
        return await subscriber.receive()


async def _take(subscriber: Subscriber, count: int, seconds: float = 10) -> list[Event]:
    """The next `count` events, failing the test if they take longer than `seconds`."""
    with trio.fail_after(seconds):
        return [await subscriber.receive() for _ in range(count)]


def _closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# The hub on its own


async def test_a_published_event_reaches_every_subscriber() -> None:
    """Without a relay, publishing hands the event, with its origin, to each subscriber."""
    hub = EventHub(worker=7)
    async with hub.subscribe() as one, hub.subscribe() as other:
        hub.publish("callUpdated", 12, call={"id": 12, "status": "ringing"})
        hub.publish("user_transcript", 12, text="Hello")
        for subscriber in (one, other):
            first, second = await _take(subscriber, 2)
            assert first["type"] == "callUpdated" and first["callId"] == 12
            assert first["worker"] == 7 and first["call"] == {"id": 12, "status": "ringing"}
            assert first["at"].endswith("Z")
            assert (second["type"], second["text"]) == ("user_transcript", "Hello")


async def test_a_subscriber_sees_only_what_is_published_after_it_subscribes() -> None:
    """Events published before subscribing (or to nobody) are not replayed."""
    hub = EventHub(worker=1)
    hub.publish("early", 1)
    async with hub.subscribe() as subscriber:
        hub.publish("late", 1)
        assert (await _next(subscriber))["type"] == "late"


async def test_a_slow_subscriber_is_interrupted_and_others_continue() -> None:
    """A subscriber whose buffer fills gets what was buffered, then FeedInterrupted; a
    subscriber that keeps up gets everything, and goes on getting events."""
    hub = EventHub(worker=1)
    async with hub.subscribe(buffer=3) as slow, hub.subscribe(buffer=100) as fast:
        for n in range(5):
            hub.publish("tick", n)
        received = []
        with trio.fail_after(5), pytest.raises(FeedInterrupted, match="fell behind"):
            async for event in slow:
                received.append(event["callId"])
        assert received == [0, 1, 2]
        assert slow.interrupted == "fell behind"
        assert [event["callId"] for event in await _take(fast, 5)] == [0, 1, 2, 3, 4]
        hub.publish("tick", 5)
        assert (await _next(fast))["callId"] == 5
        with pytest.raises(FeedInterrupted):
            await _next(slow)


async def test_interrupt_ends_every_feed_and_later_subscribers_are_fresh() -> None:
    """`interrupt` ends every current subscriber's feed with the reason, after what was
    already buffered; a subscriber that comes after it receives normally."""
    hub = EventHub(worker=1)
    async with hub.subscribe() as one, hub.subscribe() as other:
        hub.publish("before", 1)
        hub.interrupt("the database connection was lost")
        hub.publish("after", 1)  # dropped: the feeds are over
        for subscriber in (one, other):
            assert (await _next(subscriber))["type"] == "before"
            with pytest.raises(FeedInterrupted, match="connection was lost"):
                await _next(subscriber)
        async with hub.subscribe() as fresh:
            hub.publish("again", 1)
            assert (await _next(fresh))["type"] == "again"


# fit_payload


def test_a_small_event_is_sent_as_it_is() -> None:
    """An event within the limit is its plain JSON."""
    event = {"type": "dtmf", "callId": 3, "at": "2026-01-01T00:00:00Z", "worker": 9, "digit": "5"}
    assert orjson.loads(fit_payload(event)) == event


@pytest.mark.parametrize("filler", ["a", "é", "電", "🎧", '"\n'])
def test_a_long_text_is_cut_to_fit(filler: str) -> None:
    """A long text (one- to four-byte characters, or characters JSON escapes) is cut so
    the payload is valid JSON within the limit, and says it was truncated."""
    text = filler * 20_000
    event = {"type": "ava_response", "callId": 4, "at": "2026-01-01T00:00:00Z", "worker": 2}
    event |= {"text": text, "eventId": 17}
    payload = fit_payload(event)
    assert len(payload.encode()) <= MAX_PAYLOAD_BYTES
    cut = orjson.loads(payload)
    assert cut["truncated"] is True
    assert {key: cut[key] for key in (*IDENTIFYING_KEYS, "eventId")} == {
        key: event[key] for key in (*IDENTIFYING_KEYS, "eventId")
    }
    assert cut["text"].endswith("…") and text.startswith(cut["text"][:-1])
    assert len(cut["text"]) > 1000  # cut, not emptied


def test_a_huge_nested_value_leaves_only_what_identifies_the_event() -> None:
    """When no text can be cut enough (a huge tool result), only the identifying keys stay."""
    event = {"type": "toolCall", "callId": 5, "at": "2026-01-01T00:00:00Z", "worker": 2}
    event |= {"name": "lookup", "result": {"rows": [{"n": n} for n in range(5000)]}}
    payload = fit_payload(event)
    assert len(payload.encode()) <= MAX_PAYLOAD_BYTES
    assert orjson.loads(payload) == {key: event[key] for key in IDENTIFYING_KEYS} | {
        "truncated": True
    }


# Through PostgreSQL


class Worker:
    """One worker's share of the relay: its store, hub and fanout."""

    def __init__(self, store: Store, hub: EventHub, fanout: PostgresFanout) -> None:
        self.store = store
        self.hub = hub
        self.fanout = fanout


@asynccontextmanager
async def _workers(url: str, count: int, timeout: float = 5) -> AsyncIterator[list[Worker]]:
    """`count` workers on the database at `url`, each with its own store (its own
    connections), hub and running fanout; all stopped on exit."""
    async with AsyncExitStack() as stack:
        workers = []
        for number in range(1, count + 1):
            store = await open_store(url, timeout=timeout)
            stack.push_async_callback(store.aclose)
            hub = EventHub(worker=number)
            workers.append(Worker(store, hub, PostgresFanout(hub, store, url, timeout=timeout)))
        async with trio.open_nursery() as nursery:
            for worker in workers:
                with trio.fail_after(10):
                    await nursery.start(worker.fanout.run)
            yield workers
            nursery.cancel_scope.cancel()


async def test_events_from_every_worker_reach_every_dashboard_once_in_one_order(
    postgres_url: str,
) -> None:
    """Events published on either of two workers reach the subscribers of both: each event
    exactly once, each worker's in the order it published them, and both in the same order,
    with the origin worker kept."""
    async with (
        _workers(postgres_url, 2) as (first, second),
        first.hub.subscribe() as on_first,
        second.hub.subscribe() as on_second,
    ):
        published: list[tuple[int, int]] = []
        for n in range(40):
            worker = first if n % 3 else second
            worker.hub.publish("tick", n, n=n)
            published.append((worker.hub.worker, n))
            if n % 10 == 0:
                await trio.lowlevel.checkpoint()  # let the relays send in several batches
        seen = []
        for subscriber in (on_first, on_second):
            events = await _take(subscriber, len(published))
            seen.append([(event["worker"], event["n"]) for event in events])
        assert seen[0] == seen[1]
        assert sorted(seen[0]) == sorted(published)  # each once
        for origin in (1, 2):
            ours = [pair for pair in published if pair[0] == origin]
            assert [pair for pair in seen[0] if pair[0] == origin] == ours
        # Nothing more is on its way: the next event each subscriber gets is a new one.
        second.hub.publish("last", 99)
        assert (await _next(on_first))["type"] == "last"
        assert (await _next(on_second))["type"] == "last"


async def test_a_huge_event_arrives_cut_on_the_other_worker(postgres_url: str) -> None:
    """An event too big for NOTIFY still reaches the other worker, cut and marked so."""
    async with _workers(postgres_url, 2) as (first, second), second.hub.subscribe() as feed:
        first.hub.publish("ava_response", 8, text="Ünïcødé ☎ " * 3000, eventId=41)
        event = await _next(feed)
        assert (event["type"], event["callId"], event["worker"]) == ("ava_response", 8, 1)
        assert (event["eventId"], event["truncated"]) == (41, True)
        assert event["text"].startswith("Ünïcødé ☎ ") and event["text"].endswith("…")


async def test_a_gap_in_a_workers_events_interrupts_the_dashboards(postgres_url: str) -> None:
    """Events another worker published but that never arrived (dropped, or a NOTIFY that
    failed) show as a gap in its `seq`: dashboards are told, so they start again."""
    async with _workers(postgres_url, 1) as [worker]:
        channel = await worker.store.notification_channel(CHANNEL_PREFIX)
        origin = {"type": "ava_response", "callId": 1, "worker": 99, "relay": "r99"}
        sent = [{**origin, "seq": seq} for seq in (1, 2)]
        async with worker.hub.subscribe() as dashboard:
            await worker.store.notify(channel, [orjson.dumps(e).decode() for e in sent])
            received = await _take(dashboard, 2)
            lost = {**origin, "seq": 4}
            await worker.store.notify(channel, [orjson.dumps(lost).decode()])
            with pytest.raises(FeedInterrupted, match="from worker 99 were lost"):
                await _next(dashboard)
    # Delivered without their sequence numbers, which are the relay's business.
    assert received == [{k: v for k, v in e.items() if k not in ("relay", "seq")} for e in sent]


async def test_a_stopped_fanout_leaves_the_hub_delivering_locally(postgres_url: str) -> None:
    """Once its relay stops, a hub goes back to handing events to its own subscribers."""
    async with _workers(postgres_url, 1) as (worker,):
        pass
    async with worker.hub.subscribe() as feed:
        worker.hub.publish("local", 1)
        assert (await _next(feed))["type"] == "local"


async def test_starting_without_a_reachable_database_fails(postgres_url: str) -> None:
    """If the listening connection cannot be made, `run` fails to start with
    DatabaseUnavailable, and the hub keeps delivering locally."""
    store = await open_store(postgres_url, timeout=5)
    try:
        hub = EventHub(worker=1)
        unreachable = f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres"
        fanout = PostgresFanout(hub, store, unreachable, timeout=1)
        async with trio.open_nursery() as nursery:
            with trio.fail_after(10), pytest.raises(DatabaseUnavailable):
                await nursery.start(fanout.run)
        async with hub.subscribe() as feed:
            hub.publish("local", 1)
            assert (await _next(feed))["type"] == "local"
    finally:
        await store.aclose()


async def test_a_lost_connection_interrupts_dashboards_and_the_relay_recovers(
    own_postgres_cluster: PostgresCluster,
) -> None:
    """The server goes down: every subscriber's feed ends with FeedInterrupted. It comes
    back: the fanouts reconnect by themselves, and new subscribers get new events from both
    workers again, each once and in order."""
    cluster = own_postgres_cluster
    async with _workers(cluster.url(), 2, timeout=2) as workers:
        first, second = workers
        async with first.hub.subscribe() as on_first, second.hub.subscribe() as on_second:
            first.hub.publish("before", 1)
            assert (await _next(on_first))["type"] == "before"
            assert (await _next(on_second))["type"] == "before"
            await trio.to_thread.run_sync(cluster.stop, "immediate")
            for subscriber in (on_first, on_second):
                with pytest.raises(FeedInterrupted):
                    await _next(subscriber, seconds=10)
        await trio.to_thread.run_sync(cluster.start)

        with trio.fail_after(30):
            for sender in workers:
                await _until_relayed(sender, workers)
        # Recovered: a burst from both workers arrives whole, in order, on both.
        async with first.hub.subscribe() as on_first, second.hub.subscribe() as on_second:
            published = []
            for n in range(10):
                worker = workers[n % 2]
                worker.hub.publish("after", n, n=n)
                published.append((worker.hub.worker, n))
            seen = []
            for subscriber in (on_first, on_second):
                events = await _take(subscriber, len(published))
                seen.append([(event["worker"], event["n"]) for event in events])
            assert seen[0] == seen[1] and sorted(seen[0]) == sorted(published)
            for origin in (1, 2):
                ours = [pair for pair in published if pair[0] == origin]
                assert [pair for pair in seen[0] if pair[0] == origin] == ours


async def _until_relayed(sender: Worker, workers: list[Worker]) -> None:
    """Publish numbered probes on `sender` until one reaches a fresh subscriber on every
    worker's hub.

    The fanouts reconnect on their own schedule, and an event relayed while a listener is
    away, or through one of the store's connections from before the restart, is lost by
    design (subscribers are interrupted instead), so probing is the only way to see that
    the relay works again. Probes from one sender arrive in order, so once probe k has
    arrived no earlier one is still on its way.
    """
    for probe in itertools.count():
        async with AsyncExitStack() as stack:
            feeds = [await stack.enter_async_context(w.hub.subscribe()) for w in workers]
            sender.hub.publish("probe", probe)
            with trio.move_on_after(0.5):
                try:
                    for feed in feeds:
                        while (await feed.receive())["callId"] != probe:
                            pass
                    return
                except FeedInterrupted:
                    await trio.lowlevel.checkpoint()
