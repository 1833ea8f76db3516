"""HIGHWAY_MAX_CONCURRENT_CALLS through the real server, on SQLite and PostgreSQL: with the
limit's worth of streams live, a new outbound call is refused by the API (503), an inbound
call hears that the lines are busy, and a media stream is closed with 1013 before anything
is opened upstream; once a call ends, the next is admitted. The count lives in the
database, so it holds for every Highway sharing it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from xml.etree import ElementTree

import httpx
import trio

from highway.api.twilio_webhooks import BUSY_MESSAGE
from highway.telephony.twiml import stream_url
from highway.testing.realtime_standin import Reply
from highway.testing.twilio_media import SimulatedCall, open_simulated_call
from highway.testing.twilio_rest import TwilioRestStandIn
from tests.api_support import ACCOUNT_SID, AUTH_TOKEN, CUSTOMER, HIGHWAY_NUMBER, PUBLIC_URL, Highway
from tests.bridge_support import OPENAI_KEY, PlacedCall, running_bridge
from tests.conftest import api_settings, running_highway

GREETING = Reply(text="Hello Ada, this is Highway.", audio_ms=600)
AT_CAPACITY_CLOSE = (1013, "Highway is at capacity; try again later")
LIMIT = "1"
INBOUND_SID = "CA" + "b" * 32


def creates(twilio: TwilioRestStandIn) -> int:
    """How many calls Highway has asked Twilio to place."""
    return sum(1 for r in twilio.requests if r.method == "POST" and r.path.endswith("/Calls.json"))


async def call_customer(highway: Highway) -> httpx.Response:
    """POST /call-customer for a new verification, whatever the answer."""
    verification = await highway.create_verification()
    return await highway.client.post(
        "/call-customer", json={"to": CUSTOMER, "verification": verification["id"]}
    )


async def ring_in(highway: Highway, sid: str = INBOUND_SID) -> httpx.Response:
    """Twilio's signed webhook for a call to Highway's number from the customer."""
    form = {
        "CallSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": CUSTOMER,
        "To": HIGHWAY_NUMBER,
        "CallStatus": "ringing",
        "Direction": "inbound",
    }
    return await highway.twilio.post_signed(
        f"{PUBLIC_URL}/twilio/incoming", form, deliver_to=highway.url
    )


@asynccontextmanager
async def stream_to(base_url: str, call: PlacedCall) -> AsyncIterator[SimulatedCall]:
    """Twilio opening `call`'s media stream on the Highway at `base_url`, signed."""
    async with open_simulated_call(
        base_url.replace("http://", "ws://") + call.path,
        auth_token=AUTH_TOKEN,
        signed_url=stream_url(PUBLIC_URL, call.verification_id, call.call_id),
        call_sid=call.call_sid,
        account_sid=ACCOUNT_SID,
    ) as simulated:
        yield simulated


async def refused_stream(base_url: str, call: PlacedCall) -> SimulatedCall:
    """Open `call`'s stream and wait for the server to close it."""
    async with stream_to(base_url, call) as caller:
        with trio.fail_after(5):
            await caller.wait_closed()
    return caller


async def test_at_the_limit_every_way_in_is_refused_until_a_call_ends(
    clean_env: Path, database_url: str, twilio: TwilioRestStandIn
) -> None:
    """One call live with a limit of one: the API answers 503 with Retry-After and asks
    Twilio for nothing; an inbound call gets the busy message and hangs up, and is kept as
    failed/at_capacity; a placed call's stream is closed with 1013 and no model session is
    opened for it. The live call goes on; once it ends, a new call is placed and bridged."""
    async with running_bridge(
        database_url, twilio, replies=[GREETING, GREETING], HIGHWAY_MAX_CONCURRENT_CALLS=LIMIT
    ) as bridge:
        first = await bridge.place_call()
        waiting = await bridge.place_call()  # placed while nothing streamed yet
        async with bridge.dial(first) as caller:
            await bridge.model_session()
            with trio.fail_after(5):
                await caller.wait_played(600)
            placed_before = creates(twilio)
            refused = await call_customer(bridge.highway)
            placed_after = creates(twilio)
            busy = await ring_in(bridge.highway)
            stream = await refused_stream(bridge.highway.url, waiting)
            model_sessions_meanwhile = bridge.agent.connection_attempts
            assert not caller.closed.is_set()  # the live call was not touched
            await caller.hang_up()
        first_record = await bridge.ended_call(first.call_id)
        calls = (await bridge.highway.client.get("/calls")).json()["calls"]
        waiting_record = await bridge.call_record(waiting.call_id)

        admitted = await call_customer(bridge.highway)
        assert admitted.status_code == 200, admitted.text
        body = admitted.json()
        later = PlacedCall(
            (await bridge.call_record(body["callId"]))["verificationId"],
            body["callId"],
            body["callSid"],
        )
        async with bridge.dial(later) as next_caller:
            with trio.fail_after(5):
                await next_caller.wait_played(600)  # greeted: bridged to the model
            await next_caller.hang_up()
        later_record = await bridge.ended_call(later.call_id)

    # The API: 503 with the reason and when to try again; Twilio was not asked.
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "10"
    assert refused.json() == {
        "error": "Highway is at capacity (1 concurrent calls); try again later"
    }
    assert placed_after == placed_before
    # Inbound: the caller hears why, then the line hangs up; nothing is streamed.
    assert busy.status_code == 200
    assert busy.headers["content-type"].startswith("text/xml")
    twiml = ElementTree.fromstring(busy.text)
    assert twiml.tag == "Response"
    assert [(child.tag, (child.text or "").strip()) for child in twiml] == [
        ("Say", BUSY_MESSAGE),
        ("Hangup", ""),
    ]
    inbound = [c for c in calls if c["callSid"] == INBOUND_SID]
    assert len(inbound) == 1
    assert (inbound[0]["direction"], inbound[0]["status"], inbound[0]["endReason"]) == (
        "inbound",
        "failed",
        "at_capacity",
    )
    assert inbound[0]["error"] == "at capacity" and inbound[0]["endedAt"] is not None
    # The stream: accepted, then closed with 1013 and the reason; no model session opened.
    assert (stream.close_code, stream.close_reason) == AT_CAPACITY_CLOSE
    assert stream.received_ms == 0
    assert model_sessions_meanwhile == 1
    assert (waiting_record["status"], waiting_record["streamSid"]) == ("queued", None)
    # The live call was not disturbed, and once it ended the next call was bridged.
    assert (first_record["status"], first_record["endReason"]) == ("completed", "caller_hung_up")
    assert (later_record["status"], later_record["endReason"]) == ("completed", "caller_hung_up")
    assert bridge.agent.connection_attempts == 2


async def test_an_ended_call_frees_its_place_for_an_inbound_call(
    clean_env: Path, database_url: str, twilio: TwilioRestStandIn
) -> None:
    """Busy while a call is live; once it has ended, the same kind of inbound call is
    answered with the stream, and its stream is admitted."""
    async with running_bridge(
        database_url, twilio, replies=[GREETING, GREETING], HIGHWAY_MAX_CONCURRENT_CALLS=LIMIT
    ) as bridge:
        first = await bridge.place_call()
        async with bridge.dial(first) as caller:
            with trio.fail_after(5):
                await caller.wait_played(600)
            busy = await ring_in(bridge.highway, "CA" + "c" * 32)
            await caller.hang_up()
        await bridge.ended_call(first.call_id)
        answered = await ring_in(bridge.highway, "CA" + "d" * 32)
        stream = ElementTree.fromstring(answered.text).find("./Connect/Stream")
        assert stream is not None, answered.text
        parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        inbound = PlacedCall(
            int(parameters["verificationId"] or 0),
            int(parameters["callId"] or 0),
            "CA" + "d" * 32,
        )
        async with bridge.dial(inbound) as inbound_caller:
            with trio.fail_after(5):
                await inbound_caller.wait_played(600)
            await inbound_caller.hang_up()
        record = await bridge.ended_call(inbound.call_id)

    assert ElementTree.fromstring(busy.text).find("./Say") is not None
    assert (record["direction"], record["status"], record["endReason"]) == (
        "inbound",
        "completed",
        "caller_hung_up",
    )


async def test_the_limit_holds_for_every_highway_sharing_the_database(
    clean_env: Path, database_url: str, twilio: TwilioRestStandIn
) -> None:
    """Two Highways on one database, as two workers or hosts: a call live on one fills the
    place, so the other refuses calls and streams too, though it carries none itself."""
    async with running_bridge(
        database_url, twilio, replies=[GREETING], HIGHWAY_MAX_CONCURRENT_CALLS=LIMIT
    ) as bridge:
        assert twilio.base_url is not None
        other_settings = api_settings(
            database_url,
            twilio.base_url,
            OPENAI_API_KEY=OPENAI_KEY,
            HIGHWAY_OPENAI_URL=bridge.agent.url,
            HIGHWAY_MAX_CONCURRENT_CALLS=LIMIT,
        )
        async with running_highway(other_settings, twilio) as other:
            first = await bridge.place_call()
            verification = await other.create_verification()
            placed = await other.place_call(verification["id"])
            waiting = PlacedCall(verification["id"], placed["callId"], placed["callSid"])
            async with bridge.dial(first) as caller:
                with trio.fail_after(5):
                    await caller.wait_played(600)
                refused = await call_customer(other)
                stream = await refused_stream(other.url, waiting)
                await caller.hang_up()
            await bridge.ended_call(first.call_id)
            admitted = await call_customer(other)

    assert refused.status_code == 503
    assert (stream.close_code, stream.close_reason) == AT_CAPACITY_CLOSE
    assert admitted.status_code == 200, admitted.text
    assert bridge.agent.connection_attempts == 1
