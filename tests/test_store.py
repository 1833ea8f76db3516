"""The store against real SQLite and a real PostgreSQL (each test runs on both)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest
import trio

from highway.store import (
    Call,
    CallDirection,
    DatabaseUnavailable,
    EventKind,
    FieldToConfirm,
    NewVerification,
    Store,
    StoreError,
    VerificationStatus,
    open_store,
)
from highway.store.database import JsonValue, Transaction
from highway.store.migrations import LATEST, migrate
from highway.store.records import Verification, utc_now
from highway.testing.postgres import PostgresCluster

ADA = NewVerification(
    customer_name="Ada Lovelace",
    phone="+14155550100",
    purpose="Confirm a new account",
    fields=(FieldToConfirm("date_of_birth", "1815-12-10"), FieldToConfirm("postcode", "W1")),
    language="en-GB",
    instructions="Be brief.",
    voice="cedar",
)
SID = "CA" + "a" * 32


async def _new_call(store: Store, verification_id: int | None, to: str = ADA.phone) -> Call:
    return await store.create_call(
        verification_id=verification_id,
        direction=CallDirection.OUTBOUND,
        from_number="+15005550006",
        to_number=to,
    )


async def _outbound_call(store: Store, verification_id: int) -> int:
    """A call Twilio has accepted as SID."""
    call = await _new_call(store, verification_id)
    await store.record_twilio_sid(call.id, SID, "queued")
    return call.id


async def test_a_verification_reads_back_as_written(store: Store) -> None:
    created = await store.create_verification(ADA)
    fetched = await store.get_verification(created.id)
    assert fetched == created
    assert (fetched.customer_name, fetched.fields, fetched.language) == (
        "Ada Lovelace",
        ADA.fields,
        "en-GB",
    )
    assert fetched.status is VerificationStatus.PENDING and fetched.outcome is None
    assert fetched.created_at.tzinfo is not None
    assert await store.get_verification(created.id + 1000) is None


async def test_verifications_list_newest_first_with_filters(store: Store) -> None:
    ids = [(await store.create_verification(ADA)).id for _ in range(3)]
    listed = await store.list_verifications()
    assert [v.id for v in listed] == ids[::-1]
    assert [v.id for v in await store.list_verifications(limit=1, offset=1)] == [ids[1]]
    assert await store.list_verifications(status=VerificationStatus.COMPLETED) == []


async def test_the_newest_pending_verification_is_found_by_phone(store: Store) -> None:
    await store.create_verification(ADA)
    newest = await store.create_verification(ADA)
    found = await store.pending_verification_for(ADA.phone)
    assert found is not None and found.id == newest.id
    assert await store.pending_verification_for("+442071838750") is None


async def test_a_new_call_starts_in_progress_with_a_status_event(store: Store) -> None:
    verification = await store.create_verification(ADA)
    call = await _new_call(store, verification.id)
    assert (call.status, call.call_sid, call.direction) == ("in_progress", None, "outbound")
    events = await store.call_events(call.id)
    assert [(e.kind, e.data) for e in events] == [(EventKind.STATUS, {"status": "in_progress"})]


async def test_statuses_only_move_forward_and_repeat_harmlessly(store: Store) -> None:
    verification = await store.create_verification(ADA)
    call_id = await _outbound_call(store, verification.id)
    applied = []
    for status in ["initiated", "ringing", "in-progress", "ringing", "completed", "completed"]:
        update = await store.apply_twilio_status(
            call_sid=SID, status=status, duration_seconds=42 if status == "completed" else None
        )
        assert update is not None
        applied.append((status, update.changed, update.call.status))
    assert applied == [
        ("initiated", True, "initiated"),
        ("ringing", True, "ringing"),
        ("in-progress", True, "in-progress"),
        ("ringing", False, "in-progress"),  # late: ignored
        ("completed", True, "completed"),
        ("completed", False, "completed"),  # retried: ignored
    ]
    call = await store.get_call(call_id)
    assert call is not None
    assert call.duration_seconds == 42 and call.end_reason == "completed"
    assert call.answered_at is not None and call.ended_at is not None
    assert call.answered_at <= call.ended_at
    statuses = [e.data["status"] for e in await store.call_events(call_id)]
    assert statuses == ["in_progress", "queued", "initiated", "ringing", "in-progress", "completed"]


async def test_a_late_ringing_after_completed_changes_nothing(store: Store) -> None:
    verification = await store.create_verification(ADA)
    call_id = await _outbound_call(store, verification.id)
    await store.apply_twilio_status(call_sid=SID, status="completed", duration_seconds=3)
    update = await store.apply_twilio_status(call_sid=SID, status="ringing")
    assert update is not None and not update.changed
    call = await store.get_call(call_id)
    assert call is not None and call.status == "completed" and call.duration_seconds == 3


async def test_the_verification_follows_its_call(store: Store) -> None:
    verification = await store.create_verification(ADA)
    await _outbound_call(store, verification.id)
    await store.apply_twilio_status(call_sid=SID, status="in-progress")
    during = await store.get_verification(verification.id)
    await store.apply_twilio_status(call_sid=SID, status="completed")
    after = await store.get_verification(verification.id)
    assert during is not None and during.status is VerificationStatus.IN_PROGRESS
    # Ended without an outcome: pending again, so it can be retried.
    assert after is not None and after.status is VerificationStatus.PENDING


async def test_an_unknown_call_sid_is_not_ours(store: Store) -> None:
    assert await store.apply_twilio_status(call_sid=SID, status="ringing") is None
    assert await store.record_recording(call_sid=SID, recording_url="https://x/r") is None


async def test_a_call_without_a_stored_sid_is_found_by_its_id(store: Store) -> None:
    verification = await store.create_verification(ADA)
    call = await _new_call(store, verification.id)
    update = await store.apply_twilio_status(call_sid=SID, status="ringing", call_id=call.id)
    assert update is not None and update.call.call_sid == SID and update.call.status == "ringing"
    # Once a call has a SID, its id alone claims nothing for another SID.
    other = "CA" + "b" * 32
    claimed = await store.apply_twilio_status(call_sid=other, status="ringing", call_id=call.id)
    assert claimed is None


async def test_a_failed_call_keeps_its_error(store: Store) -> None:
    verification = await store.create_verification(ADA)
    call = await _new_call(store, verification.id, to="+15005550001")
    failed = await store.fail_call(call.id, error="The 'To' number is invalid", end_reason="x")
    assert (failed.status, failed.error, failed.end_reason) == (
        "failed",
        "The 'To' number is invalid",
        "x",
    )
    assert failed.ended_at is not None


async def test_an_inbound_call_is_created_once_per_sid(store: Store) -> None:
    inbound = {
        "verification_id": None,
        "direction": CallDirection.INBOUND,
        "from_number": ADA.phone,
        "to_number": "+15005550006",
        "status": "ringing",
        "call_sid": SID,
    }
    first = await store.create_call(**inbound)
    again = await store.create_call(**inbound)
    assert again == first
    assert len(await store.list_calls()) == 1


async def test_calls_are_listed_by_verification_and_status(store: Store) -> None:
    ada = await store.create_verification(ADA)
    other = await store.create_verification(ADA)
    call_id = await _outbound_call(store, ada.id)
    await _new_call(store, other.id)
    assert [c.id for c in await store.list_calls(verification_id=ada.id)] == [call_id]
    assert [c.id for c in await store.list_calls(status="queued")] == [call_id]
    assert len(await store.list_calls()) == 2


async def test_events_keep_their_order_and_data(store: Store) -> None:
    verification = await store.create_verification(ADA)
    call_id = await _outbound_call(store, verification.id)
    await store.add_event(call_id, EventKind.ASSISTANT, {"text": "Hello, is that Ada? 👋"})
    await store.add_event(call_id, EventKind.USER, {"text": "Oui, c'est moi."})
    await store.add_event(
        call_id,
        EventKind.TOOL,
        {"name": "confirm_field", "arguments": {"field": "postcode"}, "result": {"ok": True}},
    )
    await store.add_event(call_id, EventKind.DTMF, {"digits": "1#"})
    events = [e for e in await store.call_events(call_id) if e.kind is not EventKind.STATUS]
    assert [e.kind for e in events] == ["assistant", "user", "tool", "dtmf"]
    assert events[0].data == {"text": "Hello, is that Ada? 👋"}
    assert events[2].data["arguments"] == {"field": "postcode"}


async def test_several_calls_events_come_in_one_query_each_in_its_order(store: Store) -> None:
    verification = await store.create_verification(ADA)
    first, second = [await _new_call(store, verification.id) for _ in range(2)]
    for call, text in [(first, "one"), (second, "un"), (first, "two"), (second, "deux")]:
        await store.add_event(call.id, EventKind.USER, {"text": text})
    unknown = second.id + 1000

    found = await store.events_of_calls([second.id, unknown, first.id])

    assert found == {
        first.id: await store.call_events(first.id),
        second.id: await store.call_events(second.id),
    }
    said = [e.data["text"] for e in found[first.id] if e.kind is EventKind.USER]
    assert said == ["one", "two"]
    assert await store.events_of_calls([]) == {}


async def test_a_recording_url_is_stored(store: Store) -> None:
    verification = await store.create_verification(ADA)
    call_id = await _outbound_call(store, verification.id)
    url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1"
    call = await store.record_recording(call_sid=SID, recording_url=url)
    assert call is not None and call.id == call_id and call.recording_url == url


async def test_outcomes_are_read_in_one_go(store: Store) -> None:
    verification = await store.create_verification(ADA)
    assert await store.outcomes([verification.id, None]) == {}


# Migrations


async def test_migrating_again_changes_nothing(database_url: str) -> None:
    first = await open_store(database_url)
    await first.aclose()
    second = await open_store(database_url)
    try:
        assert await migrate(second.database) == LATEST
    finally:
        await second.aclose()


async def test_an_old_database_is_upgraded_without_losing_rows(database_url: str) -> None:
    """A database made by the previous schema keeps every row through the upgrade."""
    old = await open_store(database_url, migrate_to=LATEST - 1)

    def fill(tx: Transaction) -> None:  # the previous schema's columns only
        tx.execute(
            "INSERT INTO verifications (customer_name, phone, purpose, fields, language,"
            " status, created_at, updated_at) VALUES ('Ada', '+14155550100', 'kyc', :f, 'en',"
            " 'pending', :now, :now)",
            {"f": JsonValue([{"name": "dob", "expected": "1815-12-10"}]), "now": utc_now()},
        )
        tx.execute(
            "INSERT INTO calls (verification_id, call_sid, direction, status, created_at)"
            " VALUES (1, :sid, 'outbound', 'completed', :now)",
            {"sid": SID, "now": utc_now()},
        )

    await old.database.run(fill)
    await old.aclose()

    upgraded = await open_store(database_url)
    try:
        verification = await upgraded.get_verification(1)
        call = await upgraded.get_call_by_sid(SID)
        assert verification is not None and verification.fields[0].expected == "1815-12-10"
        assert call is not None and call.status == "completed" and call.recording_url is None
        # The new columns work on the old rows.
        assert await upgraded.record_recording(call_sid=SID, recording_url="https://r") is not None
    finally:
        await upgraded.aclose()


async def test_a_newer_schema_is_refused(database_url: str) -> None:
    store = await open_store(database_url)
    await store.database.run(
        lambda tx: tx.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (:v, 'future', 'now')",
            {"v": LATEST + 1},
        )
    )
    await store.aclose()
    with pytest.raises(StoreError, match="newer than this Highway"):
        await open_store(database_url)


# A stuck or missing database


async def test_a_locked_sqlite_database_gives_up_in_time(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = await open_store(f"sqlite:///{path}", timeout=0.3)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        with trio.fail_after(5), pytest.raises(DatabaseUnavailable):
            await store.create_verification(ADA)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # Once the lock is gone the same store works again.
    assert (await store.create_verification(ADA)).id == 1
    await store.aclose()


async def test_a_locked_postgres_row_gives_up_in_time(postgres_url: str) -> None:
    store = await open_store(postgres_url, timeout=0.5)
    verification = await store.create_verification(ADA)
    await _outbound_call(store, verification.id)
    held = threading.Event()
    with psycopg.connect(postgres_url) as blocker:
        blocker.execute("SELECT * FROM calls FOR UPDATE")  # a transaction that never ends
        held.set()
        with trio.fail_after(5), pytest.raises(DatabaseUnavailable):
            await store.apply_twilio_status(call_sid=SID, status="ringing")
        blocker.rollback()
    update = await store.apply_twilio_status(call_sid=SID, status="ringing")
    assert held.is_set() and update is not None and update.changed
    await store.aclose()


async def test_a_postgres_server_that_goes_down_gives_database_unavailable(
    own_postgres_cluster: PostgresCluster,
) -> None:
    cluster = own_postgres_cluster
    store = await open_store(cluster.url(), timeout=1)
    await store.create_verification(ADA)
    # "fast" shuts down cleanly: the throwaway server's asynchronous commits are kept.
    await trio.to_thread.run_sync(cluster.stop, "fast")
    with trio.fail_after(5), pytest.raises(DatabaseUnavailable):
        await store.get_verification(1)
    await trio.to_thread.run_sync(cluster.start)
    # Back up: the pool reconnects (it retries in the background), and nothing was lost.
    with trio.fail_after(10):
        while (found := await _try_get(store, 1)) is None:
            await trio.sleep(0.05)
    assert found.customer_name == "Ada Lovelace"
    await store.aclose()


async def _try_get(store: Store, verification_id: int) -> Verification | None:
    try:
        return await store.get_verification(verification_id)
    except DatabaseUnavailable:
        return None
