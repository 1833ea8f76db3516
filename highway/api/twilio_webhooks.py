"""Twilio's webhooks: POST /twilio/status, /twilio/recording and /twilio/incoming.

Each is signature-checked before anything is read or written (see `register_signature_check`).
Status callbacks are applied monotonically, so retries and late arrivals change nothing.
"""

from __future__ import annotations

import logging
from email.utils import parsedate_to_datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_pascal
from quart import Blueprint, Quart, Response, request
from quart_schema import (
    DataSource,
    document_response,
    security_scheme,
    tag,
    validate_request,
)

from highway.api.auth import TWILIO_PREFIX
from highway.api.errors import ApiError
from highway.api.models import ErrorResponse
from highway.call.placing import answer_inbound_call, stream_twiml
from highway.config import Settings
from highway.dashboard.events import publish_call
from highway.services import services
from highway.store.call_status import TWILIO_STATUSES
from highway.telephony import twiml
from highway.telephony.twilio_signature import TwilioSignatureCheck, public_request_url

log = logging.getLogger(__name__)

BUSY_MESSAGE = "Sorry, all our lines are busy right now. Please call again later. Goodbye."

blueprint = Blueprint("twilio", __name__, url_prefix="/twilio")

CallSid = Annotated[str, Field(pattern=r"^CA[0-9a-fA-F]{32}$", examples=["CA" + "0" * 32])]


class TwilioForm(BaseModel):
    """A Twilio webhook's form. Twilio sends many more fields than Highway reads."""

    model_config = ConfigDict(
        alias_generator=to_pascal, populate_by_name=True, extra="ignore", str_strip_whitespace=True
    )


class StatusCallback(TwilioForm):
    call_sid: CallSid
    call_status: Literal[TWILIO_STATUSES]  # type: ignore[valid-type]
    call_duration: int | None = Field(None, ge=0, description="Seconds; on completion only.")
    answered_by: str | None = Field(None, max_length=64)
    timestamp: str | None = Field(None, description="RFC 2822, when Twilio sent it.")


class RecordingCallback(TwilioForm):
    call_sid: CallSid
    recording_status: str = Field(max_length=32)
    recording_url: str | None = Field(None, max_length=2000)


class IncomingCall(TwilioForm):
    call_sid: CallSid
    from_: str = Field(alias="From", max_length=128)
    to: str = Field(max_length=128)
    call_status: Literal[TWILIO_STATUSES] = "ringing"  # type: ignore[valid-type]


def _call_id_in_url() -> int | None:
    """The callId Highway put into the callback URL, if it is there and a number."""
    value = request.args.get("callId", "")
    return int(value) if value.isdigit() else None


def _sent_at(timestamp: str | None):
    try:
        return parsedate_to_datetime(timestamp) if timestamp else None
    except (TypeError, ValueError):
        return None  # an odd timestamp is no reason to lose the status


@blueprint.post("/status")
@tag(["twilio"])
@security_scheme([])
@validate_request(StatusCallback, source=DataSource.FORM)
@document_response(ErrorResponse, 403)
@document_response(ErrorResponse, 404)
async def status_callback(data: StatusCallback) -> tuple[str, int]:
    """Twilio reports a call's progress: initiated, ringing, answered, completed."""
    state = services()
    update = await state.store.apply_twilio_status(
        call_sid=data.call_sid,
        status=data.call_status,
        at=_sent_at(data.timestamp),
        duration_seconds=data.call_duration,
        answered_by=data.answered_by,
        call_id=_call_id_in_url(),
    )
    if update is None:
        raise ApiError(404, f"Call {data.call_sid} not found")
    if update.changed:
        log.info("call %d is now %s", update.call.id, update.call.status)
        publish_call(state.hub, update.call)
    return "", 204


@blueprint.post("/recording")
@tag(["twilio"])
@security_scheme([])
@validate_request(RecordingCallback, source=DataSource.FORM)
@document_response(ErrorResponse, 403)
@document_response(ErrorResponse, 404)
async def recording_callback(data: RecordingCallback) -> tuple[str, int]:
    """Twilio reports the call's recording; its URL is stored on the call."""
    store = services().store
    if data.recording_status != "completed" or not data.recording_url:
        # "absent" (nothing recorded) or "in-progress": nothing to store yet.
        call = await store.get_call_by_sid(data.call_sid)
    else:
        call = await store.record_recording(
            call_sid=data.call_sid, recording_url=data.recording_url, call_id=_call_id_in_url()
        )
    if call is None:
        raise ApiError(404, f"Call {data.call_sid} not found")
    return "", 204


@blueprint.post("/incoming")
@tag(["twilio"])
@security_scheme([])
@validate_request(IncomingCall, source=DataSource.FORM)
@document_response(ErrorResponse, 403)
async def incoming_call(data: IncomingCall) -> Response:
    """Answer a call to Highway's number with TwiML that streams it to the bridge, for the
    caller's pending verification if there is one, else for the default agent."""
    state = services()
    call = await answer_inbound_call(
        state.store, data.call_sid, data.from_, data.to, data.call_status
    )
    # A retried webhook finds the call it made before: if that one streams already, it is
    # counted in the limit itself, and must not be refused for it.
    if call.stream_sid is None and await state.at_capacity():
        state.meters.refused("at_capacity")
        # Kept on record as refused, and the caller hears why rather than silence.
        call = await state.store.fail_call(call.id, error="at capacity", end_reason="at_capacity")
        publish_call(state.hub, call)
        log.warning("inbound call %d refused: at capacity", call.id)
        return Response(twiml.busy(BUSY_MESSAGE), status=200, content_type="text/xml")
    publish_call(state.hub, call)
    body = stream_twiml(state.settings, call.verification_id, call.id)
    return Response(body, status=200, content_type="text/xml")


def register_signature_check(app: Quart, settings: Settings) -> None:
    """Refuse (403, nothing written) any webhook not signed by Twilio, when an auth token is
    configured. Without one, Twilio is not in use and there is nothing to check against."""
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
    if not token:
        log.warning("TWILIO_AUTH_TOKEN is not set: Twilio webhook signatures are not checked")
        return
    check = TwilioSignatureCheck(token)

    @app.before_request
    async def require_twilio_signature() -> None:
        if not request.path.startswith(TWILIO_PREFIX):
            return
        url = public_request_url(
            settings.public_url, request.path, request.query_string.decode("latin-1")
        )
        form = await request.form
        if not check.is_valid(url, form, request.headers.get("X-Twilio-Signature")):
            log.warning("refused %s: missing or invalid Twilio signature", request.path)
            raise ApiError(403, "Invalid or missing Twilio signature")
