"""What the dashboard is told: a call's record as it changes, and its stored events.

The names are the original dashboard's (`ava_response`, `user_transcript`, …), and every
event carries Highway's `callId`; see the README's "Live dashboard" section.
"""

from __future__ import annotations

from typing import Any

from highway.api.models import CallResponse
from highway.dashboard.hub import EventHub
from highway.store import Call, CallEvent, EventKind, Outcome

__all__ = ["call_json", "publish_call", "publish_call_event", "verification_outcome"]

# The original dashboard's names for the agent's and the customer's words.
EVENT_NAMES = {
    EventKind.USER: "user_transcript",
    EventKind.ASSISTANT: "ava_response",
    EventKind.TOOL: "toolCall",
    EventKind.DTMF: "dtmf",
    EventKind.INTERRUPTION: "bargeIn",
}


def call_json(
    call: Call, outcome: Outcome | None = None, events: list[CallEvent] | None = None
) -> dict[str, Any]:
    """A call as GET /calls/{id} shows it."""
    return CallResponse.of(call, outcome, events).model_dump(by_alias=True, mode="json")


def publish_call(hub: EventHub, call: Call) -> None:
    """`callUpdated`: the call was created, or its status or end changed."""
    summary = call_json(call)
    # Neither is known here: the dashboard keeps what it has.
    del summary["events"], summary["outcome"]
    hub.publish("callUpdated", call.id, call=summary)


def publish_call_event(
    hub: EventHub, call_id: int, kind: EventKind, data: dict[str, Any], event_id: int | None
) -> None:
    """A call event (transcript, tool call, barge-in, DTMF), with its stored id as `eventId`
    (None if it could not be stored) so a dashboard can tell it from the same event in a
    snapshot."""
    data = dict(data)
    if kind is EventKind.TOOL and "callId" in data:
        # The model's id for the tool call; `callId` is Highway's call.
        data["toolCallId"] = data.pop("callId")
    hub.publish(EVENT_NAMES.get(kind, kind.value), call_id, eventId=event_id, **data)
    if outcome := verification_outcome(kind, data):
        hub.publish("outcome", call_id, outcome=outcome)


def verification_outcome(kind: EventKind, data: dict[str, Any]) -> str | None:
    """The outcome a `finish_verification` tool event recorded, if this is one."""
    if kind is not EventKind.TOOL or data.get("name") != "finish_verification":
        return None
    outcome = (data.get("result") or {}).get("outcome")
    return outcome if isinstance(outcome, str) and outcome else None
