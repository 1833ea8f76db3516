"""The store: every query Highway makes, as small units of work on a `Database`."""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from highway.store import call_status
from highway.store.database import Database, JsonValue, Transaction, connect
from highway.store.migrations import LATEST, migrate
from highway.store.records import (
    Call,
    CallDirection,
    CallEvent,
    EventKind,
    FieldToConfirm,
    NewVerification,
    Outcome,
    Verification,
    VerificationStatus,
    as_datetime,
    as_json,
    utc_now,
)

log = logging.getLogger(__name__)

_CALL_COLUMNS = (
    "id, verification_id, call_sid, stream_sid, direction, from_number, to_number, status,"
    " created_at, answered_at, ended_at, duration_seconds, end_reason, error, recording_url,"
    " answered_by"
)


# PostgreSQL's limit on a name, such as a LISTEN channel's.
MAX_IDENTIFIER_BYTES = 63
# Any constant will do: every Highway process must use the same one.
_ADMISSION_LOCK = 0x4869676877617901


class Admission(enum.Enum):
    """The answer to a media stream asking to start."""

    ADMITTED = "admitted"
    AT_CAPACITY = "at_capacity"
    ALREADY_STREAMING = "already_streaming"
    UNKNOWN_CALL = "unknown_call"


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """The result of applying a Twilio status: the call as it now is, and whether it moved."""

    call: Call
    changed: bool


class Store:
    """Verifications, calls and call events. Every method is one bounded transaction."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def aclose(self) -> None:
        await self.database.aclose()

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers."""
        await self.database.run(lambda tx: tx.execute("SELECT 1"))

    # Verifications

    async def create_verification(self, new: NewVerification) -> Verification:
        now = utc_now()
        params = {
            "customer_name": new.customer_name,
            "phone": new.phone,
            "purpose": new.purpose,
            "fields": JsonValue([f.as_json() for f in new.fields]),
            "language": new.language,
            "instructions": new.instructions,
            "voice": new.voice,
            "status": VerificationStatus.PENDING.value,
            "now": now,
        }
        row = await self.database.run(
            lambda tx: tx.one(
                "INSERT INTO verifications (customer_name, phone, purpose, fields, language,"
                " instructions, voice, status, created_at, updated_at) VALUES (:customer_name,"
                " :phone, :purpose, :fields, :language, :instructions, :voice, :status, :now,"
                " :now) RETURNING *",
                params,
            )
        )
        return Verification.from_row(_required(row))

    async def get_verification(self, verification_id: int) -> Verification | None:
        row = await self.database.run(
            lambda tx: tx.one("SELECT * FROM verifications WHERE id = :id", {"id": verification_id})
        )
        return Verification.from_row(row) if row else None

    async def list_verifications(
        self, *, status: VerificationStatus | None = None, limit: int = 100, offset: int = 0
    ) -> list[Verification]:
        """Newest first."""
        where, params = _filters(status=status)
        rows = await self.database.run(
            lambda tx: tx.execute(
                f"SELECT * FROM verifications{where} ORDER BY id DESC LIMIT :limit OFFSET :offset",
                {**params, "limit": limit, "offset": offset},
            )
        )
        return [Verification.from_row(row) for row in rows]

    async def pending_verification_for(self, phone: str) -> Verification | None:
        """The newest pending verification for `phone`, for a customer who calls in."""
        row = await self.database.run(
            lambda tx: tx.one(
                "SELECT * FROM verifications WHERE phone = :phone AND status = :status"
                " ORDER BY id DESC LIMIT 1",
                {"phone": phone, "status": VerificationStatus.PENDING.value},
            )
        )
        return Verification.from_row(row) if row else None

    async def outcomes(self, verification_ids: Iterable[int | None]) -> dict[int, Outcome]:
        """The outcome of each of these verifications that has one, in one query."""
        ids = sorted({i for i in verification_ids if i is not None})
        if not ids:
            return {}
        placeholders, params = _in_list(ids)
        rows = await self.database.run(
            lambda tx: tx.execute(
                f"SELECT id, outcome FROM verifications WHERE id IN ({placeholders})"
                " AND outcome IS NOT NULL",
                params,
            )
        )
        return {row["id"]: Outcome(row["outcome"]) for row in rows}

    # Calls

    async def create_call(
        self,
        *,
        verification_id: int | None,
        direction: CallDirection,
        from_number: str | None,
        to_number: str | None,
        status: str = call_status.CREATED,
        call_sid: str | None = None,
    ) -> Call:
        """A new call record. With `call_sid` given and already known, the existing call is
        returned instead, so a retried Twilio webhook creates nothing twice."""
        params = {
            "verification_id": verification_id,
            "call_sid": call_sid,
            "direction": direction.value,
            "from_number": from_number,
            "to_number": to_number,
            "status": status,
            "now": utc_now(),
        }

        def work(tx: Transaction) -> dict[str, Any] | None:
            if call_sid is not None:
                existing = tx.one(
                    f"SELECT {_CALL_COLUMNS} FROM calls WHERE call_sid = :sid", {"sid": call_sid}
                )
                if existing:
                    return existing
            row = tx.one(
                "INSERT INTO calls (verification_id, call_sid, direction, from_number,"
                " to_number, status, created_at) VALUES (:verification_id, :call_sid,"
                f" :direction, :from_number, :to_number, :status, :now) RETURNING {_CALL_COLUMNS}",
                params,
            )
            _add_event(
                tx, _required(row)["id"], EventKind.STATUS, {"status": status}, params["now"]
            )
            return row

        return Call.from_row(_required(await self.database.run(work)))

    async def get_call(self, call_id: int) -> Call | None:
        row = await self.database.run(
            lambda tx: tx.one(f"SELECT {_CALL_COLUMNS} FROM calls WHERE id = :id", {"id": call_id})
        )
        return Call.from_row(row) if row else None

    async def get_call_by_sid(self, call_sid: str) -> Call | None:
        row = await self.database.run(
            lambda tx: tx.one(
                f"SELECT {_CALL_COLUMNS} FROM calls WHERE call_sid = :sid", {"sid": call_sid}
            )
        )
        return Call.from_row(row) if row else None

    async def list_calls(
        self,
        *,
        verification_id: int | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Call]:
        """Newest first."""
        where, params = _filters(verification_id=verification_id, status=status)
        rows = await self.database.run(
            lambda tx: tx.execute(
                f"SELECT {_CALL_COLUMNS} FROM calls{where} ORDER BY id DESC"
                " LIMIT :limit OFFSET :offset",
                {**params, "limit": limit, "offset": offset},
            )
        )
        return [Call.from_row(row) for row in rows]

    async def call_events(self, call_id: int) -> list[CallEvent]:
        rows = await self.database.run(
            lambda tx: tx.execute(
                "SELECT * FROM call_events WHERE call_id = :id ORDER BY id", {"id": call_id}
            )
        )
        return [CallEvent.from_row(row) for row in rows]

    async def events_of_calls(self, call_ids: Iterable[int]) -> dict[int, list[CallEvent]]:
        """Each of these calls' events in order, in one query (calls without any: absent)."""
        ids = sorted(set(call_ids))
        if not ids:
            return {}
        placeholders, params = _in_list(ids)
        rows = await self.database.run(
            lambda tx: tx.execute(
                f"SELECT * FROM call_events WHERE call_id IN ({placeholders}) ORDER BY call_id, id",
                params,
            )
        )
        found: dict[int, list[CallEvent]] = {}
        for row in rows:
            event = CallEvent.from_row(row)
            found.setdefault(event.call_id, []).append(event)
        return found

    async def add_event(self, call_id: int, kind: EventKind, data: dict[str, Any]) -> CallEvent:
        row = await self.database.run(lambda tx: _add_event(tx, call_id, kind, data, utc_now()))
        return CallEvent.from_row(row)

    async def record_twilio_sid(self, call_id: int, call_sid: str, status: str) -> Call:
        """Twilio accepted the call: remember its SID and the status it answered with."""

        def work(tx: Transaction) -> dict[str, Any] | None:
            _update_call(tx, call_id, fill={"call_sid": call_sid})
            return _apply_status(tx, call_id, status, utc_now(), {})

        return Call.from_row(_required(await self.database.run(work)))

    async def fail_call(self, call_id: int, error: str, end_reason: str) -> Call:
        """The call could not be placed, or was refused (at capacity): mark it failed with
        the reason, keeping the record."""

        def work(tx: Transaction) -> dict[str, Any] | None:
            _update_call(tx, call_id, set_={"error": error}, fill={"end_reason": end_reason})
            return _apply_status(tx, call_id, "failed", utc_now(), {"error": error})

        return Call.from_row(_required(await self.database.run(work)))

    async def apply_twilio_status(
        self,
        *,
        call_sid: str,
        status: str,
        at: datetime | None = None,
        duration_seconds: int | None = None,
        answered_by: str | None = None,
        call_id: int | None = None,
    ) -> StatusUpdate | None:
        """Apply a status callback; None if the call is not Highway's.

        Monotonic and idempotent: a status that is not further along than the stored one
        changes nothing. `call_id` (from the callback URL) finds a call whose SID was never
        stored, for example because the database failed right after Twilio accepted it.
        """
        at = at or utc_now()

        def work(tx: Transaction) -> tuple[dict[str, Any], bool] | None:
            row = _find_call_for_update(tx, call_sid, call_id)
            if row is None:
                return None
            before = row["status"]
            row = _required(_apply_status(tx, row["id"], status, at, {"source": "twilio"}, row))
            changed = row["status"] != before
            # Facts that only come with a callback are kept even if the status is stale.
            facts = {"duration_seconds": duration_seconds, "answered_by": answered_by}
            return _required(_update_call(tx, row["id"], set_=facts)), changed

        result = await self.database.run(work)
        if result is None:
            return None
        row, changed = result
        return StatusUpdate(Call.from_row(row), changed)

    async def record_recording(
        self, *, call_sid: str, recording_url: str, call_id: int | None = None
    ) -> Call | None:
        """Store the recording's URL; None if the call is not Highway's."""

        def work(tx: Transaction) -> dict[str, Any] | None:
            row = _find_call_for_update(tx, call_sid, call_id)
            if row is None:
                return None
            return _update_call(tx, row["id"], set_={"recording_url": recording_url})

        row = await self.database.run(work)
        return Call.from_row(row) if row else None

    # The bridge: a live call's stream, its end, and the verification's results.

    async def record_stream_start(self, call_id: int, stream_sid: str) -> Call:
        """Twilio's media stream started: the call is answered."""

        def work(tx: Transaction) -> dict[str, Any] | None:
            _update_call(tx, call_id, fill={"stream_sid": stream_sid})
            return _apply_status(tx, call_id, call_status.ANSWERED, utc_now(), {"source": "stream"})

        return Call.from_row(_required(await self.database.run(work)))

    async def admit_stream(
        self, call_id: int, *, limit: int, stale_after_seconds: float
    ) -> Admission:
        """Count the call as streaming, unless `limit` calls already are, deployment-wide.

        A stream counts from its admission until its call has ended. A worker that died
        leaves its calls unended, so a stream older than `stale_after_seconds` (longer than
        any call may last) no longer counts. On PostgreSQL an advisory lock makes workers
        admit one at a time, so that two of them cannot both take the last place.
        """
        now = utc_now()
        cutoff = now - timedelta(seconds=stale_after_seconds)

        def work(tx: Transaction) -> Admission:
            if tx.dialect.name == "postgresql":
                tx.execute("SELECT pg_advisory_xact_lock(:key)", {"key": _ADMISSION_LOCK})
            row = tx.one(
                f"SELECT streaming_since, ended_at FROM calls WHERE id = :id"
                f"{tx.dialect.for_update}",
                {"id": call_id},
            )
            if row is None:
                return Admission.UNKNOWN_CALL
            since = as_datetime(row["streaming_since"])
            if since is not None and since > cutoff and row["ended_at"] is None:
                return Admission.ALREADY_STREAMING
            if _count_streaming(tx, cutoff) >= limit:
                return Admission.AT_CAPACITY
            tx.execute(
                "UPDATE calls SET streaming_since = :now WHERE id = :id",
                {"now": now, "id": call_id},
            )
            return Admission.ADMITTED

        return await self.database.run(work)

    async def streaming_calls(self, *, stale_after_seconds: float) -> int:
        """How many calls are streaming now, deployment-wide (see `admit_stream`)."""
        cutoff = utc_now() - timedelta(seconds=stale_after_seconds)
        return await self.database.run(lambda tx: _count_streaming(tx, cutoff))

    async def notification_channel(self, prefix: str) -> str:
        """A LISTEN/NOTIFY channel for this database and schema: channels are shared by the
        whole database, and two deployments may use two schemas of one database."""
        row = await self.database.run(lambda tx: tx.one("SELECT current_schema() AS name"))
        channel = f"{prefix}.{(row or {}).get('name') or 'public'}"
        if len(channel.encode()) > MAX_IDENTIFIER_BYTES:
            # A long schema name: a digest of it is as unique, and fits.
            channel = f"{prefix}.{hashlib.sha256(channel.encode()).hexdigest()[:32]}"
        return channel

    async def notify(self, channel: str, payloads: Sequence[str]) -> None:
        """PostgreSQL NOTIFY: each payload on `channel`, in order, in one transaction."""

        def work(tx: Transaction) -> None:
            tx.execute(
                "SELECT pg_notify(:channel, payload)"
                " FROM unnest(CAST(:payloads AS text[])) AS payload",
                {"channel": channel, "payloads": list(payloads)},
            )

        await self.database.run(work)

    async def end_call(
        self, call_id: int, *, status: str, end_reason: str, error: str | None = None
    ) -> Call:
        """The bridge is done with the call: its end, duration and reason.

        `status` is "completed" or "failed". If a Twilio callback ended the call first, its
        status and times stay, but the bridge's reason replaces the bare status it left as
        the reason, since it says more (for example "caller_hung_up" for "completed").
        """
        at = utc_now()

        def work(tx: Transaction) -> dict[str, Any] | None:
            row = tx.one(
                f"SELECT {_CALL_COLUMNS} FROM calls WHERE id = :id{tx.dialect.for_update}",
                {"id": call_id},
            )
            if row is None:
                return None
            answered = as_datetime(row["answered_at"])
            # If Twilio ended the call first, its end time stands, and so does its status:
            # a late "failed" from the bridge must not leave an error on a completed call.
            ended = as_datetime(row["ended_at"]) or at
            duration = round((ended - answered).total_seconds()) if answered else None
            over = call_status.is_terminal(row["status"])
            reason = end_reason if row["end_reason"] in (None, row["status"]) else None
            _update_call(
                tx,
                call_id,
                set_={"end_reason": reason},
                fill={"error": None if over else error, "duration_seconds": duration},
            )
            data = {"source": "bridge", "reason": end_reason}
            return _apply_status(tx, call_id, status, at, data)

        return Call.from_row(_required(await self.database.run(work)))

    async def confirm_field(
        self, verification_id: int, name: str, *, heard: str, confirmed: bool
    ) -> Verification:
        """Record what the customer said for field `name`, and whether it matched.

        Raises UnknownField if the verification has no such field.
        """

        def work(tx: Transaction) -> dict[str, Any] | None:
            row = tx.one(
                f"SELECT fields FROM verifications WHERE id = :id{tx.dialect.for_update}",
                {"id": verification_id},
            )
            if row is None:
                return None
            fields = [FieldToConfirm.from_json(f) for f in as_json(row["fields"])]
            if not any(f.name == name for f in fields):
                raise UnknownField(name)
            status = "confirmed" if confirmed else "mismatch"
            updated = [
                replace(f, status=status, heard=heard) if f.name == name else f for f in fields
            ]
            return tx.one(
                "UPDATE verifications SET fields = :fields, updated_at = :at WHERE id = :id"
                " RETURNING *",
                {
                    "fields": JsonValue([f.as_json() for f in updated]),
                    "at": utc_now(),
                    "id": verification_id,
                },
            )

        return Verification.from_row(_required(await self.database.run(work)))

    async def finish_verification(self, verification_id: int, outcome: Outcome) -> Verification:
        """The conversation reached a verdict: the verification is completed with `outcome`."""
        row = await self.database.run(
            lambda tx: tx.one(
                "UPDATE verifications SET status = :status, outcome = :outcome, updated_at = :at"
                " WHERE id = :id RETURNING *",
                {
                    "status": VerificationStatus.COMPLETED.value,
                    "outcome": outcome.value,
                    "at": utc_now(),
                    "id": verification_id,
                },
            )
        )
        return Verification.from_row(_required(row))


class UnknownField(KeyError):
    """A tool named a field the verification does not have."""


async def open_store(url: str, *, timeout: float = 5.0, migrate_to: int | None = None) -> Store:
    """Open the database at `url` and bring its schema up to date (or to `migrate_to`)."""
    database = connect(url, timeout)
    await database.open()
    try:
        await migrate(database, LATEST if migrate_to is None else migrate_to)
    except BaseException:
        await database.aclose()
        raise
    return Store(database)


# Helpers that run inside a unit of work (on the worker thread).


def _in_list(values: list[int]) -> tuple[str, dict[str, int]]:
    """`IN (…)` placeholders and their parameters, for either database."""
    params = {f"id{n}": value for n, value in enumerate(values)}
    return ", ".join(f":{name}" for name in params), params


def _count_streaming(tx: Transaction, cutoff: datetime) -> int:
    row = tx.one(
        "SELECT COUNT(*) AS streaming FROM calls"
        " WHERE ended_at IS NULL AND streaming_since > :cutoff",
        {"cutoff": cutoff},
    )
    return int((row or {}).get("streaming") or 0)


def _required(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        raise LookupError("the row vanished inside its own transaction")
    return row


def _filters(**values: Any) -> tuple[str, dict[str, Any]]:
    """A WHERE clause matching every value that is not None."""
    given = {name: value for name, value in values.items() if value is not None}
    if not given:
        return "", {}
    return " WHERE " + " AND ".join(f"{name} = :{name}" for name in given), given


def _add_event(
    tx: Transaction, call_id: int, kind: EventKind, data: dict[str, Any], at: datetime
) -> dict[str, Any]:
    return _required(
        tx.one(
            "INSERT INTO call_events (call_id, at, kind, data) VALUES (:call_id, :at, :kind,"
            " :data) RETURNING *",
            {"call_id": call_id, "at": at, "kind": kind.value, "data": JsonValue(data)},
        )
    )


def _find_call_for_update(
    tx: Transaction, call_sid: str, call_id: int | None
) -> dict[str, Any] | None:
    lock = tx.dialect.for_update
    row = tx.one(
        f"SELECT {_CALL_COLUMNS} FROM calls WHERE call_sid = :sid{lock}", {"sid": call_sid}
    )
    if row is None and call_id is not None:
        # Only a call with no SID yet may be claimed this way, so a callback for another
        # call cannot be pinned onto this one.
        row = tx.one(
            f"SELECT {_CALL_COLUMNS} FROM calls WHERE id = :id AND call_sid IS NULL{lock}",
            {"id": call_id},
        )
        if row is not None:
            row = _update_call(tx, call_id, fill={"call_sid": call_sid})
    return row


def _update_call(
    tx: Transaction,
    call_id: int,
    *,
    set_: dict[str, Any] | None = None,
    fill: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """In one statement, overwrite the `set_` columns and fill the `fill` columns that are
    still NULL (first value wins), skipping None values. Returns the call's row."""
    sets = [f"{name} = :{name}" for name, value in (set_ or {}).items() if value is not None]
    sets += [
        f"{name} = COALESCE({name}, :{name})"
        for name, value in (fill or {}).items()
        if value is not None
    ]
    if not sets:
        return tx.one(f"SELECT {_CALL_COLUMNS} FROM calls WHERE id = :id", {"id": call_id})
    values = {k: v for k, v in {**(set_ or {}), **(fill or {})}.items() if v is not None}
    return tx.one(
        f"UPDATE calls SET {', '.join(sets)} WHERE id = :id RETURNING {_CALL_COLUMNS}",
        {**values, "id": call_id},
    )


def _apply_status(
    tx: Transaction,
    call_id: int,
    status: str,
    at: datetime,
    event_data: dict[str, Any],
    current: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Move the call to `status` if that is progress, with its timestamps, status event and
    the verification's status. Returns the call's row."""
    lock = tx.dialect.for_update
    row = current or tx.one(
        f"SELECT {_CALL_COLUMNS} FROM calls WHERE id = :id{lock}", {"id": call_id}
    )
    if row is None or not call_status.advances(row["status"], status):
        return row
    first_times: dict[str, Any] = {}
    if status == call_status.ANSWERED:
        first_times["answered_at"] = at
    if call_status.is_terminal(status):
        first_times["ended_at"] = at
        first_times["end_reason"] = status
    row = _update_call(tx, call_id, set_={"status": status}, fill=first_times)
    _add_event(tx, call_id, EventKind.STATUS, {"status": status, **event_data}, at)
    if row and row["verification_id"] is not None:
        _follow_call(tx, row["verification_id"], status, at)
    return row


def _follow_call(tx: Transaction, verification_id: int, status: str, at: datetime) -> None:
    """Keep the verification's status in step with its call: in progress while one is
    answered, and pending again if it ended without an outcome (so it can be retried)."""
    if status == call_status.ANSWERED:
        old, new = VerificationStatus.PENDING, VerificationStatus.IN_PROGRESS
    elif call_status.is_terminal(status):
        old, new = VerificationStatus.IN_PROGRESS, VerificationStatus.PENDING
    else:
        return
    tx.execute(
        "UPDATE verifications SET status = :new, updated_at = :at"
        " WHERE id = :id AND status = :old AND outcome IS NULL",
        {"new": new.value, "old": old.value, "at": at, "id": verification_id},
    )
