"""Streams admitted against the deployment-wide limit (migration 3), and PostgreSQL
LISTEN/NOTIFY through `Store.notify` and `listen`."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import timedelta

import pytest
import trio
import trio.testing

from highway.store import Admission, CallDirection, DatabaseUnavailable, Store, open_store
from highway.store.database import Transaction
from highway.store.listen import Listener, listen
from highway.store.migrations import migrate
from highway.store.records import utc_now
from highway.testing.postgres import PostgresCluster
from tests.conftest import new_schema_url, opened_store

HOUR = 3600.0
CHANNEL_PREFIX = "highway_test"


async def _new_call(store: Store, call_sid: str | None = None) -> int:
    call = await store.create_call(
        verification_id=None,
        direction=CallDirection.INBOUND,
        from_number="+14155550100",
        to_number="+15005550006",
        call_sid=call_sid,
    )
    return call.id


async def _admit(store: Store, call_id: int, limit: int, stale_after: float = HOUR) -> Admission:
    return await store.admit_stream(call_id, limit=limit, stale_after_seconds=stale_after)


async def _backdate_stream(store: Store, call_id: int, by: timedelta) -> None:
    """Make the call's stream look admitted `by` ago (there is no clock to inject)."""
    await store.database.run(
        lambda tx: tx.execute(
            "UPDATE calls SET streaming_since = :since WHERE id = :id",
            {"since": utc_now() - by, "id": call_id},
        )
    )


def _closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def two_stores(database_url: str) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one database, as two workers would have."""
    async with opened_store(database_url) as first, opened_store(database_url) as second:
        yield first, second


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[Store]:
    """A store on PostgreSQL alone, for what only PostgreSQL has (NOTIFY)."""
    async with opened_store(postgres_url) as opened:
        yield opened


async def _receive(listener: Listener, count: int, seconds: float = 5) -> list[str]:
    """The next `count` payloads, failing the test if they take longer than `seconds`."""
    received: list[str] = []
    with trio.fail_after(seconds):
        async for payload in listener:
            received.append(payload)
            if len(received) == count:
                break
    return received


# Admission


async def test_streams_are_admitted_up_to_the_limit(store: Store) -> None:
    """Up to `limit` calls are admitted; the next is refused, and the count agrees."""
    calls = [await _new_call(store) for _ in range(4)]
    answers = [await _admit(store, call_id, limit=3) for call_id in calls]
    assert answers == [Admission.ADMITTED] * 3 + [Admission.AT_CAPACITY]
    assert await store.streaming_calls(stale_after_seconds=HOUR) == 3
    # A larger limit admits the refused call, since nothing was recorded for it.
    assert await _admit(store, calls[3], limit=4) is Admission.ADMITTED
    assert await store.streaming_calls(stale_after_seconds=HOUR) == 4


async def test_a_live_stream_is_not_admitted_twice(store: Store) -> None:
    """A second stream for a call that is streaming is refused as such, even at capacity,
    and does not count twice."""
    call_id = await _new_call(store)
    assert await _admit(store, call_id, limit=5) is Admission.ADMITTED
    assert await _admit(store, call_id, limit=5) is Admission.ALREADY_STREAMING
    assert await _admit(store, call_id, limit=1) is Admission.ALREADY_STREAMING
    assert await store.streaming_calls(stale_after_seconds=HOUR) == 1


async def test_an_unknown_call_is_not_admitted(store: Store) -> None:
    """A call id with no call is UNKNOWN_CALL and counts for nothing."""
    known = await _new_call(store)
    assert await _admit(store, known + 1000, limit=5) is Admission.UNKNOWN_CALL
    assert await store.streaming_calls(stale_after_seconds=HOUR) == 0


async def test_ending_a_call_frees_its_place(store: Store) -> None:
    """Once the bridge ends a call (end_call), another call takes its place."""
    first, second = await _new_call(store), await _new_call(store)
    assert await _admit(store, first, limit=1) is Admission.ADMITTED
    assert await _admit(store, second, limit=1) is Admission.AT_CAPACITY
    ended = await store.end_call(first, status="completed", end_reason="caller_hung_up")
    assert ended.ended_at is not None
    assert await store.streaming_calls(stale_after_seconds=HOUR) == 0
    assert await _admit(store, second, limit=1) is Admission.ADMITTED
    assert await store.streaming_calls(stale_after_seconds=HOUR) == 1


async def test_a_terminal_twilio_status_frees_the_place(store: Store) -> None:
    """A call Twilio reports as completed stops counting, without the bridge ending it."""
    sid = "CA" + "b" * 32
    first, second = await _new_call(store, call_sid=sid), await _new_call(store)
    assert await _admit(store, first, limit=1) is Admission.ADMITTED
    update = await store.apply_twilio_status(call_sid=sid, status="completed")
    assert update is not None and update.call.ended_at is not None
    assert await store.streaming_calls(stale_after_seconds=HOUR) == 0
    assert await _admit(store, second, limit=1) is Admission.ADMITTED


async def test_a_stream_admitted_long_ago_no_longer_counts(store: Store) -> None:
    """A stream older than stale_after_seconds (a dead worker's call) is not counted; one
    younger than that still is."""
    old, new, third = await _new_call(store), await _new_call(store), await _new_call(store)
    assert await _admit(store, old, limit=1) is Admission.ADMITTED
    await _backdate_stream(store, old, timedelta(hours=2))
    assert await store.streaming_calls(stale_after_seconds=HOUR) == 0
    assert await store.streaming_calls(stale_after_seconds=3 * HOUR) == 1
    assert await _admit(store, new, limit=1) is Admission.ADMITTED
    # With a longer allowance the old stream still counts, so a third call does not fit in 2.
    assert await store.streaming_calls(stale_after_seconds=3 * HOUR) == 2
    assert await _admit(store, third, limit=2, stale_after=3 * HOUR) is Admission.AT_CAPACITY
    assert await _admit(store, third, limit=2) is Admission.ADMITTED


async def test_racing_workers_never_admit_more_than_the_limit(
    two_stores: tuple[Store, Store],
) -> None:
    """Many admissions at once, from two stores (two workers) on one database: exactly
    `limit` are admitted, and the database counts exactly that many."""
    first, second = two_stores
    calls = [await _new_call(first) for _ in range(24)]
    limit = len(calls) - 5
    answers: list[Admission] = []
    go = trio.Event()

    async def admit(store: Store, call_id: int) -> None:
        await go.wait()
        answers.append(await _admit(store, call_id, limit=limit))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for n, call_id in enumerate(calls):
                nursery.start_soon(admit, (first, second)[n % 2], call_id)
            await trio.testing.wait_all_tasks_blocked()
            go.set()
    assert answers.count(Admission.ADMITTED) == limit
    assert answers.count(Admission.AT_CAPACITY) == len(calls) - limit
    assert await second.streaming_calls(stale_after_seconds=HOUR) == limit


# Migration 3


async def test_upgrading_from_version_2_keeps_calls_and_counts_none(database_url: str) -> None:
    """Calls made under schema 2 survive migration 3; none of them counts as streaming,
    and they can then be admitted."""
    old = await open_store(database_url, migrate_to=2)
    try:
        live = await _new_call(old, call_sid="CA" + "c" * 32)
        over = await _new_call(old)
        await old.end_call(over, status="completed", end_reason="caller_hung_up")
    finally:
        await old.aclose()

    upgraded = await open_store(database_url)
    try:
        assert await migrate(upgraded.database) == 3
        kept = await upgraded.get_call(live)
        ended = await upgraded.get_call(over)
        assert kept is not None and kept.call_sid == "CA" + "c" * 32 and kept.ended_at is None
        assert ended is not None and ended.end_reason == "caller_hung_up"

        def streaming_columns(tx: Transaction) -> tuple[list[object], bool]:
            values = [
                row["streaming_since"]
                for row in tx.execute("SELECT streaming_since FROM calls ORDER BY id")
            ]
            if tx.dialect.name == "sqlite":
                index = tx.one("SELECT name FROM sqlite_master WHERE name = 'calls_streaming'")
            else:
                index = tx.one(
                    "SELECT indexname FROM pg_indexes WHERE indexname = 'calls_streaming'"
                )
            return values, index is not None

        assert await upgraded.database.run(streaming_columns) == ([None, None], True)
        assert await upgraded.streaming_calls(stale_after_seconds=HOUR) == 0
        assert await _admit(upgraded, live, limit=1) is Admission.ADMITTED
        assert await upgraded.streaming_calls(stale_after_seconds=HOUR) == 1
    finally:
        await upgraded.aclose()


# LISTEN/NOTIFY


async def test_notifications_arrive_in_order_on_every_listener(
    pg_store: Store, postgres_url: str
) -> None:
    """Payloads sent in one NOTIFY batch, then another, reach two listening connections
    in the order they were sent, text intact."""
    channel = await pg_store.notification_channel(CHANNEL_PREFIX)
    first_batch = [f"event {n}" for n in range(50)]
    second_batch = ["Grüße, 電話 ☎ — 🎧", '{"json": "quotes \\" and \\\\ backslashes"}', "last"]
    async with (
        listen(postgres_url, channel, timeout=5) as one,
        listen(postgres_url, channel, timeout=5) as other,
    ):
        await pg_store.notify(channel, first_batch)
        await pg_store.notify(channel, second_batch)
        expected = first_batch + second_batch
        assert await _receive(one, len(expected)) == expected
        assert await _receive(other, len(expected)) == expected


async def test_channels_are_per_schema(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    """Two deployments in two schemas of one database get different channels and do not
    hear each other's notifications."""
    other_url = new_schema_url(postgres_cluster)
    async with AsyncExitStack() as stack:
        ours = await open_store(postgres_url, timeout=5)
        stack.push_async_callback(ours.aclose)
        theirs = await open_store(other_url, timeout=5)
        stack.push_async_callback(theirs.aclose)
        our_channel = await ours.notification_channel(CHANNEL_PREFIX)
        their_channel = await theirs.notification_channel(CHANNEL_PREFIX)
        assert our_channel != their_channel
        assert our_channel.startswith(f"{CHANNEL_PREFIX}.test_")

        our_listener = await stack.enter_async_context(listen(postgres_url, our_channel, timeout=5))
        their_listener = await stack.enter_async_context(
            listen(other_url, their_channel, timeout=5)
        )
        # Notifications are delivered in commit order: had the other schema's reached us,
        # it would come before our own.
        await theirs.notify(their_channel, ["for them"])
        await ours.notify(our_channel, ["for us"])
        assert await _receive(our_listener, 1) == ["for us"]
        assert await _receive(their_listener, 1) == ["for them"]


async def test_listening_to_an_unreachable_server_fails() -> None:
    """No server at the address: DatabaseUnavailable, within the timeout."""
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres"
    with trio.fail_after(5), pytest.raises(DatabaseUnavailable):
        async with listen(url, "highway_test.nowhere", timeout=1):
            pytest.fail("listening without a server")


async def test_a_lost_listening_connection_raises_database_unavailable(
    pg_store: Store, postgres_url: str
) -> None:
    """The server ends the listening connection: iteration raises DatabaseUnavailable (and
    leaving `listen` does not replace it with another error)."""
    channel = await pg_store.notification_channel(CHANNEL_PREFIX)
    with trio.fail_after(10), pytest.raises(DatabaseUnavailable):
        async with listen(postgres_url, channel, timeout=5) as listener:
            await pg_store.notify(channel, ["before"])
            assert await _receive(listener, 1) == ["before"]
            terminated = await _terminate_listeners(pg_store, channel)
            assert terminated == 1
            await _receive(listener, 1)


async def _terminate_listeners(store: Store, channel: str) -> int:
    """End the server side of every connection whose last statement was LISTEN on
    `channel`; how many there were."""
    rows = await store.database.run(
        lambda tx: tx.execute(
            "SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE query = :listen",
            {"listen": f'LISTEN "{channel}"'},
        )
    )
    return sum(1 for row in rows if row["ended"])
