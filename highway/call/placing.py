"""Placing an outbound call and answering an inbound one: the record first, then Twilio.

The call's record is written before Twilio is asked, and a refusal is written back onto it,
so no attempt is ever lost. Status and recording callbacks carry the record's id in their
URL, so they find the call even if its Twilio SID could not be stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from highway.config import Settings
from highway.log_redaction import mask_phone
from highway.store import Call, CallDirection, Store, Verification
from highway.telephony import twiml
from highway.telephony.twilio_rest import TwilioCalls, TwilioError

log = logging.getLogger(__name__)

# In a stream URL, in place of a verification id: the default agent answers.
NO_VERIFICATION = 0


class CallNotPlaced(Exception):
    """Twilio refused the call. `call` is its record, now marked failed with the reason."""

    def __init__(self, call: Call, reason: str) -> None:
        super().__init__(reason)
        self.call = call
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PlacedCall:
    call: Call
    call_sid: str


def stream_twiml(settings: Settings, verification_id: int | None, call_id: int) -> str:
    """TwiML connecting the call to Highway's media stream for this call."""
    verification = verification_id or NO_VERIFICATION
    url = twiml.stream_url(settings.public_url, verification, call_id)
    # The stream handshake repeats these, so the bridge can cross-check the URL it got.
    return twiml.connect_stream(url, {"verificationId": str(verification), "callId": str(call_id)})


def callback_url(settings: Settings, webhook: str, call_id: int) -> str:
    return f"{settings.public_url}/twilio/{webhook}?callId={call_id}"


async def place_outbound_call(
    store: Store, twilio: TwilioCalls, settings: Settings, verification: Verification, to: str
) -> PlacedCall:
    """Record the call, ask Twilio to place it, and record Twilio's answer.

    Raises CallNotPlaced if Twilio refuses.
    """
    assert settings.twilio_phone_number is not None  # the caller checks Twilio is configured
    call = await store.create_call(
        verification_id=verification.id,
        direction=CallDirection.OUTBOUND,
        from_number=settings.twilio_phone_number,
        to_number=to,
    )
    try:
        placed = await twilio.place_call(
            to=to,
            from_=settings.twilio_phone_number,
            twiml=stream_twiml(settings, verification.id, call.id),
            status_callback=callback_url(settings, "status", call.id),
            recording_status_callback=callback_url(settings, "recording", call.id),
            time_limit=int(settings.max_call_seconds),
        )
    except TwilioError as error:
        log.warning("call %d to %s not placed: %s", call.id, mask_phone(to), error)
        failed = await store.fail_call(call.id, error=error.message, end_reason="twilio_refused")
        raise CallNotPlaced(failed, error.message) from None
    log.info("call %d to %s placed as %s", call.id, mask_phone(to), placed.sid)
    call = await store.record_twilio_sid(call.id, placed.sid, placed.status)
    return PlacedCall(call, placed.sid)


async def answer_inbound_call(
    store: Store, call_sid: str, from_number: str, to_number: str, status: str
) -> Call:
    """Record an inbound call, tied to the caller's pending verification if there is one."""
    verification = await store.pending_verification_for(from_number)
    call = await store.create_call(
        verification_id=verification.id if verification else None,
        direction=CallDirection.INBOUND,
        from_number=from_number,
        to_number=to_number,
        status=status,
        call_sid=call_sid,
    )
    log.info(
        "inbound call %d from %s: %s",
        call.id,
        mask_phone(from_number),
        f"verification {verification.id}" if verification else "default agent",
    )
    return call
