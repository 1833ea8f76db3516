"""TwilioCalls against the Twilio REST stand-in, over real HTTP on 127.0.0.1.

Also the stand-in's own side of the webhooks: signed status, recording and inbound-call
callbacks delivered to a local receiver.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx
import pytest
import trio
from quart import request
from quart_trio import QuartTrio
from twilio.request_validator import RequestValidator

from highway.telephony.twilio_rest import PlacedCall, TwilioCalls, TwilioError
from highway.testing.serving import serve_on_loopback
from highway.testing.twilio_rest import TwilioRestStandIn

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "test-auth-token-5f0c2a"
CALLER = "+15557654321"
CALLEE = "+15551234567"
TWIML = '<Response><Connect><Stream url="wss://bridge.example.com/media"/></Connect></Response>'
STATUS_URL = "https://bridge.example.com/twilio/call-status?session=s_1"
RECORDING_URL = "https://bridge.example.com/twilio/recording-status"
CALLS_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls"
UNKNOWN_SID = "CA" + "f" * 32
DEADLINE = 10  # seconds; every test is bounded, none sleeps


@pytest.fixture
def standin() -> TwilioRestStandIn:
    return TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN)


@pytest.fixture
async def twilio_url(standin: TwilioRestStandIn) -> AsyncIterator[str]:
    async with standin.serve() as url:
        yield url


@pytest.fixture
async def calls(twilio_url: str) -> AsyncIterator[TwilioCalls]:
    async with TwilioCalls(ACCOUNT_SID, AUTH_TOKEN, api_url=twilio_url) as client:
        yield client


async def place(
    calls: TwilioCalls,
    *,
    to: str = CALLEE,
    twiml: str = TWIML,
    recording_status_callback: str | None = None,
    time_limit: int | None = None,
) -> PlacedCall:
    with trio.fail_after(DEADLINE):
        return await calls.place_call(
            to=to,
            from_=CALLER,
            twiml=twiml,
            status_callback=STATUS_URL,
            recording_status_callback=recording_status_callback,
            time_limit=time_limit,
        )


async def place_failing(calls: TwilioCalls, *, to: str = CALLEE, twiml: str = TWIML) -> TwilioError:
    with pytest.raises(TwilioError) as caught:
        await place(calls, to=to, twiml=twiml)
    return caught.value


# --- placing calls ------------------------------------------------------------------------


async def test_place_call_sends_twilios_form_and_returns_the_queued_call(
    calls: TwilioCalls, standin: TwilioRestStandIn
):
    placed = await place(calls, recording_status_callback=RECORDING_URL, time_limit=900)

    assert re.fullmatch(r"CA[0-9a-f]{32}", placed.sid)
    assert placed.status == "queued"
    [sent] = standin.requests
    assert (sent.method, sent.path, sent.username) == ("POST", f"{CALLS_PATH}.json", ACCOUNT_SID)
    assert sent.form == {
        "To": [CALLEE],
        "From": [CALLER],
        "Twiml": [TWIML],
        "StatusCallback": [STATUS_URL],
        "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
        "StatusCallbackMethod": ["POST"],
        "Record": ["true"],
        "RecordingStatusCallback": [RECORDING_URL],
        "RecordingStatusCallbackEvent": ["completed", "absent"],
        "RecordingStatusCallbackMethod": ["POST"],
        "TimeLimit": ["900"],
    }
    assert standin.calls[placed.sid].status == "queued"


async def test_place_call_without_recording_asks_for_none(
    calls: TwilioCalls, standin: TwilioRestStandIn
):
    placed = await place(calls)

    form = standin.calls[placed.sid].form
    assert not {"Record", "TimeLimit"} & form.keys()
    assert not [name for name in form if name.startswith("Recording")]


async def test_invalid_to_is_twilio_error_21211_with_twilios_own_message(
    calls: TwilioCalls, standin: TwilioRestStandIn
):
    err = await place_failing(calls, to="5551234")

    assert (err.code, err.status) == (21211, 400)
    # Twilio's message, without the SDK's "Unable to create record: " prefix.
    assert err.message == "The 'To' number 5551234 is not a valid phone number."
    assert str(err) == err.message
    assert standin.calls == {}


async def test_no_twiml_is_twilio_error_21205(calls: TwilioCalls):
    err = await place_failing(calls, twiml="")

    assert (err.code, err.status, err.message) == (21205, 400, "Url parameter is required.")


async def test_a_rejected_number_fails_with_the_chosen_code(
    calls: TwilioCalls, standin: TwilioRestStandIn
):
    standin.reject_number("+442071838750", code=21215)

    err = await place_failing(calls, to="+442071838750")

    assert (err.code, err.status) == (21215, 400)
    assert err.message.startswith("Account not authorized to call +442071838750.")
    assert (await place(calls)).status == "queued"  # other numbers still go through


async def test_fail_next_create_fails_exactly_one_create(
    calls: TwilioCalls, standin: TwilioRestStandIn
):
    standin.fail_next_create(429, 20429, "Too Many Requests")

    err = await place_failing(calls)
    placed = await place(calls)

    assert (err.code, err.status, err.message) == (20429, 429, "Too Many Requests")
    assert list(standin.calls) == [placed.sid]


async def test_wrong_auth_token_is_twilio_error_20003(twilio_url: str, standin: TwilioRestStandIn):
    async with TwilioCalls(ACCOUNT_SID, "not-the-token", api_url=twilio_url) as calls:
        err = await place_failing(calls)

    assert (err.code, err.status, err.message) == (20003, 401, "Authenticate")
    assert standin.requests[-1].username == ACCOUNT_SID
    assert standin.calls == {}


async def test_another_accounts_credentials_are_refused(
    twilio_url: str, standin: TwilioRestStandIn
):
    other = "AC" + "9" * 32
    async with TwilioCalls(other, AUTH_TOKEN, api_url=twilio_url) as calls:
        err = await place_failing(calls)

    assert (err.code, err.status) == (20003, 401)
    assert standin.requests[-1].path == f"/2010-04-01/Accounts/{other}/Calls.json"


# --- status, hangup, cancel -----------------------------------------------------------


async def test_fetch_status_follows_the_call(calls: TwilioCalls, standin: TwilioRestStandIn):
    placed = await place(calls)

    with trio.fail_after(DEADLINE):
        before = await calls.fetch_status(placed.sid)
        standin.set_status(placed.sid, "in-progress")
        after = await calls.fetch_status(placed.sid)

    assert (before, after) == ("queued", "in-progress")
    assert standin.requests[-1].method == "GET"


async def test_fetch_status_of_an_unknown_call_is_twilio_error_20404(calls: TwilioCalls):
    with pytest.raises(TwilioError) as caught:
        await calls.fetch_status(UNKNOWN_SID)

    err = caught.value
    assert (err.code, err.status) == (20404, 404)
    assert err.message == f"The requested resource {CALLS_PATH}/{UNKNOWN_SID}.json was not found"


async def test_hangup_ends_the_call_and_is_idempotent(
    calls: TwilioCalls, standin: TwilioRestStandIn
):
    placed = await place(calls)
    standin.set_status(placed.sid, "in-progress")

    with trio.fail_after(DEADLINE):
        first = await calls.hangup(placed.sid)
        status = await calls.fetch_status(placed.sid)
        again = await calls.hangup(placed.sid)  # Twilio answers an ended call unchanged
        standin.forget(placed.sid)
        gone = await calls.hangup(placed.sid)  # 20404: nothing left to hang up

    assert (first, status, again, gone) == (True, "completed", True, False)
    updates = [r.form for r in standin.requests if r.method == "POST" and placed.sid in r.path]
    assert updates == [{"Status": ["completed"]}] * 3


async def test_cancel_ends_a_ringing_call_but_not_an_answered_one(
    calls: TwilioCalls, standin: TwilioRestStandIn
):
    ringing, answered = await place(calls), await place(calls)
    standin.set_status(ringing.sid, "ringing")
    standin.set_status(answered.sid, "in-progress")

    with trio.fail_after(DEADLINE):
        assert await calls.cancel(ringing.sid) is True
        assert await calls.cancel(answered.sid) is True  # accepted, as Twilio does...

    assert standin.calls[ringing.sid].status == "canceled"
    assert standin.calls[answered.sid].status == "in-progress"  # ...but without effect
    assert standin.requests[-1].form == {"Status": ["canceled"]}


async def test_cancel_of_an_unknown_call_is_false(calls: TwilioCalls):
    with trio.fail_after(DEADLINE):
        assert await calls.cancel(UNKNOWN_SID) is False


async def test_a_malformed_call_sid_never_reaches_twilio(
    calls: TwilioCalls, standin: TwilioRestStandIn
):
    with pytest.raises(TwilioError, match="not a Twilio Call SID"):
        await calls.hangup("../../IncomingPhoneNumbers/PN1")

    assert standin.requests == []


# --- the transport ----------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (just released by the kernel)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_unreachable_twilio_is_twilio_error_without_status():
    port = closed_port()
    async with TwilioCalls(ACCOUNT_SID, AUTH_TOKEN, api_url=f"http://127.0.0.1:{port}") as calls:
        err = await place_failing(calls)

    assert (err.status, err.code) == (None, None)
    assert err.message.startswith(f"cannot reach Twilio at http://127.0.0.1:{port}: ")
    assert isinstance(err.__cause__, httpx.ConnectError)


async def test_a_silent_twilio_times_out_as_twilio_error():
    # A listener that never accepts: the kernel completes the handshake, nobody answers.
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        port = listener.socket.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        async with TwilioCalls(ACCOUNT_SID, AUTH_TOKEN, api_url=url, timeout=0.2) as calls:
            with trio.fail_after(DEADLINE):
                err = await place_failing(calls)

    assert err.status is None
    assert err.message == f"Twilio did not answer POST {url} within 0.2 s"


async def test_answers_that_are_not_twilio_json_are_twilio_errors():
    # What a proxy or load balancer in the way might answer.
    app = QuartTrio("not-twilio")

    @app.post("/<path:path>")
    async def bad_gateway(path: str) -> tuple[str, int]:
        return "<html>502 Bad Gateway</html>", 502

    @app.get("/<path:path>")
    async def html_page(path: str) -> str:
        return "<html>ok</html>"

    async with (
        serve_on_loopback(app) as url,
        TwilioCalls(ACCOUNT_SID, AUTH_TOKEN, api_url=url) as calls,
    ):
        gateway = await place_failing(calls)
        with pytest.raises(TwilioError, match="not JSON") as unreadable:
            await calls.fetch_status(UNKNOWN_SID)

    assert (gateway.message, gateway.code, gateway.status) == (
        "Twilio answered HTTP 502",
        None,
        502,
    )
    assert unreadable.value.status is None


async def test_twilio_edge_in_the_environment_does_not_move_requests(
    monkeypatch: pytest.MonkeyPatch, twilio_url: str, standin: TwilioRestStandIn
):
    # The SDK reads these on every Client(); they would turn 127.0.0.1 into 127.sydney.au1...
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    async with TwilioCalls(ACCOUNT_SID, AUTH_TOKEN, api_url=twilio_url) as calls:
        placed = await place(calls)

    assert placed.sid in standin.calls
    assert standin.requests[-1].path == f"{CALLS_PATH}.json"


async def test_nothing_secret_is_logged(
    caplog: pytest.LogCaptureFixture, calls: TwilioCalls, standin: TwilioRestStandIn
):
    caplog.set_level(logging.DEBUG)

    placed = await place(calls)
    await calls.hangup(placed.sid)
    await place_failing(calls, to="555-0100")

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert placed.sid in logged  # the client does log, just nothing sensitive
    for secret in (AUTH_TOKEN, CALLEE, CALLER, "555-0100", TWIML, "bridge.example.com"):
        assert secret not in logged


# --- the stand-in on the wire -----------------------------------------------------------


async def test_call_resource_has_twilios_shape(twilio_url: str):
    async with httpx.AsyncClient(trust_env=False, auth=(ACCOUNT_SID, AUTH_TOKEN)) as http:
        response = await http.post(
            f"{twilio_url}{CALLS_PATH}.json",
            data={"To": CALLEE, "From": CALLER, "Url": "https://bridge.example.com/twiml"},
        )
        fetched = await http.get(f"{twilio_url}{CALLS_PATH}/{response.json()['sid']}.json")

    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/json")
    call = response.json()
    assert call["uri"] == f"{CALLS_PATH}/{call['sid']}.json"
    assert call["subresource_uris"]["recordings"] == f"{CALLS_PATH}/{call['sid']}/Recordings.json"
    assert {k: call[k] for k in ("account_sid", "to", "from", "to_formatted", "status")} == {
        "account_sid": ACCOUNT_SID,
        "to": CALLEE,
        "from": CALLER,
        "to_formatted": "(555) 123-4567",
        "status": "queued",
    }
    assert (call["direction"], call["api_version"]) == ("outbound-api", "2010-04-01")
    assert parsedate_to_datetime(call["date_created"]).utcoffset() is not None
    assert call["start_time"] is call["end_time"] is call["duration"] is None
    assert (fetched.status_code, fetched.json()) == (200, call)


async def test_missing_fields_answer_twilios_errors_in_order(twilio_url: str):
    async def create(**form: str) -> tuple[int, int]:
        response = await http.post(f"{twilio_url}{CALLS_PATH}.json", data=form)
        body = response.json()
        assert body["more_info"] == f"https://www.twilio.com/docs/errors/{body['code']}"
        return response.status_code, body["code"]

    async with httpx.AsyncClient(trust_env=False, auth=(ACCOUNT_SID, AUTH_TOKEN)) as http:
        assert await create(From=CALLER, Twiml=TWIML) == (400, 21201)
        assert await create(To=CALLEE, Twiml=TWIML) == (400, 21603)
        assert await create(To=CALLEE, From=CALLER) == (400, 21205)


async def test_redirecting_an_ended_call_is_21220(
    twilio_url: str, calls: TwilioCalls, standin: TwilioRestStandIn
):
    placed = await place(calls)
    await calls.hangup(placed.sid)

    async with httpx.AsyncClient(trust_env=False, auth=(ACCOUNT_SID, AUTH_TOKEN)) as http:
        response = await http.post(
            f"{twilio_url}{CALLS_PATH}/{placed.sid}.json", data={"Twiml": TWIML}
        )

    assert (response.status_code, response.json()["code"]) == (400, 21220)
    assert standin.calls[placed.sid].status == "completed"


async def test_missing_credentials_get_a_401_challenge(twilio_url: str):
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(f"{twilio_url}{CALLS_PATH}/{UNKNOWN_SID}.json")

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert response.json()["code"] == 20003


# --- callbacks from the stand-in --------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    query: str
    form: dict[str, str]
    signature: str | None


@asynccontextmanager
async def receiver() -> AsyncIterator[tuple[str, list[Received]]]:
    """A local server that records every POST it gets; yields (base URL, received)."""
    received: list[Received] = []
    app = QuartTrio("receiver")

    @app.post("/<path:path>")
    async def record(path: str) -> tuple[str, int]:
        form = (await request.form).to_dict()
        query = request.query_string.decode()
        signature = request.headers.get("X-Twilio-Signature")
        received.append(Received(request.path, query, form, signature))
        return "", 204

    async with serve_on_loopback(app) as url:
        yield url, received


def signed_for(url: str, got: Received) -> bool:
    return RequestValidator(AUTH_TOKEN).validate(url, got.form, got.signature or "")


async def test_status_callbacks_are_signed_for_the_public_url(
    calls: TwilioCalls, standin: TwilioRestStandIn
):
    placed = await place(calls)

    async with receiver() as (local_url, received):
        with trio.fail_after(DEADLINE):
            await standin.send_status_callback(placed.sid, "ringing", deliver_to=local_url)
            answered = await standin.send_status_callback(
                placed.sid, "in-progress", deliver_to=local_url
            )
            await standin.send_status_callback(
                placed.sid, "completed", deliver_to=local_url, duration=61
            )

    assert answered.status_code == 204
    ringing, _, completed = received
    assert (ringing.path, ringing.query) == ("/twilio/call-status", "session=s_1")
    assert signed_for(STATUS_URL, ringing)
    assert not signed_for(f"{local_url}/twilio/call-status?session=s_1", ringing)
    assert [got.form["SequenceNumber"] for got in received] == ["0", "1", "2"]
    assert [got.form["CallStatus"] for got in received] == ["ringing", "in-progress", "completed"]
    assert {k: ringing.form[k] for k in ("CallSid", "AccountSid", "From", "To")} == {
        "CallSid": placed.sid,
        "AccountSid": ACCOUNT_SID,
        "From": CALLER,
        "To": CALLEE,
    }
    assert ringing.form["Direction"] == "outbound-api"
    assert ringing.form["CallbackSource"] == "call-progress-events"
    assert parsedate_to_datetime(ringing.form["Timestamp"]).utcoffset() is not None
    assert "CallDuration" not in ringing.form
    assert (completed.form["CallDuration"], completed.form["Duration"]) == ("61", "2")
    assert await calls.fetch_status(placed.sid) == "completed"


async def test_recording_callback_goes_to_the_recording_url(
    calls: TwilioCalls, standin: TwilioRestStandIn
):
    placed = await place(calls, recording_status_callback=RECORDING_URL)
    standin.set_status(placed.sid, "completed", duration=30)

    async with receiver() as (local_url, received):
        with trio.fail_after(DEADLINE):
            await standin.send_recording_callback(placed.sid, deliver_to=local_url)

    [got] = received
    assert got.path == "/twilio/recording-status"
    assert signed_for(RECORDING_URL, got)
    assert re.fullmatch(r"RE[0-9a-f]{32}", got.form["RecordingSid"])
    assert got.form["RecordingUrl"].endswith(f"/Recordings/{got.form['RecordingSid']}")
    assert (got.form["CallSid"], got.form["RecordingStatus"]) == (placed.sid, "completed")
    assert (got.form["RecordingDuration"], got.form["RecordingChannels"]) == ("30", "1")
    assert got.form["RecordingSource"] == "OutboundAPI"


async def test_post_signed_simulates_an_inbound_call_webhook(standin: TwilioRestStandIn):
    public = "https://bridge.example.com/twilio/voice"
    params = {"CallSid": "CA" + "1" * 32, "From": CALLEE, "To": CALLER, "CallStatus": "ringing"}

    async with receiver() as (local_url, received):
        with trio.fail_after(DEADLINE):
            response = await standin.post_signed(public, params, deliver_to=local_url)

    assert response.status_code == 204
    [got] = received
    assert (got.path, got.form) == ("/twilio/voice", params)
    assert signed_for(public, got)
    assert not RequestValidator("another-token").validate(public, got.form, got.signature)
