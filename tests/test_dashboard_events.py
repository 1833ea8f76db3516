"""The live dashboard through the real server: its page and files, `WS /dashboard/events`
(the API key, the snapshot, every call's events as they happen, a feed that falls behind),
and `POST /dashboard/simulate-call` in offline mode. Calls run through the Twilio simulator
and the OpenAI stand-in; the database is real (SQLite, and PostgreSQL where the events
travel through LISTEN/NOTIFY)."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

from highway.app import create_app
from highway.dashboard import routes
from highway.dashboard.hub import DEFAULT_BUFFER, FeedInterrupted
from highway.services import EXTENSION_KEY, Services
from highway.simulate_call import CALLER_ID
from highway.store import CallDirection
from highway.telephony.twiml import stream_url
from highway.testing import offline_agent
from highway.testing.realtime_standin import Reply
from highway.testing.serving import serve_on_loopback
from highway.testing.twilio_media import open_simulated_call
from highway.testing.twilio_rest import TwilioRestStandIn
from tests.api_support import (
    ACCOUNT_SID,
    API_KEY,
    AUTH_TOKEN,
    CUSTOMER,
    PUBLIC_URL,
    VERIFICATION,
    Highway,
)
from tests.bridge_support import Bridge, PlacedCall, running_bridge
from tests.conftest import api_settings, running_highway
from tests.dashboard_support import (
    dashboard_socket,
    first_answer,
    open_dashboard,
    raw_get,
)
from tests.test_bridge import VERIFY_AND_HANG_UP

GREETING = Reply(text="Hello Ada, this is Highway.", audio_ms=600)
ANSWER = Reply(text="Thank you.", audio_ms=400)
STATIC = Path(routes.__file__).parent / "static"
REFUSED = (1008, "Missing or invalid API key")


@pytest.fixture
async def highway(clean_env: Path, twilio: TwilioRestStandIn) -> AsyncIterator[Highway]:
    """Highway on SQLite with an API key and no OpenAI key (so in offline mode)."""
    assert twilio.base_url is not None
    settings = api_settings(f"sqlite:///{clean_env / 'highway.db'}", twilio.base_url)
    async with running_highway(settings, twilio) as running:
        yield running


@pytest.fixture
async def bridge(clean_env: Path, twilio: TwilioRestStandIn) -> AsyncIterator[Bridge]:
    """Highway on SQLite with the OpenAI stand-in behind it."""
    url = f"sqlite:///{clean_env / 'highway.db'}"
    async with running_bridge(url, twilio, replies=[GREETING, ANSWER]) as running:
        yield running


def transcript_ids(record: dict[str, Any]) -> dict[tuple[str, str], int]:
    """The stored id of each of a call's transcript lines, by (kind, text)."""
    return {
        (event["kind"], event["data"]["text"]): event["id"]
        for event in record["events"]
        if event["kind"] in ("user", "assistant")
    }


# The page and its files


async def test_the_page_and_its_files_are_open_and_carry_the_content_security_policy(
    highway: Highway,
) -> None:
    """No key is needed for the page or its files (they hold no data); each carries the
    CSP that forbids inline script and anything from elsewhere; every file the page links
    is served."""
    index = (STATIC / "index.html").read_bytes()
    linked = re.findall(rb'(?:src|href)="(/dashboard/static/[^"]+)"', index)
    async with httpx.AsyncClient(base_url=highway.url, trust_env=False) as anonymous:
        page = await anonymous.get("/")
        files = [await anonymous.get(path.decode()) for path in linked]

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.content == index
    assert linked, "the page links its script and style sheet"
    for response in [page, *files]:
        assert response.status_code == 200, response.url
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "connect-src 'self' ws: wss:" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
    content_types = {"js": "text/javascript", "css": "text/css"}
    for path, response in zip(linked, files, strict=True):
        name = path.decode().rsplit("/", 1)[1]
        assert response.content == (STATIC / name).read_bytes()
        expected_type = content_types.get(name.rsplit(".", 1)[1])
        if expected_type is not None:
            assert response.headers["content-type"].startswith(expected_type), name


@pytest.mark.parametrize(
    "target",
    [
        "/dashboard/static/../routes.py",
        "/dashboard/static/../../config.py",
        "/dashboard/static/%2e%2e/routes.py",
        "/dashboard/static/..%2froutes.py",
        "/dashboard/static/%2E%2E%2F%2E%2E%2Fconfig.py",
        "/dashboard/static//etc/passwd",
        "/dashboard/static/%2Fetc%2Fpasswd",
        "/dashboard/static/../../../../../../../../etc/passwd",
        "/dashboard/static/no-such-file.js",
    ],
)
async def test_no_path_reaches_outside_the_static_directory(highway: Highway, target: str) -> None:
    """Sent byte for byte (no client resolving `..` first): a path that climbs out of the
    static directory, however encoded, or names nothing, is a 404."""
    assert (STATIC.parent / "routes.py").exists()  # what the first targets aim at
    status, location = await raw_get(highway.url, target)
    while status == 308 and location is not None:  # `//` is merged: followed, it stays in
        assert location.startswith(f"{highway.url}/dashboard/static/"), location
        status, location = await raw_get(highway.url, location.removeprefix(highway.url))
    assert status == 404


# The API key


@pytest.mark.parametrize("by_header", [True, False], ids=["header", "first message"])
async def test_the_key_by_header_or_first_message_opens_the_feed(
    highway: Highway, by_header: bool
) -> None:
    """Either way of giving the key is answered with the snapshot, then live events."""
    async with open_dashboard(highway.url, by_header=by_header) as dashboard:
        verification = await highway.create_verification()
        placed = await highway.place_call(verification["id"])
        created = await dashboard.wait_for("callUpdated", placed["callId"])

    assert dashboard.snapshot == {
        "type": "snapshot",
        "worker": os.getpid(),
        "offline": True,  # no OPENAI_API_KEY
        "maxConcurrentCalls": 200,
        "calls": [],
    }
    assert created["call"]["status"] == "queued"
    assert created["call"]["callSid"] == placed["callSid"]


@pytest.mark.parametrize(
    ("authorization", "first_message"),
    [
        ("Bearer not-the-key", None),
        ("Bearer", None),
        (API_KEY, None),  # the REST API wants `Bearer `, and so does the feed
        (f"Basic {API_KEY}", None),
        (None, {"type": "auth", "apiKey": "not-the-key"}),
        (None, {"type": "auth", "apiKey": ""}),
        (None, {"type": "auth", "apiKey": API_KEY[:-1]}),
        (None, {"type": "auth"}),
        (None, {"type": "auth", "apiKey": 12345}),
        (None, {"type": "hello", "apiKey": API_KEY}),  # not an auth message
        (None, [{"type": "auth", "apiKey": API_KEY}]),
        (None, "not JSON at all"),
        (None, API_KEY),  # the bare key is not the auth message
        (None, b"\x00\xff binary"),
    ],
    ids=[
        "wrong header",
        "empty header",
        "header without Bearer",
        "header of another scheme",
        "wrong key",
        "empty key",
        "key cut short",
        "no key",
        "key not a string",
        "other type",
        "JSON list",
        "not JSON",
        "bare key",
        "binary",
    ],
)
async def test_a_wrong_or_missing_key_is_closed_with_1008_and_nothing_sent(
    highway: Highway, authorization: str | None, first_message: object
) -> None:
    """Nothing but the right key opens the feed: the server closes with 1008 and the reason,
    before any snapshot."""
    async with dashboard_socket(highway.url, authorization=authorization) as ws:
        if isinstance(first_message, str | bytes):
            await ws.send_message(first_message)
        elif first_message is not None:
            await ws.send_message(orjson.dumps(first_message).decode())
        answer = await first_answer(ws)
    assert answer == REFUSED


async def test_a_client_that_never_sends_the_key_is_closed_after_the_time_allowed(
    highway: Highway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socket that says nothing is not left open: 1008 once the time for the key is up."""
    monkeypatch.setattr(routes, "AUTH_TIMEOUT_SECONDS", 0.3)
    async with dashboard_socket(highway.url) as ws:
        answer = await first_answer(ws)
    assert answer == REFUSED


@pytest.fixture
async def keyless_highway(clean_env: Path, twilio: TwilioRestStandIn) -> AsyncIterator[Highway]:
    """Highway on SQLite with no HIGHWAY_API_KEY (as on a developer's machine)."""
    assert twilio.base_url is not None
    with_key = api_settings(f"sqlite:///{clean_env / 'highway.db'}", twilio.base_url)
    settings = with_key.model_copy(update={"api_key": None})
    async with running_highway(settings, twilio) as highway:
        yield highway


async def test_without_a_configured_key_the_feed_needs_none(keyless_highway: Highway) -> None:
    """No HIGHWAY_API_KEY: the snapshot comes at once, unasked; the page's auth message
    (an empty key) is then simply ignored, and live events follow."""
    async with (
        httpx.AsyncClient(base_url=keyless_highway.url, trust_env=False) as anonymous,
        dashboard_socket(keyless_highway.url) as ws,
    ):
        snapshot = await first_answer(ws)  # nothing sent
        await ws.send_message(orjson.dumps({"type": "auth", "apiKey": ""}).decode())
        created = await anonymous.post("/verifications", json=VERIFICATION)
        placed = await anonymous.post(
            "/call-customer", json={"to": CUSTOMER, "verification": created.json()["id"]}
        )
        event = await first_answer(ws)
    assert isinstance(snapshot, dict) and snapshot["type"] == "snapshot"
    assert placed.status_code == 200, placed.text
    assert isinstance(event, dict)
    assert (event["type"], event["callId"]) == ("callUpdated", placed.json()["callId"])


async def test_pages_of_other_sites_are_refused_even_without_a_configured_key(
    keyless_highway: Highway,
) -> None:
    """With no key, any web page could otherwise read the calls of a Highway on the same
    machine, or start simulated calls: a browser's Origin from another site is refused. The
    page's own origin, and clients that send none, are not."""
    async with (
        httpx.AsyncClient(base_url=keyless_highway.url, trust_env=False) as anonymous,
    ):
        async with dashboard_socket(keyless_highway.url, origin="https://evil.example") as ws:
            refused = await first_answer(ws)
        own_origin = keyless_highway.url  # http://127.0.0.1:port: what the page itself sends
        async with dashboard_socket(keyless_highway.url, origin=own_origin) as ws:
            welcomed = await first_answer(ws)
        simulated = await anonymous.post(
            "/dashboard/simulate-call", headers={"Origin": "https://evil.example"}
        )
        calls = (await anonymous.get("/calls")).json()["calls"]
    assert refused == (1008, "Cross-site request refused")
    assert isinstance(welcomed, dict) and welcomed["type"] == "snapshot"
    assert simulated.status_code == 403
    assert simulated.json() == {"error": "Cross-site request refused"}
    assert calls == []


# The snapshot


async def test_a_dashboard_opened_mid_call_first_gets_the_call_with_its_transcript_so_far(
    clean_env: Path, database_url: str, twilio: TwilioRestStandIn
) -> None:
    """The snapshot lists the latest calls, newest first: a live call with its history so
    far (ids as in GET /calls/{id}), a finished one without. Live events then carry only
    what came after, with event ids that are the stored ones."""
    replies = [GREETING, GREETING, ANSWER]  # one call greeted, then one greeted and answered
    async with running_bridge(database_url, twilio, replies=replies) as bridge:
        finished = await bridge.place_call()
        async with bridge.dial(finished) as caller:
            with trio.fail_after(5):
                await caller.wait_played(600)
            await caller.hang_up()
        await bridge.ended_call(finished.call_id)

        live = await bridge.place_call()
        async with bridge.dial(live) as caller:
            with trio.fail_after(5):
                await caller.wait_played(600)
                await bridge.events.wait_for("clientConnected", live.call_id)
                await bridge.events.wait_for("ava_response", live.call_id)
            async with open_dashboard(bridge.highway.url) as dashboard:
                during = await bridge.call_record(live.call_id)
                caller.say_speech(600)
                with trio.fail_after(5):
                    await caller.wait_received(1000)
                await dashboard.wait_for("ava_response", live.call_id)
                await caller.hang_up()
                await dashboard.wait_for("clientDisconnected", live.call_id)
        after = await bridge.call_record(live.call_id)
        finished_record = await bridge.call_record(finished.call_id)

    snapshot = dashboard.snapshot
    assert snapshot["offline"] is False and snapshot["worker"] == os.getpid()
    assert [call["id"] for call in snapshot["calls"]] == [live.call_id, finished.call_id]
    shown_live, shown_finished = snapshot["calls"]
    # The live call as GET /calls/{id} showed it then, history included.
    assert shown_live == during
    assert shown_live["status"] == "in-progress" and shown_live["streamSid"] == caller.stream_sid
    assert [(e["kind"], e["data"].get("text")) for e in shown_live["events"]][-1] == (
        "assistant",
        GREETING.text,
    )
    # The finished call without its history (fetched when the user selects it).
    assert shown_finished["events"] is None
    assert shown_finished == finished_record | {"events": None}
    # Live: only what came after the snapshot, each with its stored id.
    ids = transcript_ids(after)
    lines = [e for e in dashboard.of_call(live.call_id) if "eventId" in e]
    assert [(e["type"], e["text"]) for e in lines] == [
        ("user_transcript", "(speech)"),
        ("ava_response", ANSWER.text),
    ]
    assert [e["eventId"] for e in lines] == [
        ids["user", "(speech)"],
        ids["assistant", ANSWER.text],
    ]
    shown_ids = {e["id"] for e in shown_live["events"]}
    assert ids["assistant", GREETING.text] in shown_ids
    assert not shown_ids & {e["eventId"] for e in lines}


async def test_the_snapshot_holds_the_latest_50_calls_newest_first(bridge: Bridge) -> None:
    """Fifty calls at most, newest first; none of them live, so none with a history."""
    verification = await bridge.highway.create_verification()
    for _ in range(routes.SNAPSHOT_CALLS + 2):
        await bridge.store.create_call(
            verification_id=verification["id"],
            direction=CallDirection.OUTBOUND,
            from_number="+15005550006",
            to_number="+14155550100",
        )
    listed = (await bridge.highway.client.get("/calls", params={"limit": 100})).json()["calls"]
    async with open_dashboard(bridge.highway.url) as dashboard:
        pass
    calls = dashboard.snapshot["calls"]
    assert len(listed) == routes.SNAPSHOT_CALLS + 2
    assert calls == listed[: routes.SNAPSHOT_CALLS]  # GET /calls' shape, events null
    assert [c["id"] for c in calls] == sorted((c["id"] for c in calls), reverse=True)


# Live events


async def test_a_whole_call_reaches_the_dashboard_in_order(
    clean_env: Path, database_url: str, twilio: TwilioRestStandIn
) -> None:
    """From its creation to its end, every event of a call, in the order it happened, each
    once, each with Highway's call id, the worker and the time; transcript lines carry their
    stored ids, and the last `callUpdated` is the call as stored."""
    async with running_bridge(database_url, twilio, replies=[GREETING, ANSWER]) as bridge:
        async with open_dashboard(bridge.highway.url) as dashboard:
            call = await bridge.place_call()
            async with bridge.dial(call) as caller:
                with trio.fail_after(5):
                    await caller.wait_played(600)
                caller.say_speech(600)
                with trio.fail_after(5):
                    await caller.wait_received(1000)
                    await caller.wait_played(1000)
                await caller.hang_up()
            await dashboard.wait_for("clientDisconnected", call.call_id)
        record = await bridge.call_record(call.call_id)

    events = dashboard.events
    assert {e["callId"] for e in events} == {call.call_id}
    assert {e["worker"] for e in events} == {os.getpid()}
    for event in events:
        assert datetime.fromisoformat(event["at"]).tzinfo is not None
    detail = {
        "callUpdated": lambda e: e["call"]["status"],
        "clientConnected": lambda e: e["streamSid"],
        "callStatus": lambda e: e["status"],
        "ava_response": lambda e: e["text"],
        "user_transcript": lambda e: e["text"],
        "clientDisconnected": lambda e: e["reason"],
    }
    shown = [(e["type"], detail[e["type"]](e)) for e in events]
    greeting = ("ava_response", GREETING.text)
    # The stream's start is published at once, then stored while the agent greets: the
    # greeting may come before the stored call's update or after it.
    assert shown.index(("callStatus", "active")) < shown.index(greeting)
    assert shown.index(greeting) < shown.index(("user_transcript", "(speech)"))
    shown.remove(greeting)
    assert shown == [
        ("callUpdated", "queued"),
        ("clientConnected", caller.stream_sid),
        ("callStatus", "active"),
        ("callUpdated", "in-progress"),
        ("user_transcript", "(speech)"),
        ("ava_response", ANSWER.text),
        ("callUpdated", "completed"),
        ("callStatus", "inactive"),
        ("clientDisconnected", "caller_hung_up"),
    ]
    ids = transcript_ids(record)
    lines = [e for e in events if e["type"] in ("ava_response", "user_transcript")]
    kinds = {"ava_response": "assistant", "user_transcript": "user"}
    assert [e["eventId"] for e in lines] == [ids[kinds[e["type"]], e["text"]] for e in lines]
    assert events[-3]["call"] == {k: v for k, v in record.items() if k not in ("events", "outcome")}
    assert dashboard.of("clientConnected", call.call_id)[0]["text"] == "Client connected"
    assert events[-1]["text"] == "Client disconnected"


async def test_tool_calls_keep_their_own_id_apart_from_highways_call_id(
    clean_env: Path, twilio: TwilioRestStandIn
) -> None:
    """A `toolCall` says which call it belongs to in `callId` (Highway's call) and the
    model's id for the tool call in `toolCallId`, as stored (where that is `callId` inside
    the event's data); the verification's outcome follows `finish_verification`."""
    url = f"sqlite:///{clean_env / 'highway.db'}"
    async with running_bridge(url, twilio, replies=VERIFY_AND_HANG_UP) as bridge:
        async with open_dashboard(bridge.highway.url, by_header=True) as dashboard:
            call = await bridge.place_call()
            await bridge.verify_and_hang_up(call)
            await dashboard.wait_for("clientDisconnected", call.call_id)
        record = await bridge.call_record(call.call_id)

    stored = [e for e in record["events"] if e["kind"] == "tool"]
    shown = dashboard.of("toolCall", call.call_id)
    assert [e["name"] for e in shown] == [
        "confirm_field",
        "confirm_field",
        "finish_verification",
        "end_call",
    ]
    assert len(shown) == len(stored)
    for event, row in zip(shown, stored, strict=True):
        assert event["callId"] == call.call_id
        assert event["eventId"] == row["id"]
        assert event["toolCallId"] == row["data"]["callId"]
        assert event["toolCallId"] != call.call_id and event["toolCallId"].startswith("call_")
        assert (event["name"], event["arguments"], event["result"]) == (
            row["data"]["name"],
            row["data"]["arguments"],
            row["data"]["result"],
        )
    types = [e["type"] for e in dashboard.of_call(call.call_id)]
    finish = shown[2]
    assert types[dashboard.of_call(call.call_id).index(finish) + 1] == "outcome"
    assert dashboard.of("outcome", call.call_id) == [
        {
            "type": "outcome",
            "callId": call.call_id,
            "at": dashboard.of("outcome", call.call_id)[0]["at"],
            "worker": os.getpid(),
            "outcome": "verified",
        }
    ]
    assert record["outcome"] == "verified"


# Falling behind


@pytest.fixture
async def served(clean_env: Path, twilio: TwilioRestStandIn) -> AsyncIterator[tuple[str, Services]]:
    """Highway on SQLite (its hub hands events straight to subscribers), and its services."""
    assert twilio.base_url is not None
    app = create_app(api_settings(f"sqlite:///{clean_env / 'highway.db'}", twilio.base_url))
    async with serve_on_loopback(app) as url:
        yield url, app.extensions[EXTENSION_KEY]


async def test_a_dashboard_that_falls_behind_gets_what_was_buffered_then_1013(
    served: tuple[str, Services],
) -> None:
    """More events at once than a feed may hold: the dashboard gets those it held, in
    order, none after the gap, then 1013 so that it reconnects; and reconnecting works."""
    url, services = served
    published = 2 * DEFAULT_BUFFER
    async with open_dashboard(url) as dashboard:
        # No checkpoint in between: the feed cannot send any of these before the next.
        for number in range(published):
            services.hub.publish("ava_response", 1, eventId=number, text=f"line {number}")
        code, reason = await dashboard.wait_closed()
    assert (code, reason) == (1013, "Events were missed; reconnect")
    received = [event["eventId"] for event in dashboard.events]
    # The buffer's worth (and one more if the feed was already waiting for it).
    assert DEFAULT_BUFFER <= len(received) <= DEFAULT_BUFFER + 1
    assert received == list(range(len(received)))
    async with open_dashboard(url) as again:
        services.hub.publish("ava_response", 1, eventId=published, text="after")
        await again.wait_for("ava_response", 1)
    assert again.snapshot["type"] == "snapshot"


async def test_a_slow_subscriber_is_cut_off_without_holding_up_a_dashboard(
    bridge: Bridge,
) -> None:
    """A subscriber that reads nothing is dropped once its buffer is full: it gets what it
    held, then FeedInterrupted; a dashboard beside it sees the whole call."""
    async with (
        bridge.services.hub.subscribe(buffer=2) as slow,
        open_dashboard(bridge.highway.url) as dashboard,
    ):
        call = await bridge.place_call()
        async with bridge.dial(call) as caller:
            with trio.fail_after(5):
                await caller.wait_played(600)
            await caller.hang_up()
        await dashboard.wait_for("clientDisconnected", call.call_id)
        held: list[dict[str, Any]] = []
        with pytest.raises(FeedInterrupted, match="fell behind"):
            with trio.fail_after(5):
                async for event in slow:
                    held.append(event)
    assert held == dashboard.events[:2]
    assert len(dashboard.events) > 2
    assert dashboard.events[-1]["type"] == "clientDisconnected"


# Simulated calls (offline mode)


SIMULATED_CALL_SECONDS = 60


async def test_a_simulated_call_runs_end_to_end_and_shows_on_the_dashboard(
    highway: Highway,
) -> None:
    """Offline mode: the button rings Highway from the Twilio simulator; the built-in agent
    greets and answers two turns; the caller hangs up; dashboards see it all, and the call
    and its transcript are stored like any other."""
    async with open_dashboard(highway.url) as dashboard:
        response = await highway.client.post("/dashboard/simulate-call")
        assert response.status_code == 202, response.text
        call_id = response.json()["callId"]
        at_start = await highway.call(call_id)
        with trio.fail_after(SIMULATED_CALL_SECONDS):
            while not dashboard.of("clientDisconnected", call_id):
                await dashboard.wait_for_count(len(dashboard.events) + 1)
        record = await highway.call(call_id)
        verifications = (await highway.client.get("/verifications")).json()["verifications"]

    assert dashboard.snapshot["offline"] is True
    assert response.json() == {"message": "Simulated call started", "callId": call_id}
    assert at_start["endedAt"] is None  # the request returned as the call began
    assert (record["direction"], record["from"]) == ("inbound", CALLER_ID)
    assert (record["status"], record["endReason"]) == ("completed", "caller_hung_up")
    said = [(e["kind"], e["data"]["text"]) for e in record["events"] if "text" in e["data"]]
    assert said[0] == ("assistant", offline_agent.GREETING.text)
    assert [kind for kind, _ in said[1:]] == ["user", "assistant", "user", "assistant"]
    assert said[2][1] == said[4][1] == offline_agent.ANSWER.text
    # For the demo customer's verification, made for it.
    demo = [v for v in verifications if v["id"] == record["verificationId"]]
    assert demo and demo[0]["phone"] == CALLER_ID
    # Seen live, with its stored ids.
    types = [e["type"] for e in dashboard.of_call(call_id)]
    for expected in ("clientConnected", "ava_response", "user_transcript", "clientDisconnected"):
        assert expected in types
    shown = {e["eventId"] for e in dashboard.of_call(call_id) if "eventId" in e}
    assert shown == {e["id"] for e in record["events"] if e["kind"] in ("user", "assistant")}


async def test_a_simulated_call_is_refused_with_409_unless_offline(
    clean_env: Path, twilio: TwilioRestStandIn
) -> None:
    """With an OpenAI key configured, the button would cost real calls: 409, nothing made."""
    assert twilio.base_url is not None
    settings = api_settings(
        f"sqlite:///{clean_env / 'highway.db'}", twilio.base_url, OPENAI_API_KEY="sk-not-used"
    )
    async with running_highway(settings, twilio) as highway:
        response = await highway.client.post("/dashboard/simulate-call")
        calls = (await highway.client.get("/calls")).json()["calls"]
        verifications = (await highway.client.get("/verifications")).json()["verifications"]
    assert response.status_code == 409
    assert response.json() == {
        "error": "Simulated calls run in offline mode only (no OPENAI_API_KEY)"
    }
    assert calls == [] and verifications == []


@pytest.mark.parametrize("key", [None, "not-the-key"], ids=["no key", "wrong key"])
async def test_a_simulated_call_needs_the_api_key(highway: Highway, key: str | None) -> None:
    """Like the REST API: 401 without the right key, and no call is made."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=highway.url, trust_env=False) as anonymous:
        response = await anonymous.post("/dashboard/simulate-call", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "Missing or invalid API key"}
    assert (await highway.client.get("/calls")).json()["calls"] == []


async def test_a_simulated_call_at_capacity_is_refused_with_503(
    clean_env: Path, twilio: TwilioRestStandIn
) -> None:
    """Offline mode with the one place taken by a live call: the button is refused like
    POST /call-customer (503, Retry-After), and no call is rung or recorded for it."""
    assert twilio.base_url is not None
    settings = api_settings(
        f"sqlite:///{clean_env / 'highway.db'}", twilio.base_url, HIGHWAY_MAX_CONCURRENT_CALLS="1"
    )
    async with running_highway(settings, twilio) as highway:
        verification = await highway.create_verification()
        placed = await highway.place_call(verification["id"])
        live = PlacedCall(verification["id"], placed["callId"], placed["callSid"])
        async with open_simulated_call(
            highway.url.replace("http://", "ws://") + live.path,
            auth_token=AUTH_TOKEN,
            signed_url=stream_url(PUBLIC_URL, live.verification_id, live.call_id),
            call_sid=live.call_sid,
            account_sid=ACCOUNT_SID,
        ) as caller:
            with trio.fail_after(10):
                await caller.wait_received(100)  # the offline agent is greeting: streaming
            response = await highway.client.post("/dashboard/simulate-call")
            calls = (await highway.client.get("/calls")).json()["calls"]
            await caller.hang_up()
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "10"
    assert response.json() == {
        "error": "Highway is at capacity (1 concurrent calls); try again later"
    }
    assert [call["id"] for call in calls] == [live.call_id]
