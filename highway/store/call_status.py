"""The order of a call's statuses, so that late or repeated Twilio callbacks change nothing.

Twilio sends status callbacks as separate HTTP requests that may arrive out of order, and
retries them. A status is applied only if it is further along than the stored one: a late
`ringing` never overwrites `completed`, and a repeated `completed` is a no-op.
"""

from __future__ import annotations

# Highway's own first status: the record exists and Twilio is being asked to place the call.
CREATED = "in_progress"
# Twilio's statuses, then Highway's `failed` for a call Twilio refused to place.
ANSWERED = "in-progress"
TERMINAL = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})

_RANK: dict[str, int] = {
    CREATED: 0,
    "queued": 1,
    "initiated": 2,
    "ringing": 3,
    ANSWERED: 4,
    **dict.fromkeys(TERMINAL, 5),
}

TWILIO_STATUSES: tuple[str, ...] = tuple(s for s in _RANK if s != CREATED)
ALL_STATUSES: tuple[str, ...] = tuple(_RANK)


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def advances(current: str, new: str) -> bool:
    """True if moving from `current` to `new` is progress (so the update should apply)."""
    return _RANK[new] > _RANK[current]
