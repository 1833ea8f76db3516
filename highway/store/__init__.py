"""Highway's records: verifications, calls and call events, in SQLite or PostgreSQL."""

from highway.store.database import DatabaseUnavailable, StoreError
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
)
from highway.store.store import Admission, StatusUpdate, Store, UnknownField, open_store

__all__ = [
    "Admission",
    "Call",
    "CallDirection",
    "CallEvent",
    "DatabaseUnavailable",
    "EventKind",
    "FieldToConfirm",
    "NewVerification",
    "Outcome",
    "StatusUpdate",
    "Store",
    "StoreError",
    "UnknownField",
    "Verification",
    "VerificationStatus",
    "open_store",
]
