"""POST /call-customer, GET /calls/{id} and GET /calls, against the Twilio REST stand-in."""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree import ElementTree

import pytest

from highway.testing.twilio_rest import TwilioRestStandIn
from tests.api_support import CUSTOMER, HIGHWAY_NUMBER, PUBLIC_URL, Highway
from tests.conftest import api_settings, running_highway


async def test_a_call_is_placed_through_twilio(highway: Highway) -> None:
    verification = await highway.create_verification()
    placed = await highway.place_call(verification["id"])

    sid = placed["callSid"]
    assert re.fullmatch(r"CA[0-9a-f]{32}", sid)
    assert placed == {
        "message": f"Call initiated with SID: {sid}",
        "callId": placed["callId"],
        "callSid": sid,
    }
    call = await highway.call(placed["callId"])
    assert (call["callSid"], call["status"], call["direction"]) == (sid, "queued", "outbound")
    assert (call["from"], call["to"], call["verificationId"]) == (
        HIGHWAY_NUMBER,
        CUSTOMER,
        verification["id"],
    )
    # The record was written as in_progress before Twilio was asked, then took its answer.
    assert [e["data"]["status"] for e in call["events"]] == ["in_progress", "queued"]


async def test_twilio_is_asked_for_a_stream_callbacks_and_a_recording(highway: Highway) -> None:
    verification = await highway.create_verification()
    placed = await highway.place_call(verification["id"])
    call_id, verification_id = placed["callId"], verification["id"]

    form = highway.twilio.calls[placed["callSid"]].form
    assert (form["To"], form["From"]) == ([CUSTOMER], [HIGHWAY_NUMBER])
    assert form["StatusCallback"] == [f"{PUBLIC_URL}/twilio/status?callId={call_id}"]
    assert form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert form["StatusCallbackMethod"] == ["POST"]
    assert form["Record"] == ["true"]
    assert form["RecordingStatusCallback"] == [f"{PUBLIC_URL}/twilio/recording?callId={call_id}"]

    twiml = ElementTree.fromstring(form["Twiml"][0])
    stream = twiml.find("./Connect/Stream")
    assert stream is not None
    url = f"wss://highway.example.test/media-stream/{verification_id}/{call_id}"
    assert stream.get("url") == url  # no query string: Twilio refuses one
    parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert parameters == {"verificationId": str(verification_id), "callId": str(call_id)}
    assert twiml.find("./Hangup") is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, '"to" is required'),
        ({"verification": 1}, '"to" is required'),
        ({"to": CUSTOMER}, '"verification" is required'),
        ({"to": "4155550100", "verification": 1}, '"to" must be a valid E.164 phone number'),
        ({"to": "+0155550100", "verification": 1}, '"to" must be a valid E.164 phone number'),
        ({"to": 14155550100, "verification": 1}, '"to" must be a string'),
        ({"to": CUSTOMER, "verification": "abc"}, '"verification" must be a number'),
        ({"to": CUSTOMER, "verification": True}, '"verification" must be a number'),
        ({"to": CUSTOMER, "verification": None}, '"verification" must be a number'),
        ({"to": CUSTOMER, "verification": 1.5}, '"verification" must be an integer'),
        ({"to": CUSTOMER, "verification": 1, "from": "+1"}, '"from" is not allowed'),
    ],
)
async def test_call_customer_validation_speaks_like_the_seed(
    highway: Highway, body: dict, message: str
) -> None:
    response = await highway.client.post("/call-customer", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == message
    assert highway.twilio.requests == []  # Twilio was never asked


async def test_a_numeric_string_verification_is_accepted_like_joi(highway: Highway) -> None:
    verification = await highway.create_verification()
    response = await highway.client.post(
        "/call-customer", json={"to": CUSTOMER, "verification": str(verification["id"])}
    )
    assert response.status_code == 200, response.text


async def test_an_unknown_verification_is_404_and_calls_no_one(highway: Highway) -> None:
    response = await highway.client.post(
        "/call-customer", json={"to": CUSTOMER, "verification": 98765}
    )
    assert response.status_code == 404
    assert response.json() == {"error": "Verification 98765 not found"}
    assert highway.twilio.requests == []
    assert (await highway.client.get("/calls")).json() == {"calls": []}


async def test_a_twilio_refusal_is_500_and_the_call_is_kept_as_failed(highway: Highway) -> None:
    verification = await highway.create_verification()
    highway.twilio.reject_number("+15005550001")
    response = await highway.client.post(
        "/call-customer", json={"to": "+15005550001", "verification": verification["id"]}
    )
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == (
        "Failed to initiate call: The 'To' number +15005550001 is not a valid phone number."
    )
    call = await highway.call(body["callId"])
    assert call["status"] == "failed" and call["callSid"] is None
    assert call["error"] == "The 'To' number +15005550001 is not a valid phone number."
    assert call["endReason"] == "twilio_refused" and call["endedAt"] is not None
    assert [e["data"]["status"] for e in call["events"]] == ["in_progress", "failed"]


async def test_any_twilio_error_message_is_passed_on(highway: Highway) -> None:
    verification = await highway.create_verification()
    highway.twilio.fail_next_create(429, 20429, "Too Many Requests")
    response = await highway.client.post(
        "/call-customer", json={"to": CUSTOMER, "verification": verification["id"]}
    )
    assert response.status_code == 500
    assert response.json()["error"] == "Failed to initiate call: Too Many Requests"


async def test_an_unreachable_twilio_is_500_and_the_call_is_kept(
    clean_env: Path, database_url: str, twilio: TwilioRestStandIn
) -> None:
    settings = api_settings(database_url, "http://127.0.0.1:9")  # nothing listens there
    async with running_highway(settings, twilio) as highway:
        verification = await highway.create_verification()
        response = await highway.client.post(
            "/call-customer", json={"to": CUSTOMER, "verification": verification["id"]}
        )
        assert response.status_code == 500
        assert response.json()["error"].startswith("Failed to initiate call: cannot reach Twilio")
        call = await highway.call(response.json()["callId"])
        assert call["status"] == "failed"


async def test_without_twilio_credentials_calls_are_503(
    clean_env: Path, database_url: str, twilio: TwilioRestStandIn
) -> None:
    settings = api_settings(database_url, "http://127.0.0.1:9", TWILIO_ACCOUNT_SID="")
    async with running_highway(settings, twilio) as highway:
        verification = await highway.create_verification()
        response = await highway.client.post(
            "/call-customer", json={"to": CUSTOMER, "verification": verification["id"]}
        )
        assert response.status_code == 503
        assert response.json()["error"].startswith("Twilio is not configured")
        assert (await highway.client.get("/calls")).json() == {"calls": []}


async def test_calls_are_listed_newest_first_and_filtered(highway: Highway) -> None:
    ada = await highway.create_verification()
    other = await highway.create_verification(customerName="Charles Babbage")
    first = await highway.place_call(ada["id"])
    second = await highway.place_call(other["id"])

    listed = (await highway.client.get("/calls")).json()["calls"]
    assert [c["id"] for c in listed] == [second["callId"], first["callId"]]
    assert all("events" not in c or c["events"] is None for c in listed)

    by_verification = await highway.client.get("/calls", params={"verification": ada["id"]})
    assert [c["id"] for c in by_verification.json()["calls"]] == [first["callId"]]
    by_status = await highway.client.get("/calls", params={"status": "queued"})
    assert len(by_status.json()["calls"]) == 2
    none = await highway.client.get("/calls", params={"status": "completed"})
    assert none.json() == {"calls": []}


async def test_an_unknown_call_is_404(highway: Highway) -> None:
    response = await highway.client.get("/calls/4242")
    assert response.status_code == 404
    assert response.json() == {"error": "Call 4242 not found"}
