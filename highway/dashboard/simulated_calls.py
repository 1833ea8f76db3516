"""`POST /dashboard/simulate-call`: in offline mode, a whole call from the dashboard's button.

Highway rings itself the way `highway simulate-call` does: the Twilio simulator calls in
for a demo verification, speaks generated speech, and the built-in stand-in agent answers;
the call then shows on every dashboard like a real one. The request returns once the call
exists; the conversation runs on in the server's nursery.
"""

from __future__ import annotations

import logging

from quart import Blueprint, current_app, request
from quart_schema import document_response, tag

from highway.api.auth import is_cross_site
from highway.api.calls import refuse_if_at_capacity
from highway.api.errors import ApiError
from highway.api.models import ApiModel, ErrorResponse
from highway.config import Settings
from highway.services import Services, services
from highway.simulate_call import (
    CALLER_ID,
    RingingCall,
    SimulationFailed,
    highway_client,
    ring,
    talk,
)
from highway.store import FieldToConfirm, NewVerification, Store
from highway.testing.speech import speech_ulaw

__all__ = ["blueprint"]

log = logging.getLogger(__name__)

blueprint = Blueprint("simulated_calls", __name__)

# At most this many at once: each is a real call through the bridge.
MAX_SIMULATED_CALLS = 3
TURNS = 2
SPEECH_MS = 1500
TIMEOUT_SECONDS = 60.0

DEMO_CUSTOMER = NewVerification(
    customer_name="Sam Example",
    phone=CALLER_ID,
    purpose="Confirm the details on a new account (a simulated call)",
    fields=(
        FieldToConfirm("date_of_birth", "1990-04-01"),
        FieldToConfirm("postcode", "SW1A 1AA"),
    ),
    language="en",
)


class SimulatedCallStarted(ApiModel):
    message: str
    call_id: int


# The calls this app is simulating now, in app.extensions.
RUNNING_KEY = "highway.simulated_calls"
blueprint.record_once(lambda setup: setup.app.extensions.setdefault(RUNNING_KEY, set()))


@blueprint.post("/dashboard/simulate-call")
@tag(["dashboard"])
@document_response(SimulatedCallStarted, 202)
@document_response(ErrorResponse, 409)
@document_response(ErrorResponse, 429)
@document_response(ErrorResponse, 503)
async def simulate_call() -> tuple[SimulatedCallStarted, int]:
    """Offline mode only: ring Highway from the Twilio simulator; the stand-in agent answers."""
    state = services()
    if is_cross_site(request.headers):
        raise ApiError(403, "Cross-site request refused")
    if not state.settings.offline:
        raise ApiError(409, "Simulated calls run in offline mode only (no OPENAI_API_KEY)")
    running: set[object] = current_app.extensions[RUNNING_KEY]
    if len(running) >= MAX_SIMULATED_CALLS:
        raise ApiError(429, f"{MAX_SIMULATED_CALLS} simulated calls are already running")
    # Taken before the first await, so that requests at once cannot all pass the check.
    slot = object()
    running.add(slot)
    try:
        ringing = await _ring(state)
    except BaseException:
        running.discard(slot)
        raise
    current_app.nursery.start_soon(_talk, state.settings, ringing, running, slot)
    started = SimulatedCallStarted(message="Simulated call started", call_id=ringing.call_id)
    return started, 202


async def _ring(state: Services) -> RingingCall:
    """Ring Highway for the demo verification; its answer names the call."""
    # Else Highway would answer its own ring with the busy message: refused as
    # POST /call-customer is, rather than as a failure to start.
    await refuse_if_at_capacity(state)
    await _demo_verification(state.store)
    async with highway_client(state.settings, _own_url()) as client:
        try:
            ringing = await ring(client, state.settings, CALLER_ID)
        except SimulationFailed as failure:
            raise ApiError(500, f"The simulated call could not start: {failure}") from None
    return ringing


async def _demo_verification(store: Store) -> None:
    """The simulated caller's number needs a pending verification: make one if none is."""
    if await store.pending_verification_for(CALLER_ID) is None:
        await store.create_verification(DEMO_CUSTOMER)


def _own_url() -> str:
    """This server as this request reached it (the address it listens on)."""
    host, port = request.scope["server"]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _talk(
    settings: Settings, ringing: RingingCall, running: set[object], slot: object
) -> None:
    try:
        audio = speech_ulaw(SPEECH_MS)
        await talk(settings, ringing, audio, turns=TURNS, timeout=TIMEOUT_SECONDS)
    except Exception as failure:
        # Whatever went wrong with the simulator, it must not take down the tasks beside
        # it in the app's nursery (the offline agent among them).
        log.warning("simulated call %d failed: %r", ringing.call_id, failure)
    finally:
        running.discard(slot)
