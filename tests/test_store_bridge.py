"""The bridge's store methods (stream start, call end, field results, verdict) on both engines."""

from __future__ import annotations

from datetime import timedelta

import pytest

from highway.store import (
    Call,
    CallEvent,
    EventKind,
    FieldToConfirm,
    Outcome,
    Store,
    UnknownField,
    Verification,
    VerificationStatus,
)
from highway.store.call_status import is_terminal
from highway.store.records import utc_now
from tests.test_store import ADA, SID, _new_call, _outbound_call


async def _answered(store: Store) -> tuple[Verification, int]:
    """A verification whose call Twilio accepted and whose stream has started."""
    verification = await store.create_verification(ADA)
    call_id = await _outbound_call(store, verification.id)
    await store.record_stream_start(call_id, "MZ1")
    return verification, call_id


async def _status_events(store: Store, call_id: int) -> list[CallEvent]:
    return [e for e in await store.call_events(call_id) if e.kind is EventKind.STATUS]


async def _terminal_events(store: Store, call_id: int) -> list[CallEvent]:
    return [e for e in await _status_events(store, call_id) if is_terminal(e.data["status"])]


async def _call(store: Store, call_id: int) -> Call:
    call = await store.get_call(call_id)
    assert call is not None
    return call


async def _status(store: Store, verification_id: int) -> VerificationStatus:
    verification = await store.get_verification(verification_id)
    assert verification is not None
    return verification.status


async def test_a_stream_start_answers_the_call_once(store: Store) -> None:
    verification, call_id = await _answered(store)
    first = await _call(store, call_id)
    again = await store.record_stream_start(call_id, "MZ2")
    assert (first.stream_sid, first.status) == ("MZ1", "in-progress")
    assert first.answered_at is not None and again == first  # first stream SID and time win
    events = [e.data for e in await _status_events(store, call_id)]
    assert events[1:] == [{"status": "queued"}, {"status": "in-progress", "source": "stream"}]
    assert await _status(store, verification.id) is VerificationStatus.IN_PROGRESS


async def test_ending_a_call_records_its_end_once(store: Store) -> None:
    verification, call_id = await _answered(store)
    ended = await store.end_call(call_id, status="completed", end_reason="caller_hung_up")
    assert (ended.status, ended.end_reason, ended.error) == ("completed", "caller_hung_up", None)
    assert ended.answered_at is not None and ended.ended_at is not None
    assert ended.duration_seconds == round((ended.ended_at - ended.answered_at).total_seconds())
    again = await store.end_call(call_id, status="failed", end_reason="timeout")
    assert again == ended
    terminal = await _terminal_events(store, call_id)
    assert [e.data for e in terminal] == [
        {"status": "completed", "source": "bridge", "reason": "caller_hung_up"}
    ]
    # No outcome yet: pending again, so it can be retried.
    assert await _status(store, verification.id) is VerificationStatus.PENDING


async def test_ending_again_with_an_error_changes_nothing(store: Store) -> None:
    _, call_id = await _answered(store)
    ended = await store.end_call(call_id, status="completed", end_reason="caller_hung_up")
    again = await store.end_call(call_id, status="failed", end_reason="timeout", error="late")
    assert again == ended  # fails: the error is filled in on the already completed call


async def test_the_duration_counts_from_the_answer(store: Store) -> None:
    verification = await store.create_verification(ADA)
    call_id = await _outbound_call(store, verification.id)
    answered_at = utc_now() - timedelta(seconds=90)
    await store.apply_twilio_status(call_sid=SID, status="in-progress", at=answered_at)
    ended = await store.end_call(call_id, status="completed", end_reason="agent_hung_up")
    assert ended.answered_at == answered_at and ended.ended_at is not None
    assert ended.duration_seconds == round((ended.ended_at - answered_at).total_seconds())
    assert ended.duration_seconds >= 90


async def test_a_call_never_answered_fails_with_its_error_and_no_duration(store: Store) -> None:
    verification = await store.create_verification(ADA)
    call = await _new_call(store, verification.id)
    ended = await store.end_call(call.id, status="failed", end_reason="model_error", error="boom")
    assert (ended.status, ended.end_reason, ended.error) == ("failed", "model_error", "boom")
    assert ended.ended_at is not None and ended.answered_at is None
    assert ended.duration_seconds is None
    assert len(await _terminal_events(store, call.id)) == 1
    assert await _status(store, verification.id) is VerificationStatus.PENDING


async def test_the_bridge_reason_replaces_twilios_bare_status(store: Store) -> None:
    _, call_id = await _answered(store)
    await store.apply_twilio_status(call_sid=SID, status="completed", duration_seconds=7)
    by_twilio = await _call(store, call_id)
    ended = await store.end_call(call_id, status="failed", end_reason="caller_hung_up")
    assert by_twilio.end_reason == "completed"
    assert (ended.status, ended.ended_at, ended.duration_seconds) == (
        "completed",
        by_twilio.ended_at,
        7,
    )
    assert ended.end_reason == "caller_hung_up"
    terminal = await _terminal_events(store, call_id)
    assert [e.data for e in terminal] == [{"status": "completed", "source": "twilio"}]


async def test_a_meaningful_earlier_reason_is_kept(store: Store) -> None:
    verification = await store.create_verification(ADA)
    call = await _new_call(store, verification.id)
    failed = await store.fail_call(call.id, error="invalid To", end_reason="twilio_refused")
    ended = await store.end_call(call.id, status="failed", end_reason="bridge_gave_up")
    assert (ended.end_reason, ended.error, ended.ended_at) == (
        "twilio_refused",
        "invalid To",
        failed.ended_at,
    )
    assert len(await _terminal_events(store, call.id)) == 1


async def test_a_field_is_confirmed_or_mismatched_alone(store: Store) -> None:
    created = await store.create_verification(ADA)
    confirmed = await store.confirm_field(
        created.id, "date_of_birth", heard="10 December 1815", confirmed=True
    )
    dob, postcode = confirmed.fields
    assert (dob.status, dob.heard, dob.expected) == ("confirmed", "10 December 1815", "1815-12-10")
    assert postcode == ADA.fields[1]
    assert confirmed.updated_at > created.updated_at
    mismatched = await store.confirm_field(created.id, "postcode", heard="E1", confirmed=False)
    assert mismatched.fields == (dob, FieldToConfirm("postcode", "W1", "mismatch", "E1"))
    assert mismatched.updated_at > confirmed.updated_at
    assert mismatched.status is VerificationStatus.PENDING and mismatched.outcome is None


async def test_an_unknown_field_is_refused_and_changes_nothing(store: Store) -> None:
    created = await store.create_verification(ADA)
    with pytest.raises(UnknownField):
        await store.confirm_field(created.id, "shoe_size", heard="42", confirmed=True)
    assert await store.get_verification(created.id) == created


async def test_a_verdict_completes_the_verification_and_survives_the_call_end(
    store: Store,
) -> None:
    verification, call_id = await _answered(store)
    finished = await store.finish_verification(verification.id, Outcome.VERIFIED)
    assert (finished.status, finished.outcome) == (VerificationStatus.COMPLETED, Outcome.VERIFIED)
    assert finished.updated_at > verification.updated_at
    await store.end_call(call_id, status="completed", end_reason="agent_hung_up")
    after = await store.get_verification(verification.id)
    assert after is not None
    assert (after.status, after.outcome) == (VerificationStatus.COMPLETED, Outcome.VERIFIED)
    assert await store.outcomes([verification.id]) == {verification.id: Outcome.VERIFIED}
