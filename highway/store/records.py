"""The stored records as plain, immutable Python values (no I/O here)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

R = TypeVar("R")


class VerificationStatus(StrEnum):
    PENDING = "pending"  # waiting for a call, or for another try after one that failed
    IN_PROGRESS = "in_progress"  # a call about it has been answered and is underway
    COMPLETED = "completed"  # the agent finished it; `outcome` says how


class Outcome(StrEnum):
    VERIFIED = "verified"  # every field confirmed
    MISMATCH = "mismatch"  # the customer gave a different value for some field
    INCOMPLETE = "incomplete"  # the call ended before every field was covered
    DECLINED = "declined"  # the customer would not take part
    UNREACHABLE = "unreachable"  # no answer, busy, or a wrong number


class CallDirection(StrEnum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"


class EventKind(StrEnum):
    USER = "user"  # a line of the customer's transcript
    ASSISTANT = "assistant"  # a line of the agent's transcript
    TOOL = "tool"  # a tool call with its arguments and result
    DTMF = "dtmf"  # keypad digits
    STATUS = "status"  # the call's status changed
    INTERRUPTION = "interruption"  # the customer talked over the agent (barge-in)


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_datetime(value: datetime | str | None) -> datetime | None:
    """A timestamp as read back, in UTC: PostgreSQL gives datetimes in the session's time
    zone, SQLite the ISO text we wrote."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.astimezone(UTC)


def as_json(value: Any) -> Any:
    """A JSON column as read back: PostgreSQL's jsonb is parsed already, SQLite's is text."""
    return json.loads(value) if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class FieldToConfirm:
    """One detail the agent must confirm: its name, the value on file, and what was heard."""

    name: str
    expected: str
    status: str = "pending"  # pending, confirmed or mismatch
    heard: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "expected": self.expected,
            "status": self.status,
            "heard": self.heard,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FieldToConfirm:
        return cls(data["name"], data["expected"], data.get("status", "pending"), data.get("heard"))


@dataclass(frozen=True, slots=True)
class NewVerification:
    """What a client supplies to create a verification."""

    customer_name: str
    phone: str
    purpose: str
    fields: tuple[FieldToConfirm, ...]
    language: str = "en"
    instructions: str | None = None
    voice: str | None = None


@dataclass(frozen=True, slots=True)
class Verification:
    id: int
    customer_name: str
    phone: str
    purpose: str
    fields: tuple[FieldToConfirm, ...]
    language: str
    instructions: str | None
    voice: str | None
    status: VerificationStatus
    outcome: Outcome | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Verification:
        return _from_row(
            cls,
            row,
            fields=tuple(FieldToConfirm.from_json(f) for f in as_json(row["fields"])),
            status=VerificationStatus(row["status"]),
            outcome=Outcome(row["outcome"]) if row["outcome"] else None,
        )


@dataclass(frozen=True, slots=True)
class Call:
    id: int
    verification_id: int | None  # None: an inbound call answered by the default agent
    call_sid: str | None  # None until Twilio has accepted the call
    stream_sid: str | None
    direction: CallDirection
    from_number: str | None
    to_number: str | None
    status: str  # see highway.store.call_status
    created_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    duration_seconds: int | None
    end_reason: str | None
    error: str | None
    recording_url: str | None
    answered_by: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Call:
        return _from_row(cls, row, direction=CallDirection(row["direction"]))


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One entry of a call's history. Events of a call are ordered by `id`."""

    id: int
    call_id: int
    at: datetime
    kind: EventKind
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CallEvent:
        return _from_row(cls, row, kind=EventKind(row["kind"]), data=as_json(row["data"]))


def _from_row(cls: type[R], row: dict[str, Any], **converted: Any) -> R:
    """A record from a database row: its own columns only (a newer schema may have more),
    timestamps as UTC datetimes, and the `converted` values as given."""
    values = {}
    for field_ in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = field_.name
        if name in converted:
            values[name] = converted[name]
        elif name == "at" or name.endswith("_at"):
            values[name] = as_datetime(row[name])
        else:
            values[name] = row[name]
    return cls(**values)
