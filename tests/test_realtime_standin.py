"""The OpenAI Realtime stand-in, driven by real WebSocket clients over 127.0.0.1."""

from __future__ import annotations

import base64
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import trio
import trio_websocket
from openai.types.realtime import RealtimeServerEvent
from trio_websocket import ConnectionClosed
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from highway.testing.realtime_standin import (
    EXPIRED_MESSAGE,
    EventSchema,
    InvalidEvent,
    RealtimeStandIn,
    Reply,
    StandInSession,
    ToolCall,
    validate_client_event,
)
from highway.testing.speech import silence_ulaw, speech_pcm16, speech_ulaw

SERVER_EVENTS = EventSchema(RealtimeServerEvent)
PCMU = {"type": "audio/pcmu"}
PCM = {"type": "audio/pcm", "rate": 24000}
TIMEOUT = 2.0


class Client:
    """A Realtime client that checks every server event: SDK-valid, no extras, unique id."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.created: dict[str, Any] = {}
        self._event_ids: set[str] = set()

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send_message(orjson.dumps(event).decode())

    async def append(self, audio: bytes) -> None:
        audio_b64 = base64.b64encode(audio).decode()
        await self.send({"type": "input_audio_buffer.append", "audio": audio_b64})

    async def update_session(self, **session: Any) -> dict[str, Any]:
        await self.send({"type": "session.update", "session": {"type": "realtime", **session}})
        return (await self.next("session.updated"))["session"]

    async def receive(self) -> dict[str, Any]:
        with trio.fail_after(TIMEOUT):
            event = orjson.loads(await self.ws.get_message())
        SERVER_EVENTS.validate(event)
        assert event["event_id"] not in self._event_ids
        self._event_ids.add(event["event_id"])
        return event

    async def until(self, type: str) -> list[dict[str, Any]]:
        """Every event up to and including the next one of `type`."""
        events = [await self.receive()]
        while events[-1]["type"] != type:
            events.append(await self.receive())
        return events

    async def next(self, type: str) -> dict[str, Any]:
        return (await self.until(type))[-1]


@asynccontextmanager
async def connect(
    nursery: trio.Nursery,
    standin: RealtimeStandIn,
    *,
    model: str = "gpt-realtime",
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Client]:
    """A trio-websocket client on a TCP stream of our own, to close: trio-websocket leaves its
    socket open when the server closes first."""
    parts = urlsplit(standin.url)
    assert parts.hostname is not None and parts.port is not None
    extra = [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    async with await trio.open_tcp_stream(parts.hostname, parts.port) as stream:
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, parts.netloc, f"{parts.path}?model={model}", extra_headers=extra
        )
        try:
            client = Client(ws)
            client.created = await client.receive()
            assert client.created["type"] == "session.created"
            yield client
        finally:
            with trio.move_on_after(TIMEOUT):
                await ws.aclose()


class RawClient:
    """A bare wsproto client, for what trio-websocket's cannot do: ping after the server's
    Close, vanish without a Close, and be refused without leaking its socket (trio-websocket
    0.12 leaves it open)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._ws = WSConnection(ConnectionType.CLIENT)
        self._events: deque[Event] = deque()

    @classmethod
    async def open(cls, url: str, headers: dict[str, str] | None = None) -> RawClient:
        """Connected, the handshake request sent."""
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        client = cls(await trio.open_tcp_stream(parts.hostname, parts.port))
        extra = [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
        await client.send(Request(host=parts.netloc, target=parts.path, extra_headers=extra))
        return client

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self._ws.send(event))

    async def event(self) -> Event:
        with trio.fail_after(TIMEOUT):
            while not self._events:
                data = await self.stream.receive_some()
                self._ws.receive_data(data or None)
                self._events.extend(self._ws.events())
        return self._events.popleft()


async def refusal(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of a refused handshake."""
    client = await RawClient.open(url, headers)
    async with client.stream:
        reply = await client.event()
        assert isinstance(reply, RejectConnection), reply
        body = b""
        while not body.endswith(b"}"):
            data = await client.event()
            assert isinstance(data, RejectData)
            body += data.data
    return reply.status_code, orjson.loads(body)


async def accepted(url: str) -> RawClient:
    client = await RawClient.open(url)
    assert isinstance(await client.event(), AcceptConnection)
    return client


def frames(audio: bytes, size: int) -> list[bytes]:
    return [audio[start : start + size] for start in range(0, len(audio), size)]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with suppress(FileNotFoundError):  # the listing's own fd, gone once listed
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


async def closed(session: StandInSession) -> StandInSession:
    with trio.fail_after(TIMEOUT):
        await session.closed.wait()
    return session


async def test_session_starts_with_session_created_and_records_the_handshake(nursery):
    standin = RealtimeStandIn()
    await nursery.start(standin.serve)
    headers = {"OpenAI-Safety-Identifier": "caller-1"}
    async with connect(nursery, standin, model="gpt-realtime-mini", headers=headers) as client:
        session = client.created["session"]
        assert session["type"] == "realtime"
        assert session["model"] == "gpt-realtime-mini"
        assert session["audio"]["input"]["format"] == PCM
        assert session["audio"]["output"]["format"] == PCM
        assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        server = await standin.wait_for_session(0)
        assert server.model == "gpt-realtime-mini"
        assert server.headers["openai-safety-identifier"] == "caller-1"
    assert (await closed(server)).close_code == 1000
    assert server.closed_at is not None
    assert standin.connection_attempts == 1


async def test_session_update_merges_into_the_config(nursery):
    standin = RealtimeStandIn()
    await nursery.start(standin.serve)
    async with connect(nursery, standin) as client:
        await client.send(
            {
                "type": "session.update",
                "event_id": "evt_1",
                "session": {
                    "type": "realtime",
                    "instructions": "Be brief.",
                    "audio": {
                        "input": {
                            "format": PCMU,
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
                        },
                        "output": {"format": PCMU, "voice": "cedar"},
                    },
                },
            }
        )
        session = (await client.next("session.updated"))["session"]
        assert session["instructions"] == "Be brief."
        assert session["audio"]["input"]["format"] == PCMU  # audio/pcm's rate is gone
        turn_detection = session["audio"]["input"]["turn_detection"]
        assert turn_detection["silence_duration_ms"] == 300
        assert turn_detection["threshold"] == 0.5  # kept from the defaults
        assert session["audio"]["output"] == {"format": PCMU, "voice": "cedar", "speed": 1.0}
        server = await standin.wait_for_session(0)
        assert server.config == session
        assert (await server.wait_for_event("session.update"))["event_id"] == "evt_1"

        session = await client.update_session(audio={"input": {"turn_detection": None}})
        assert session["audio"]["input"]["turn_detection"] is None
        assert session["audio"]["input"]["format"] == PCMU
        assert (await server.wait_for_event("session.update", 2))["session"]["audio"]


@pytest.mark.parametrize(
    ("audio_format", "speech"),
    [(PCMU, speech_ulaw), (PCM, lambda ms: speech_pcm16(ms, 24000))],
    ids=["pcmu", "pcm"],
)
async def test_response_streams_the_scripted_reply(
    nursery, audio_format: dict[str, Any], speech: Callable[[int], bytes]
):
    text = "Hello there, how can I help?"
    standin = RealtimeStandIn([Reply(text, audio_ms=450)], delta_ms=100)
    await nursery.start(standin.serve)
    async with connect(nursery, standin) as client:
        await client.update_session(audio={"output": {"format": audio_format}})
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
    assert types(events) == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        *["response.output_audio.delta", "response.output_audio_transcript.delta"] * 5,
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    by_type = {event["type"]: event for event in events}
    audio = b"".join(
        base64.b64decode(event["delta"])
        for event in events
        if event["type"] == "response.output_audio.delta"
    )
    assert audio == speech(450)
    spoken = [e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"]
    assert "".join(spoken) == text
    assert by_type["response.output_audio_transcript.done"]["transcript"] == text
    response = by_type["response.done"]["response"]
    assert response["status"] == "completed"
    assert response["id"] == by_type["response.created"]["response"]["id"]
    [item] = response["output"]
    assert item["content"] == [{"type": "output_audio", "transcript": text}]
    assert item["id"] == by_type["response.output_audio.delta"]["item_id"]
    server = standin.sessions[0]
    assert server.items[item["id"]].audio_ms == 450
    assert server.responses[0].status == "completed"


async def test_first_reply_greets_every_session_then_the_default_answers(nursery):
    """Offline mode's agent greets every call, not only the server's first."""
    greeting, answer = Reply("Hello.", audio_ms=100), Reply("I heard you.", audio_ms=100)
    standin = RealtimeStandIn(first_reply=greeting, default_reply=answer)
    await nursery.start(standin.serve)
    said = []
    for _ in range(2):
        async with connect(nursery, standin) as client:
            for _ in range(2):
                await client.send({"type": "response.create"})
                done = await client.next("response.output_audio_transcript.done")
                said.append(done["transcript"])
                await client.next("response.done")
    assert said == ["Hello.", "I heard you.", "Hello.", "I heard you."]


async def test_tool_call_follows_the_audio_in_the_same_response(nursery):
    standin = RealtimeStandIn(
        [
            Reply("Goodbye.", audio_ms=100, tool_call=ToolCall("end_call", {"reason": "done"})),
            Reply(audio_ms=0, tool_call=ToolCall("lookup", {"id": 7})),
        ]
    )
    await nursery.start(standin.serve)
    async with connect(nursery, standin) as client:
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        assert types(events)[-7:] == [
            "response.output_item.added",
            "conversation.item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        call = events[-4]
        assert call["name"] == "end_call"
        assert orjson.loads(call["arguments"]) == {"reason": "done"}
        assert call["call_id"].startswith("call_")
        assert call["output_index"] == 1
        assert call["item_id"] == events[-7]["item"]["id"]
        message, function_call = events[-1]["response"]["output"]
        assert message["type"] == "message"
        assert function_call["type"] == "function_call"
        assert function_call["call_id"] == call["call_id"]
        assert function_call["arguments"] == call["arguments"]

        output = {"type": "function_call_output", "call_id": call["call_id"], "output": "{}"}
        await client.send({"type": "conversation.item.create", "item": output})
        added, done = await client.receive(), await client.receive()
        assert types([added, done]) == ["conversation.item.added", "conversation.item.done"]
        assert added["previous_item_id"] == call["item_id"]
        assert done["item"]["call_id"] == call["call_id"]

        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        assert "response.output_audio.delta" not in types(events)
        call = only(events, "response.function_call_arguments.done")
        assert (call["name"], call["output_index"]) == ("lookup", 0)


def only(events: list[dict[str, Any]], type: str) -> dict[str, Any]:
    [event] = [event for event in events if event["type"] == type]
    return event


@pytest.mark.parametrize(
    ("audio_format", "speech", "silence", "frame"),
    [
        (PCMU, speech_ulaw(500), silence_ulaw(600), 160),
        (PCM, speech_pcm16(500, 24000), bytes(600 * 48), 960),
    ],
    ids=["pcmu", "pcm"],
)
async def test_server_vad_commits_the_turn_and_responds(
    nursery, audio_format: dict[str, Any], speech: bytes, silence: bytes, frame: int
):
    standin = RealtimeStandIn([Reply("Sure.", audio_ms=200)], user_transcripts=["I need help"])
    await nursery.start(standin.serve)
    async with connect(nursery, standin) as client:
        await client.update_session(audio={"input": {"format": audio_format}})
        for chunk in frames(speech, frame) + frames(silence, frame):
            await client.append(chunk)
        events = await client.until("response.done")
    turn = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
    ]
    assert types(events)[: len(turn)] == turn
    started, stopped, committed, added, _, transcription, _ = events[: len(turn)]
    assert started["audio_start_ms"] <= 20  # the resampler delays PCM a little
    assert 480 <= stopped["audio_end_ms"] <= 520
    item_id = started["item_id"]
    assert stopped["item_id"] == committed["item_id"] == transcription["item_id"] == item_id
    assert added["item"]["role"] == "user"
    assert transcription["transcript"] == "I need help"
    assert events[-1]["response"]["status"] == "completed"
    assert standin.sessions[0].audio_received_ms == pytest.approx(1100)


async def test_speech_interrupts_the_active_response(nursery):
    standin = RealtimeStandIn([Reply("A long answer.", audio_ms=5000)], realtime_factor=1.0)
    await nursery.start(standin.serve)
    async with connect(nursery, standin) as client:
        await client.update_session(audio={"input": {"format": PCMU}})
        await client.send({"type": "response.create"})
        await client.next("response.output_audio.delta")
        for chunk in frames(speech_ulaw(100), 160):
            await client.append(chunk)
        events = await client.until("response.done")
    assert "input_audio_buffer.speech_started" in types(events)
    response = events[-1]["response"]
    assert response["status"] == "cancelled"
    assert response["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert response["output"][0]["status"] == "incomplete"
    assert types(events).count("response.output_audio.delta") < 10
    record = standin.sessions[0].responses[0]
    assert record.cancel_reason == "turn_detected"
    assert record.audio_ms < 1000


async def test_realtime_factor_paces_the_deltas(nursery):
    standin = RealtimeStandIn([Reply(audio_ms=400)], realtime_factor=2.0)
    await nursery.start(standin.serve)
    async with connect(nursery, standin) as client:
        await client.send({"type": "response.create"})
        created = trio.current_time()
        await client.next("response.done")
        # Four 100 ms deltas at twice real time: the last is due 150 ms after the start.
        assert trio.current_time() - created >= 0.15


async def test_truncate_within_and_beyond_the_generated_audio(nursery):
    standin = RealtimeStandIn([Reply(audio_ms=300)])
    await nursery.start(standin.serve)
    async with connect(nursery, standin) as client:
        await client.send({"type": "response.create"})
        [item] = (await client.next("response.done"))["response"]["output"]
        truncate = {"type": "conversation.item.truncate", "item_id": item["id"], "content_index": 0}

        await client.send({**truncate, "audio_end_ms": 200, "event_id": "evt_ok"})
        truncated = await client.receive()
        assert truncated["type"] == "conversation.item.truncated"
        assert (truncated["item_id"], truncated["audio_end_ms"]) == (item["id"], 200)

        await client.send({**truncate, "audio_end_ms": 301, "event_id": "evt_long"})
        error = (await client.receive())["error"]
        assert (error["code"], error["event_id"]) == ("invalid_value", "evt_long")
        assert "300ms" in error["message"]

        await client.send({**truncate, "item_id": "item_nope", "audio_end_ms": 0})
        error = (await client.receive())["error"]
        assert error["param"] == "item_id"
    [accepted] = standin.sessions[0].truncations
    assert accepted["event_id"] == "evt_ok"


INVALID_EVENTS = [
    (
        {
            "type": "session.update",
            "event_id": "evt_1",
            "session": {"type": "realtime", "audio": {"input": {"format": {**PCMU, "bogus": 1}}}},
        },
        "unknown_parameter",
        "session.audio.input.format.bogus",
    ),
    ({"type": "input_audio_buffer.append", "audio": "", "gain": 1}, "unknown_parameter", "gain"),
    ({"type": "response.make", "event_id": "evt_2"}, "invalid_value", "type"),
    (
        {
            "type": "conversation.item.truncate",
            "item_id": "x",
            "content_index": 0,
            "audio_end_ms": "",
        },
        "invalid_type",
        "audio_end_ms",
    ),
    (
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_txt"}]},
        },
        "invalid_value",
        "item.content[0].type",
    ),
    ({"type": "input_audio_buffer.append"}, "missing_required_parameter", "audio"),
]


async def test_invalid_events_get_an_error_and_the_session_goes_on(nursery):
    standin = RealtimeStandIn()
    await nursery.start(standin.serve)
    raws = [orjson.dumps(event).decode() for event, _, _ in INVALID_EVENTS] + ["{not json"]
    async with connect(nursery, standin) as client:
        for raw, (event, code, param) in zip(raws, INVALID_EVENTS, strict=False):
            await client.ws.send_message(raw)
            error = await client.receive()
            assert error["type"] == "error"
            assert error["error"]["type"] == "invalid_request_error"
            assert (error["error"]["code"], error["error"]["param"]) == (code, param)
            assert error["error"]["event_id"] == event.get("event_id")
        await client.ws.send_message(raws[-1])
        assert (await client.receive())["error"]["code"] == "invalid_json"
        session = await client.update_session(instructions="Still here.")
    assert session["audio"]["input"]["format"] == PCM  # the refused update changed nothing
    server = standin.sessions[0]
    assert [raw for raw, _ in server.invalid_events] == raws
    assert "Unknown parameter: 'session.audio.input.format.bogus'" in server.invalid_events[0][1]
    assert types(server.client_events) == ["session.update"]


def test_validate_client_event_checks_as_the_sessions_do():
    append = {"type": "input_audio_buffer.append", "audio": "AAAA"}
    assert validate_client_event(orjson.dumps(append).decode()) == append
    bogus = {"type": "response.create", "event_id": "evt_9", "response": {"bogus": True}}
    with pytest.raises(InvalidEvent) as invalid:
        validate_client_event(orjson.dumps(bogus).decode())
    assert (invalid.value.code, invalid.value.param) == ("unknown_parameter", "response.bogus")
    assert invalid.value.event_id == "evt_9"


async def test_an_api_key_is_required_when_set(nursery):
    standin = RealtimeStandIn(api_key="sk-test")
    await nursery.start(standin.serve)
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
        status, body = await refusal(standin.url, headers)
        assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    async with connect(nursery, standin, headers={"Authorization": "Bearer sk-test"}) as client:
        assert client.created["session"]["type"] == "realtime"
    status, _ = await refusal(standin.url.replace("realtime", "other"))
    assert status == 404
    assert standin.connection_attempts == 4
    assert len(standin.sessions) == 1


async def test_refused_connections_get_503_then_connect(nursery):
    standin = RealtimeStandIn()
    await nursery.start(standin.serve)
    standin.refuse_connections(2)
    for _ in range(2):
        status, _ = await refusal(standin.url)
        assert status == 503
    async with connect(nursery, standin) as client:
        assert client.created["type"] == "session.created"
    assert standin.connection_attempts == 3
    assert len(standin.sessions) == 1


async def test_drop_after_drops_new_sessions_abruptly(nursery):
    standin = RealtimeStandIn()
    await nursery.start(standin.serve)
    standin.drop_after(2)
    async with connect(nursery, standin) as client:
        await client.update_session(instructions="One.")
        await client.send({"type": "response.create"})  # recorded, never answered
        with pytest.raises(ConnectionClosed) as dropped:
            await client.receive()
        assert dropped.value.reason.code == 1006
    session = await closed(standin.sessions[0])
    assert session.close_code == 1006
    assert types(session.client_events) == ["session.update", "response.create"]
    assert session.responses_started == 0
    with pytest.raises(RuntimeError, match="session closed after 0"):
        await session.wait_for_event("response.cancel")

    standin.drop_after(None)
    async with connect(nursery, standin) as client:
        for _ in range(3):
            await client.update_session(instructions="Again.")
    assert (await closed(standin.sessions[1])).close_code == 1000


async def test_expire_sends_session_expired_then_closes_1001(nursery):
    standin = RealtimeStandIn()
    await nursery.start(standin.serve)
    async with connect(nursery, standin) as client:
        session = await standin.wait_for_session(0)
        with trio.fail_after(TIMEOUT):
            await session.expire()
        error = (await client.receive())["error"]
        assert (error["code"], error["message"]) == ("session_expired", EXPIRED_MESSAGE)
        with pytest.raises(ConnectionClosed) as closing:
            await client.receive()
        assert (closing.value.reason.code, closing.value.reason.reason) == (1001, EXPIRED_MESSAGE)
    assert session.close_code == 1001


async def test_one_response_at_a_time_and_cancel(nursery):
    standin = RealtimeStandIn([Reply(audio_ms=5000)], realtime_factor=1.0)
    await nursery.start(standin.serve)
    async with connect(nursery, standin) as client:
        await client.send({"type": "response.create"})
        await client.next("response.created")
        await client.send({"type": "response.create", "event_id": "evt_again"})
        error = (await client.next("error"))["error"]
        assert error["code"] == "conversation_already_has_active_response"
        assert error["event_id"] == "evt_again"

        await client.send({"type": "response.cancel"})
        response = (await client.next("response.done"))["response"]
        assert response["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        await client.send({"type": "response.cancel"})
        assert (await client.receive())["error"]["code"] == "response_cancel_not_active"
    assert standin.sessions[0].responses_started == 1


async def test_manual_commit_and_clear_without_vad(nursery):
    standin = RealtimeStandIn(user_transcripts=["typed by hand"])
    await nursery.start(standin.serve)
    async with connect(nursery, standin) as client:
        await client.update_session(audio={"input": {"format": PCMU, "turn_detection": None}})
        await client.append(speech_ulaw(50))
        await client.send({"type": "input_audio_buffer.commit"})
        error = (await client.receive())["error"]
        assert error["code"] == "input_audio_buffer_commit_empty"

        await client.append(speech_ulaw(200))
        await client.send({"type": "input_audio_buffer.commit"})
        events = await client.until("conversation.item.input_audio_transcription.completed")
        assert types(events) == [
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            "conversation.item.input_audio_transcription.completed",
        ]
        assert events[-1]["transcript"] == "typed by hand"
        assert events[-1]["usage"] == {"type": "duration", "seconds": 0.25}

        await client.send({"type": "input_audio_buffer.clear"})
        assert (await client.receive())["type"] == "input_audio_buffer.cleared"
    server = standin.sessions[0]
    assert server.audio_received_ms == 250
    assert server.responses_started == 0


async def test_shutdown_closes_sessions_with_1001(nursery):
    standin = RealtimeStandIn()
    stop = trio.CancelScope()

    async def serve(task_status=trio.TASK_STATUS_IGNORED):
        with stop:
            await standin.serve(task_status=task_status)

    await nursery.start(serve)
    async with connect(nursery, standin) as client:
        stop.cancel()
        with pytest.raises(ConnectionClosed) as closing:
            await client.receive()
        assert closing.value.reason.code == 1001
    assert (await closed(standin.sessions[0])).close_code == 1001


async def test_no_socket_is_left_open_however_the_client_goes(nursery):
    standin = RealtimeStandIn()
    await nursery.start(standin.serve)
    before = open_sockets()
    async with connect(nursery, standin):
        pass
    assert (await closed(await standin.wait_for_session(0))).close_code == 1000

    raw = await accepted(standin.url)
    assert isinstance(await raw.event(), TextMessage)
    await raw.stream.aclose()  # gone without a Close frame
    assert (await closed(await standin.wait_for_session(1))).close_code == 1006
    assert open_sockets() == before


async def test_a_ping_after_the_servers_close_does_not_stop_the_server(nursery, caplog):
    """trio-websocket issue #184: answering that ping raises in the connection's reader."""
    caplog.set_level(logging.DEBUG, logger="highway.testing.realtime_standin")
    standin = RealtimeStandIn()
    await nursery.start(standin.serve)
    raw = await accepted(standin.url)
    async with raw.stream:
        assert isinstance(await raw.event(), TextMessage)
        session = await standin.wait_for_session(0)
        nursery.start_soon(session.expire)
        assert isinstance(await raw.event(), TextMessage)  # the session_expired error
        close = await raw.event()
        assert isinstance(close, CloseConnection)
        # wsproto will not send a ping once closing: a masked, empty ping frame by hand.
        await raw.stream.send_all(b"\x89\x80\x00\x00\x00\x00")
        await raw.send(close.response())
        assert (await closed(session)).close_code == 1001
    assert any("#184" in record.message for record in caplog.records)  # the bug was hit
    async with connect(nursery, standin) as client:
        assert client.created["type"] == "session.created"
