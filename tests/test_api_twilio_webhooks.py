"""Twilio's webhooks: signed status, recording and incoming-call callbacks."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest
from twilio.request_validator import RequestValidator

from highway.testing.twilio_rest import TwilioRestStandIn
from tests.api_support import AUTH_TOKEN, CUSTOMER, HIGHWAY_NUMBER, PUBLIC_URL, Highway
from tests.conftest import api_settings, running_highway

UNKNOWN_SID = "CA" + "f" * 32


async def _placed_call(highway: Highway) -> tuple[int, str]:
    verification = await highway.create_verification()
    placed = await highway.place_call(verification["id"])
    return placed["callId"], placed["callSid"]


async def _status(highway: Highway, sid: str, status: str, **kw: object) -> httpx.Response:
    return await highway.twilio.send_status_callback(sid, status, deliver_to=highway.url, **kw)


async def test_status_callbacks_are_recorded_in_order(highway: Highway) -> None:
    call_id, sid = await _placed_call(highway)
    for status in ["initiated", "ringing", "in-progress"]:
        assert (await _status(highway, sid, status)).status_code == 204
    during = await highway.call(call_id)
    verification = await highway.client.get(f"/verifications/{during['verificationId']}")
    assert during["status"] == "in-progress" and during["answeredAt"] is not None
    assert verification.json()["status"] == "in_progress"

    assert (await _status(highway, sid, "completed", duration=37)).status_code == 204
    call = await highway.call(call_id)
    assert (call["status"], call["durationSeconds"], call["endReason"]) == (
        "completed",
        37,
        "completed",
    )
    assert call["endedAt"] is not None
    statuses = [e["data"]["status"] for e in call["events"]]
    assert statuses == ["in_progress", "queued", "initiated", "ringing", "in-progress", "completed"]


async def test_status_is_monotonic_and_idempotent(highway: Highway) -> None:
    call_id, sid = await _placed_call(highway)
    await _status(highway, sid, "completed", duration=12)
    before = await highway.call(call_id)
    # A late ringing and a retried completed: both accepted, neither changes anything.
    assert (await _status(highway, sid, "ringing")).status_code == 204
    assert (await _status(highway, sid, "completed", duration=12)).status_code == 204
    after = await highway.call(call_id)
    assert after == before
    assert after["status"] == "completed"


async def test_a_forged_signature_is_403_and_writes_nothing(highway: Highway) -> None:
    call_id, sid = await _placed_call(highway)
    before = await highway.call(call_id)
    form = {"CallSid": sid, "CallStatus": "completed", "CallDuration": "5"}
    url = f"{highway.url}/twilio/status?callId={call_id}"
    async with httpx.AsyncClient(trust_env=False) as client:
        forged = await client.post(url, data=form, headers={"X-Twilio-Signature": "Zm9yZ2Vk"})
        missing = await client.post(url, data=form)
    for response in (forged, missing):
        assert response.status_code == 403
        assert response.json() == {"error": "Invalid or missing Twilio signature"}
    assert await highway.call(call_id) == before


async def _post_with_signature(
    highway: Highway, path: str, form: dict[str, str], signature: str
) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await client.post(
            highway.url + path, data=form, headers={"X-Twilio-Signature": signature}
        )


@pytest.mark.parametrize(
    ("token", "signed_path", "signed_form"),
    [
        ("another-token", "/twilio/status?callId={id}", None),  # another account's token
        (AUTH_TOKEN, "/twilio/recording?callId={id}", None),  # signed for another webhook
        (AUTH_TOKEN, "/twilio/status?callId=999", None),  # another query string
        (AUTH_TOKEN, "/twilio/status?callId={id}", {"CallStatus": "ringing"}),  # other values
    ],
)
async def test_a_signature_for_anything_else_is_refused(
    highway: Highway, token: str, signed_path: str, signed_form: dict | None
) -> None:
    call_id, sid = await _placed_call(highway)
    form = {"CallSid": sid, "CallStatus": "completed"}
    signed_url = PUBLIC_URL + signed_path.format(id=call_id)
    signature = RequestValidator(token).compute_signature(signed_url, form | (signed_form or {}))
    response = await _post_with_signature(
        highway, f"/twilio/status?callId={call_id}", form, signature
    )
    assert response.status_code == 403
    assert (await highway.call(call_id))["status"] == "queued"


async def test_a_signature_over_the_public_url_is_accepted(highway: Highway) -> None:
    call_id, sid = await _placed_call(highway)
    form = {"CallSid": sid, "CallStatus": "ringing"}
    path = f"/twilio/status?callId={call_id}"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + path, form)
    response = await _post_with_signature(highway, path, form, signature)
    assert response.status_code == 204
    assert (await highway.call(call_id))["status"] == "ringing"


async def test_a_status_for_an_unknown_call_is_404(highway: Highway) -> None:
    response = await highway.twilio.post_signed(
        f"{PUBLIC_URL}/twilio/status",
        {"CallSid": UNKNOWN_SID, "CallStatus": "ringing"},
        deliver_to=highway.url,
    )
    assert response.status_code == 404
    assert response.json() == {"error": f"Call {UNKNOWN_SID} not found"}


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"CallStatus": "ringing"}, '"CallSid" is required'),
        ({"CallSid": "CA123", "CallStatus": "ringing"}, '"CallSid" has an invalid format'),
        ({"CallSid": UNKNOWN_SID}, '"CallStatus" is required'),
        ({"CallSid": UNKNOWN_SID, "CallStatus": "dancing"}, '"CallStatus" must be one of ['),
        (
            {"CallSid": UNKNOWN_SID, "CallStatus": "completed", "CallDuration": "-1"},
            '"CallDuration" must be greater than or equal to 0',
        ),
    ],
)
async def test_a_signed_but_malformed_status_is_400(
    highway: Highway, form: dict, message: str
) -> None:
    response = await highway.twilio.post_signed(
        f"{PUBLIC_URL}/twilio/status", form, deliver_to=highway.url
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)


async def test_a_status_finds_a_call_whose_sid_was_never_stored(highway: Highway) -> None:
    """The callback URL carries the call's id, so a call whose SID was lost is still found."""
    verification = await highway.create_verification()
    placed = await highway.place_call(verification["id"])
    new_sid = "CA" + "e" * 32
    # Simulate a record without a SID: a callback for a fresh call id with another SID.
    response = await highway.twilio.post_signed(
        f"{PUBLIC_URL}/twilio/status?callId={placed['callId']}",
        {"CallSid": new_sid, "CallStatus": "ringing"},
        deliver_to=highway.url,
    )
    # This call already has its SID, so another SID cannot claim it.
    assert response.status_code == 404


async def test_a_recording_url_is_stored(highway: Highway) -> None:
    call_id, sid = await _placed_call(highway)
    url = f"https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE{'1' * 32}"
    response = await highway.twilio.send_recording_callback(
        sid, deliver_to=highway.url, recording_url=url
    )
    assert response.status_code == 204
    assert (await highway.call(call_id))["recordingUrl"] == url


async def test_an_absent_recording_stores_nothing(highway: Highway) -> None:
    call_id, sid = await _placed_call(highway)
    response = await highway.twilio.send_recording_callback(
        sid, deliver_to=highway.url, status="absent"
    )
    assert response.status_code == 204
    assert (await highway.call(call_id))["recordingUrl"] is None


def _stream_of(twiml: str) -> tuple[str, dict[str, str]]:
    root = ElementTree.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    assert stream is not None
    parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), parameters


async def _incoming(highway: Highway, caller: str, sid: str = UNKNOWN_SID) -> httpx.Response:
    form = {
        "CallSid": sid,
        "AccountSid": highway.twilio.account_sid,
        "From": caller,
        "To": HIGHWAY_NUMBER,
        "CallStatus": "ringing",
        "Direction": "inbound",
    }
    return await highway.twilio.post_signed(
        f"{PUBLIC_URL}/twilio/incoming", form, deliver_to=highway.url
    )


async def test_an_incoming_call_streams_to_the_callers_pending_verification(
    highway: Highway,
) -> None:
    verification = await highway.create_verification()
    response = await _incoming(highway, CUSTOMER)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    url, parameters = _stream_of(response.text)
    call_id = int(parameters["callId"])
    assert url == f"wss://highway.example.test/media-stream/{verification['id']}/{call_id}"
    assert parameters["verificationId"] == str(verification["id"])
    call = await highway.call(call_id)
    assert (call["direction"], call["from"], call["status"], call["callSid"]) == (
        "inbound",
        CUSTOMER,
        "ringing",
        UNKNOWN_SID,
    )


async def test_an_unknown_caller_gets_the_default_agent(highway: Highway) -> None:
    response = await _incoming(highway, "+442071838750")
    url, parameters = _stream_of(response.text)
    assert url == f"wss://highway.example.test/media-stream/0/{parameters['callId']}"
    call = await highway.call(int(parameters["callId"]))
    assert call["verificationId"] is None


async def test_a_retried_incoming_webhook_reuses_the_call(highway: Highway) -> None:
    first = _stream_of((await _incoming(highway, CUSTOMER)).text)
    again = _stream_of((await _incoming(highway, CUSTOMER)).text)
    assert first == again
    assert len((await highway.client.get("/calls")).json()["calls"]) == 1


async def test_an_unsigned_incoming_call_is_403_and_recorded_nowhere(highway: Highway) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(
            f"{highway.url}/twilio/incoming",
            data={"CallSid": UNKNOWN_SID, "From": CUSTOMER, "To": HIGHWAY_NUMBER},
        )
    assert response.status_code == 403
    assert (await highway.client.get("/calls")).json() == {"calls": []}


async def test_without_an_auth_token_webhooks_are_not_checked(
    clean_env: Path, database_url: str, twilio: TwilioRestStandIn
) -> None:
    """No TWILIO_AUTH_TOKEN: Twilio is not in use, so there is no signature to check."""
    settings = api_settings(database_url, "http://127.0.0.1:9", TWILIO_AUTH_TOKEN="")
    async with (
        running_highway(settings, twilio) as highway,
        httpx.AsyncClient(trust_env=False) as client,
    ):
        response = await client.post(
            f"{highway.url}/twilio/incoming",
            data={"CallSid": UNKNOWN_SID, "From": CUSTOMER, "To": HIGHWAY_NUMBER},
        )
    assert response.status_code == 200
    assert "<Stream" in response.text
