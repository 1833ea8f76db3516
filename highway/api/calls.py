"""POST /call-customer (the seed's contract), GET /calls/{id} and GET /calls."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import (
    document_response,
    tag,
    validate_querystring,
    validate_request,
    validate_response,
)

from highway.api.errors import ApiError
from highway.api.models import (
    CallCustomerRequest,
    CallCustomerResponse,
    CallFailedResponse,
    CallList,
    CallQuery,
    CallResponse,
    ErrorResponse,
)
from highway.call.placing import CallNotPlaced, place_outbound_call
from highway.dashboard.events import publish_call
from highway.services import Services, services

blueprint = Blueprint("calls", __name__)


@blueprint.post("/call-customer")
@tag(["calls"])
@validate_request(CallCustomerRequest)
@validate_response(CallCustomerResponse, 200)
@document_response(ErrorResponse, 400)
@document_response(ErrorResponse, 404)
@document_response(CallFailedResponse, 500)
@document_response(ErrorResponse, 503)
async def call_customer(data: CallCustomerRequest) -> CallCustomerResponse:
    """Call a customer about a verification. The call streams to the bridge once answered."""
    state = services()
    verification = await state.store.get_verification(data.verification)
    if verification is None:
        raise ApiError(404, f"Verification {data.verification} not found")
    if state.twilio is None:
        raise ApiError(
            503,
            "Twilio is not configured: set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and"
            " TWILIO_PHONE_NUMBER",
        )
    await refuse_if_at_capacity(state)
    try:
        placed = await place_outbound_call(
            state.store, state.twilio, state.settings, verification, data.to
        )
    except CallNotPlaced as failure:
        publish_call(state.hub, failure.call)
        raise ApiError(
            500, f"Failed to initiate call: {failure.reason}", callId=failure.call.id
        ) from None
    publish_call(state.hub, placed.call)
    return CallCustomerResponse(
        message=f"Call initiated with SID: {placed.call_sid}",
        call_id=placed.call.id,
        call_sid=placed.call_sid,
    )


async def refuse_if_at_capacity(state: Services) -> None:
    """503 while HIGHWAY_MAX_CONCURRENT_CALLS calls are streaming, deployment-wide."""
    if await state.at_capacity():
        state.meters.refused("at_capacity")
        limit = state.settings.max_concurrent_calls
        raise ApiError(
            503,
            f"Highway is at capacity ({limit} concurrent calls); try again later",
            headers={"Retry-After": "10"},
        )


@blueprint.get("/calls/<int:call_id>")
@tag(["calls"])
@validate_response(CallResponse, 200)
@document_response(ErrorResponse, 404)
async def get_call(call_id: int) -> CallResponse:
    """A call with its status, timestamps, events (transcript, tool calls, DTMF, status
    changes) and outcome."""
    store = services().store
    call = await store.get_call(call_id)
    if call is None:
        raise ApiError(404, f"Call {call_id} not found")
    outcomes = await store.outcomes([call.verification_id])
    events = await store.call_events(call.id)
    return CallResponse.of(call, outcomes.get(call.verification_id), events)


@blueprint.get("/calls")
@tag(["calls"])
@validate_querystring(CallQuery)
@validate_response(CallList, 200)
async def list_calls(query_args: CallQuery) -> CallList:
    """Calls, newest first, optionally only one verification's or one status's."""
    store = services().store
    calls = await store.list_calls(
        verification_id=query_args.verification,
        status=query_args.status,
        limit=query_args.limit,
        offset=query_args.offset,
    )
    outcomes = await store.outcomes([call.verification_id for call in calls])
    return CallList(calls=[CallResponse.of(c, outcomes.get(c.verification_id)) for c in calls])
