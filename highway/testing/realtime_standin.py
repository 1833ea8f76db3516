"""An OpenAI Realtime stand-in: a WebSocket server on 127.0.0.1 that speaks the GA protocol.

For integration tests, benchmarks and `highway serve` in offline mode. It answers with scripted
`Reply`s (generated speech-like audio, a transcript, optionally a function call), runs an
energy VAD on the input audio, and checks every client event against the `openai` SDK's own
types, more strictly than the SDK: unknown fields anywhere are refused, as the service does.

    standin = RealtimeStandIn([Reply("Hello, how can I help?", audio_ms=1500)])
    await nursery.start(standin.serve)
    ...  # connect to standin.url; then look at standin.sessions[0]

Behaviour worth knowing:

- A session starts with the service's documented defaults: PCM 24 kHz both ways, server VAD on
  (silence_duration_ms 500, create_response and interrupt_response true).
- Server VAD: a 20 ms window is speech when more than a quarter of its samples exceed ~1000
  in magnitude. `audio_start_ms`/`audio_end_ms` count the audio the VAD has looked at.
  Every committed user turn gets a transcription event, whether or not transcription is set.
- Replies are always audio: `output_modalities` and the parameters of `response.create` are
  recorded but not acted on. `audio/pcma` is accepted and counted (8 kHz) but gets no VAD,
  and replies in it are silence.
- `drop_after(n)`: a session records its n-th client event, then drops the TCP connection
  without answering it.
- Invalid events get an `error` event and are listed in `invalid_events`; the session goes on.
- Every session and every valid client event is kept, so memory grows with traffic.
"""

from __future__ import annotations

import binascii
import itertools
import logging
from array import array
from collections import Counter, defaultdict, deque
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Any, get_args, get_origin
from urllib.parse import parse_qs, urlsplit

import orjson
import trio
import trio_websocket
from openai.types.realtime import RealtimeClientEvent
from pydantic import BaseModel, ValidationError
from trio.lowlevel import ParkingLot
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest
from wsproto.utilities import LocalProtocolError

import codec
from highway.testing.speech import speech_pcm16, speech_ulaw

log = logging.getLogger(__name__)

PATH = "/v1/realtime"
DEFAULT_MODEL = "gpt-realtime"
EXPIRED_MESSAGE = "Your session hit the maximum duration of 60 minutes."
_HANDSHAKE_TIMEOUT = 10.0
# How long a close waits for the peer's Close frame before the TCP connection is closed anyway.
_CLOSE_TIMEOUT = 0.2
_MAX_MESSAGE_SIZE = 16 * 2**20  # the service takes appends of up to 15 MiB
_BYTES_PER_MS = {"audio/pcm": 48, "audio/pcmu": 8, "audio/pcma": 8}
_ALAW_SILENCE = b"\xd5"

# Energy VAD on µ-law: the codes of samples no louder than _LOUD_SAMPLE, to be deleted with
# bytes.translate, so that what is left of a window is its loud samples (one C call).
_VAD_WINDOW_MS = 20
_VAD_WINDOW = _VAD_WINDOW_MS * 8
_LOUD_SAMPLE = 1000
_SPEECH_SAMPLES = _VAD_WINDOW // 4
_ULAW_LINEAR = array("h", codec.ulaw_decode(bytes(range(256))))
_QUIET_ULAW = bytes(code for code in range(256) if abs(_ULAW_LINEAR[code]) <= _LOUD_SAMPLE)

# The item types that have `object` and `status` (MCP items have neither).
_REALTIME_ITEM_TYPES = frozenset({"message", "function_call", "function_call_output"})
_APPEND_KEYS = frozenset({"type", "audio", "event_id"})
_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):08x}"


@dataclass(frozen=True)
class ToolCall:
    """A function call the assistant makes."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """One scripted assistant response."""

    text: str = "Okay."  # the assistant's transcript
    audio_ms: int = 1000  # audio generated for it; 0 = a response with no audio item
    tool_call: ToolCall | None = None  # a function_call item after the audio, same response


DEFAULT_REPLY = Reply()


class InvalidEvent(Exception):
    """A client event the service would refuse, worded as its `error` event would be."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id: str | None = None  # the offending event's, when it has one


class EventSchema:
    """Strict validation against one of the SDK's event unions.

    The member is picked by `type` (the unions are plain Unions: pydantic would try every
    member and report errors from all of them), validated in strict mode, and then refused
    if any model in the tree holds an extra field (the SDK's models accept them).
    """

    def __init__(self, union: Any) -> None:
        if get_origin(union) is Annotated:
            union = get_args(union)[0]
        self.models: dict[str, type[BaseModel]] = {
            get_args(model.model_fields["type"].annotation)[0]: model for model in get_args(union)
        }

    def validate(self, data: Any) -> BaseModel:
        """The event as its SDK model; raises `InvalidEvent`."""
        if not isinstance(data, dict):
            raise InvalidEvent("invalid_value", "An event must be a JSON object.")
        kind = data.get("type")
        model = self.models.get(kind) if isinstance(kind, str) else None
        if model is None:
            if kind is None:
                raise InvalidEvent(
                    "missing_required_parameter", "Missing required parameter: 'type'.", "type"
                )
            supported = ", ".join(f"'{name}'" for name in self.models)
            raise InvalidEvent(
                "invalid_value",
                f"Invalid value: {kind!r}. Supported values are: {supported}.",
                "type",
            )
        try:
            event = model.model_validate(data, strict=True)
        except ValidationError as exc:
            raise _describe(exc, data) from None
        extra = _extra_field(event)
        if extra is not None:
            raise InvalidEvent("unknown_parameter", f"Unknown parameter: '{extra}'.", extra)
        return event


def _describe(exc: ValidationError, data: dict[str, Any]) -> InvalidEvent:
    """Pydantic's clearest error, worded as the service words its own."""
    located = [
        (*_locate(error["loc"], data, error["type"] == "missing"), error) for error in exc.errors()
    ]
    # Nested SDK unions are not discriminated either, so every member reports errors; the
    # member with the fewest is the one the client meant, and its deepest error the problem.
    per_member = Counter(member for _, _, member, _ in located)
    param, _, _, error = min(located, key=lambda found: (per_member[found[2]], -found[1]))
    if error["type"] == "missing":
        return InvalidEvent(
            "missing_required_parameter", f"Missing required parameter: '{param}'.", param
        )
    if error["type"] in ("literal_error", "enum"):
        message = f"Invalid value: {error['input']!r} for '{param}'. {error['msg']}."
        return InvalidEvent("invalid_value", message, param)
    return InvalidEvent("invalid_type", f"Invalid type for '{param}': {error['msg']}.", param)


def _locate(loc: tuple[Any, ...], data: Any, missing: bool) -> tuple[str, int, str | None]:
    """An error's path in the input, its depth, and the first union member `loc` names.

    `loc` mixes input keys with the names of the union members tried; only the keys that
    exist in the input (and, for a missing field, the last one) are part of the path.
    """
    path, depth, member, node = "", 0, None, data
    for index, part in enumerate(loc):
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            path, node = f"{path}[{part}]", node[part]
        elif (isinstance(node, dict) and part in node) or (missing and index == len(loc) - 1):
            path = f"{path}.{part}" if path else str(part)
            node = node.get(part) if isinstance(node, dict) else None
        else:
            member = member or str(part)
            continue
        depth += 1
    return path, depth, member


def _extra_field(value: Any, path: str = "") -> str | None:
    """The path of the first field anywhere in `value` that its model took only as an extra."""
    if isinstance(value, BaseModel):
        if value.model_extra:
            name = next(iter(value.model_extra))
            return f"{path}.{name}" if path else name
        for name, info in type(value).model_fields.items():
            key = info.alias or name
            found = _extra_field(getattr(value, name), f"{path}.{key}" if path else key)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, element in enumerate(value):
            found = _extra_field(element, f"{path}[{index}]")
            if found is not None:
                return found
    return None


CLIENT_EVENTS = EventSchema(RealtimeClientEvent)


def validate_client_event(message: str | bytes) -> dict[str, Any]:
    """A client event parsed and checked as the stand-in checks them; raises `InvalidEvent`."""
    if isinstance(message, bytes):
        raise InvalidEvent("invalid_value", "Events must be sent as text frames.")
    try:
        data = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("invalid_json", f"Invalid JSON: {exc}.") from None
    try:
        if not _is_plain_append(data):
            CLIENT_EVENTS.validate(data)
    except InvalidEvent as exc:
        event_id = data.get("event_id") if isinstance(data, dict) else None
        exc.event_id = event_id if isinstance(event_id, str) else None
        raise
    return data


def _is_plain_append(data: Any) -> bool:
    """A valid `input_audio_buffer.append`, checked without pydantic: the hot path."""
    if not isinstance(data, dict) or data.get("type") != "input_audio_buffer.append":
        return False
    event_id = data.get("event_id")
    return (
        data.keys() <= _APPEND_KEYS
        and isinstance(data.get("audio"), str)
        and (event_id is None or isinstance(event_id, str))
    )


def _default_session(model: str) -> dict[str, Any]:
    """The session as the service reports it in `session.created`: its documented defaults."""
    pcm = {"type": "audio/pcm", "rate": 24000}
    return {
        "type": "realtime",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "",
        "audio": {
            "input": {
                "format": pcm,
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                    "idle_timeout_ms": None,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": pcm, "voice": "marin", "speed": 1.0},
        },
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
    }


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`update` merged into a copy of `base`, nested; neither is changed.

    A dict whose `type` differs replaces the old one: the old fields belong to the old type
    (a `rate` kept from `audio/pcm` would be an unknown field of `audio/pcmu`).
    """
    merged = dict(base)
    for key, value in update.items():
        old = merged.get(key)
        if (
            isinstance(value, dict)
            and isinstance(old, dict)
            and value.get("type", old.get("type")) == old.get("type")
        ):
            merged[key] = _merge(old, value)
        else:
            merged[key] = value
    return merged


def _setting(config: Any, *path: str) -> Any:
    """A nested config value, or None where any step is missing or null."""
    for key in path:
        if not isinstance(config, dict):
            return None
        config = config.get(key)
    return config


@lru_cache(maxsize=64)
def _audio_deltas(audio_format: str, audio_ms: int, delta_ms: int) -> tuple[tuple[int, str], ...]:
    """A reply's audio as (ms, base64) deltas; cached, since scripted replies repeat."""
    if audio_format == "audio/pcmu":
        audio = speech_ulaw(audio_ms)
    elif audio_format == "audio/pcma":
        audio = _ALAW_SILENCE * (audio_ms * 8)
    else:
        audio = speech_pcm16(audio_ms, 24000)
    per_ms = _BYTES_PER_MS[audio_format]
    return tuple(
        (
            min(delta_ms, audio_ms - start),
            binascii.b2a_base64(
                audio[start * per_ms : (start + delta_ms) * per_ms], newline=False
            ).decode(),
        )
        for start in range(0, audio_ms, delta_ms)
    )


def _text_slices(text: str, count: int) -> list[str]:
    """`text` cut into `count` pieces of about equal length (the last ones may be empty)."""
    step = -(-len(text) // count)
    return [text[index * step : (index + 1) * step] for index in range(count)]


class _EnergyVad:
    """Speech start/stop from µ-law audio, per 20 ms window."""

    def __init__(self) -> None:
        self.position_ms = 0  # audio looked at so far
        self.speaking = False
        self._silence_ms = 0
        self._pending = b""  # less than a window, left from the last feed

    def feed(self, ulaw: bytes, silence_duration_ms: int) -> list[tuple[str, int]]:
        """("speech_started" | "speech_stopped", at ms) for each change in `ulaw`."""
        data = self._pending + ulaw if self._pending else ulaw
        whole = len(data) - len(data) % _VAD_WINDOW
        changes = []
        for start in range(0, whole, _VAD_WINDOW):
            window = data[start : start + _VAD_WINDOW]
            self.position_ms += _VAD_WINDOW_MS
            if len(window.translate(None, _QUIET_ULAW)) > _SPEECH_SAMPLES:
                self._silence_ms = 0
                if not self.speaking:
                    self.speaking = True
                    changes.append(("speech_started", self.position_ms - _VAD_WINDOW_MS))
            elif self.speaking:
                self._silence_ms += _VAD_WINDOW_MS
                if self._silence_ms >= silence_duration_ms:
                    self.speaking = False
                    changes.append(("speech_stopped", self.position_ms - self._silence_ms))
        self._pending = data[whole:]
        return changes

    def clear(self) -> None:
        """Forget the current turn (the input buffer was cleared)."""
        self.speaking = False
        self._silence_ms = 0
        self._pending = b""


@dataclass
class StandInItem:
    """A conversation item as last sent to the client."""

    item: dict[str, Any]
    audio_ms: int | None = None  # audio generated so far; None unless an assistant audio item


@dataclass
class ResponseRecord:
    """One response the stand-in generated (or is generating)."""

    id: str
    reply: Reply
    status: str = "in_progress"  # then "completed" or "cancelled"
    cancel_reason: str | None = None  # "turn_detected" or "client_cancelled"
    audio_ms: int = 0  # audio sent so far
    output: list[dict[str, Any]] = field(default_factory=list)
    _cancelled: trio.Event = field(default_factory=trio.Event, repr=False)

    def cancel(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
            self._cancelled.set()

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until `deadline` (trio time), or until the response is cancelled."""
        with trio.move_on_at(deadline):
            await self._cancelled.wait()


class StandInSession:
    """One client connection, as the stand-in sees it."""

    def __init__(
        self,
        standin: RealtimeStandIn,
        ws: WebSocketConnection,
        stream: trio.abc.Stream,
        model: str,
        headers: dict[str, str],
    ) -> None:
        self.model = model
        self.headers = headers  # handshake headers, lower-case names
        self.client_events: list[dict[str, Any]] = []  # valid ones, parsed, in order
        self.invalid_events: list[tuple[str, str]] = []  # (raw text, error message)
        self.config = _default_session(model)  # session.update merged in
        self.truncations: list[dict[str, Any]] = []  # accepted conversation.item.truncate
        self.items: dict[str, StandInItem] = {}
        self.responses: list[ResponseRecord] = []
        self.audio_received_ms = 0.0
        self.closed = trio.Event()
        self.close_code: int | None = None
        self.closed_at: float | None = None  # trio.current_time()
        self._standin = standin
        self._ws = ws
        self._stream = stream
        self._drop_after = standin._drop_after
        self._thawed = trio.Event()  # cleared by freeze()
        self._thawed.set()
        self._by_type: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self._arrivals = ParkingLot()
        self._stop = trio.CancelScope()
        self._close_as: tuple[int, str] | None = None  # asked for by expire()
        self._abrupt = False  # close the TCP connection without a Close frame
        self._nursery: trio.Nursery | None = None
        self._conversation_id = _new_id("conv")
        self._active: ResponseRecord | None = None
        self._last_item_id: str | None = None
        self._buffer_ms = 0.0  # input audio since the last commit or clear
        self._vad = _EnergyVad()
        self._to_ulaw: codec.PcmToUlaw | None = None
        self._speech_item_id = ""
        self._handlers = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.truncate": self._on_truncate,
            "conversation.item.retrieve": self._on_item_retrieve,
            "conversation.item.delete": self._on_item_delete,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
        }

    @property
    def responses_started(self) -> int:
        return len(self.responses)

    async def wait_for_event(self, type: str, count: int = 1) -> dict[str, Any]:
        """The `count`-th valid client event of `type`, once it has arrived."""
        while len(self._by_type[type]) < count:
            if self.closed.is_set():
                got = len(self._by_type[type])
                raise RuntimeError(f"session closed after {got} {type!r} events")
            await self._arrivals.park()
        return self._by_type[type][count - 1]

    async def send_error(self, code: str, message: str = "Stand-in error.") -> None:
        """Send an `error` server event."""
        await self._send(_error(code, message, None, None))

    async def expire(self) -> None:
        """End the session as the service does at its 60-minute limit."""
        await self.send_error("session_expired", EXPIRED_MESSAGE)
        self._close_as = (1001, EXPIRED_MESSAGE)
        self._stop.cancel()
        await self.closed.wait()

    async def drop(self) -> None:
        """Close the TCP connection abruptly: no Close frame."""
        self._abrupt = True
        self._stop.cancel()
        await self.closed.wait()

    async def _run(self) -> None:
        """Serve the session until either side ends it; never raises but Cancelled."""
        try:
            with self._stop:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await self._send({"type": "session.created", "session": self.config})
                    await self._read_loop()
                    nursery.cancel_scope.cancel()  # responses still being generated
        except Exception:
            log.exception("realtime stand-in session failed")
            self._close_as = (1011, "Internal error")
        finally:
            # Shielded: on shutdown the peer still gets a Close frame, not a bare 1006.
            with trio.CancelScope(shield=True):
                await self._close()

    async def _close(self) -> None:
        """Close as asked, unless the peer already has."""
        if self._abrupt:
            code = 1006
            await self._stream.aclose()
        elif self._ws.closed is not None:  # by the peer, or the connection broke
            code = self._ws.closed.code
        else:
            code, reason = self._close_as or (1001, "Server shutting down")
            with trio.move_on_after(_CLOSE_TIMEOUT):
                await self._ws.aclose(code, reason)
        self.close_code = code
        self.closed_at = trio.current_time()

    def _finish(self) -> None:
        """The connection is all over: wake whoever waits."""
        self.closed.set()
        self._arrivals.unpark_all()

    def freeze(self) -> None:
        """Stop reading the client's messages, like a hung server: once trio-websocket's
        small queue is full, pings go unanswered too."""
        self._thawed = trio.Event()

    def thaw(self) -> None:
        self._thawed.set()

    async def _read_loop(self) -> None:
        received = 0
        while True:
            await self._thawed.wait()
            try:
                message = await self._ws.get_message()
            except ConnectionClosed:
                return
            received += 1
            event = await self._receive(message)
            if received == self._drop_after:
                self._abrupt = True
                return
            if event is not None:
                await self._handlers.get(event["type"], self._on_unsupported)(event)

    async def _receive(self, message: str | bytes) -> dict[str, Any] | None:
        """The event, validated and recorded; None (and an `error` sent) if it is invalid."""
        try:
            data = validate_client_event(message)
        except InvalidEvent as exc:
            raw = message if isinstance(message, str) else message.decode(errors="replace")
            self.invalid_events.append((raw, exc.message))
            await self._send(_error(exc.code, exc.message, exc.param, exc.event_id))
            return None
        if self._standin.record_events:
            self.client_events.append(data)
            self._by_type[data["type"]].append(data)
        if self._arrivals:
            self._arrivals.unpark_all()
        return data

    async def _send(self, event: dict[str, Any]) -> None:
        """Send a server event, adding its `event_id`; dropped once the connection is closed."""
        event["event_id"] = _new_id("event")
        with suppress(ConnectionClosed):
            await self._ws.send_message(orjson.dumps(event).decode())

    async def _reject(
        self, event: dict[str, Any], code: str, message: str, param: str | None = None
    ) -> None:
        await self._send(_error(code, message, param, event.get("event_id")))

    async def _on_unsupported(self, event: dict[str, Any]) -> None:
        message = f"'{event['type']}' is only supported over WebRTC and SIP."
        await self._reject(event, "invalid_value", message, "type")

    # Session and input audio

    async def _on_session_update(self, event: dict[str, Any]) -> None:
        if event["session"]["type"] != "realtime":
            await self._reject(
                event, "invalid_value", "The session type cannot be changed.", "session.type"
            )
            return
        self.config = _merge(self.config, event["session"])
        await self._send({"type": "session.updated", "session": self.config})

    async def _on_append(self, event: dict[str, Any]) -> None:
        try:
            audio = binascii.a2b_base64(event["audio"], strict_mode=True)
        except binascii.Error:
            await self._reject(event, "invalid_value", "Invalid base64 in 'audio'.", "audio")
            return
        audio_format = _setting(self.config, "audio", "input", "format", "type") or "audio/pcm"
        ms = len(audio) / _BYTES_PER_MS[audio_format]
        self.audio_received_ms += ms
        self._buffer_ms += ms
        turn_detection = _setting(self.config, "audio", "input", "turn_detection")
        if audio_format == "audio/pcma" or _setting(turn_detection, "type") != "server_vad":
            return
        if audio_format == "audio/pcm":
            if self._to_ulaw is None:
                self._to_ulaw = codec.PcmToUlaw(24000)
            audio = self._to_ulaw.process(audio)
        silence_ms = turn_detection.get("silence_duration_ms") or 500
        for change, at_ms in self._vad.feed(audio, silence_ms):
            if change == "speech_started":
                await self._speech_started(at_ms, turn_detection)
            else:
                await self._speech_stopped(at_ms, turn_detection)

    async def _speech_started(self, at_ms: int, turn_detection: dict[str, Any]) -> None:
        self._speech_item_id = _new_id("item")
        # Cancelled first, so that no delta of the answer follows the speech_started.
        if self._active is not None and turn_detection.get("interrupt_response", True) is not False:
            self._active.cancel("turn_detected")
        await self._send(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": at_ms,
                "item_id": self._speech_item_id,
            }
        )

    async def _speech_stopped(self, at_ms: int, turn_detection: dict[str, Any]) -> None:
        item_id = self._speech_item_id
        await self._send(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": at_ms, "item_id": item_id}
        )
        await self._commit(item_id)
        # An interrupted response that has not sent response.done yet blocks a new one.
        if self._active is None and turn_detection.get("create_response", True) is not False:
            self._start_response()

    async def _on_commit(self, event: dict[str, Any]) -> None:
        if self._buffer_ms < 100:
            message = (
                "Error committing input audio buffer: buffer too small. Expected at least"
                f" 100ms of audio, but buffer only has {self._buffer_ms:.2f}ms of audio."
            )
            await self._reject(event, "input_audio_buffer_commit_empty", message)
            return
        self._vad.clear()
        await self._commit(_new_id("item"))

    async def _on_clear(self, event: dict[str, Any]) -> None:
        self._buffer_ms = 0.0
        self._vad.clear()
        await self._send({"type": "input_audio_buffer.cleared"})

    async def _commit(self, item_id: str) -> None:
        """The input buffer becomes a user message item, then its transcription."""
        seconds = round(self._buffer_ms / 1000, 3)
        self._buffer_ms = 0.0
        item = {
            "id": item_id,
            "type": "message",
            "role": "user",
            "status": "completed",
            "object": "realtime.item",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        previous = self._add_item(StandInItem(item))
        await self._send(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": previous,
            }
        )
        await self._send(
            {"type": "conversation.item.added", "item": item, "previous_item_id": previous}
        )
        await self._send(
            {"type": "conversation.item.done", "item": item, "previous_item_id": previous}
        )
        await self._send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": self._standin._next_transcript(),
                "usage": {"type": "duration", "seconds": seconds},
            }
        )

    def _add_item(self, stored: StandInItem) -> str | None:
        """Store an item at the end of the conversation; returns the id of the one before."""
        previous, self._last_item_id = self._last_item_id, stored.item["id"]
        self.items[stored.item["id"]] = stored
        return previous

    # Conversation items

    async def _on_item_create(self, event: dict[str, Any]) -> None:
        item = {"id": _new_id("item")}
        if event["item"]["type"] in _REALTIME_ITEM_TYPES:
            item |= {"object": "realtime.item", "status": "completed"}
        item.update(event["item"])
        previous = self._add_item(StandInItem(item))
        await self._send(
            {"type": "conversation.item.added", "item": item, "previous_item_id": previous}
        )
        await self._send(
            {"type": "conversation.item.done", "item": item, "previous_item_id": previous}
        )

    async def _on_truncate(self, event: dict[str, Any]) -> None:
        stored = self.items.get(event["item_id"])
        end_ms = event["audio_end_ms"]
        if stored is None:
            await self._item_not_found(event)
        elif stored.audio_ms is None or event["content_index"] != 0:
            message = "Only the audio content (index 0) of an assistant message can be truncated."
            await self._reject(event, "invalid_value", message, "content_index")
        elif not 0 <= end_ms <= stored.audio_ms:
            message = f"Audio content of {stored.audio_ms}ms is already shorter than {end_ms}ms"
            await self._reject(event, "invalid_value", message, "audio_end_ms")
        else:
            self.truncations.append(event)
            await self._send(
                {
                    "type": "conversation.item.truncated",
                    "item_id": event["item_id"],
                    "content_index": 0,
                    "audio_end_ms": end_ms,
                }
            )

    async def _on_item_retrieve(self, event: dict[str, Any]) -> None:
        stored = self.items.get(event["item_id"])
        if stored is None:
            await self._item_not_found(event)
        else:
            await self._send({"type": "conversation.item.retrieved", "item": stored.item})

    async def _on_item_delete(self, event: dict[str, Any]) -> None:
        if self.items.pop(event["item_id"], None) is None:
            await self._item_not_found(event)
        else:
            await self._send({"type": "conversation.item.deleted", "item_id": event["item_id"]})

    async def _item_not_found(self, event: dict[str, Any]) -> None:
        message = f"Item with item_id '{event['item_id']}' not found."
        await self._reject(event, "invalid_value", message, "item_id")

    # Responses

    async def _on_response_create(self, event: dict[str, Any]) -> None:
        if self._active is not None:
            message = (
                "Conversation already has an active response in progress:"
                f" {self._active.id}. Wait until the response is finished before creating"
                " a new one."
            )
            await self._reject(event, "conversation_already_has_active_response", message)
        else:
            self._start_response()

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        active = self._active
        wanted = event.get("response_id")
        if active is None or wanted not in (None, active.id):
            message = "Cancellation failed: no active response found."
            await self._reject(event, "response_cancel_not_active", message)
        else:
            active.cancel("client_cancelled")

    def _start_response(self) -> None:
        # Active at once, so a response.create right behind this one is refused.
        reply = self._standin._next_reply(first_in_session=not self.responses)
        record = ResponseRecord(_new_id("resp"), reply)
        self.responses.append(record)
        self._active = record
        assert self._nursery is not None
        self._nursery.start_soon(self._run_response, record)

    async def _run_response(self, record: ResponseRecord) -> None:
        audio_format = _setting(self.config, "audio", "output", "format", "type") or "audio/pcm"
        await self._send(
            {"type": "response.created", "response": self._response(record, audio_format)}
        )
        reply = record.reply
        if reply.audio_ms > 0:
            record.output.append(await self._speak(record, audio_format))
        if reply.tool_call is not None and record.cancel_reason is None:
            record.output.append(await self._call_tool(record, reply.tool_call))
        record.status = "completed" if record.cancel_reason is None else "cancelled"
        self._active = None
        await self._send(
            {"type": "response.done", "response": self._response(record, audio_format)}
        )

    async def _speak(self, record: ResponseRecord, audio_format: str) -> dict[str, Any]:
        """The assistant audio item: its events, and the item as finally sent."""
        item_id = _new_id("item")
        item: dict[str, Any] = {
            "id": item_id,
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "object": "realtime.item",
            "content": [],
        }
        stored = StandInItem(item, audio_ms=0)
        previous = self._add_item(stored)
        output = {"response_id": record.id, "output_index": 0}
        part = {**output, "item_id": item_id, "content_index": 0}
        await self._send({"type": "response.output_item.added", "item": item, **output})
        await self._send(
            {"type": "conversation.item.added", "item": item, "previous_item_id": previous}
        )
        await self._send({"type": "response.content_part.added", "part": {"type": "audio"}, **part})
        transcript = await self._stream_audio(record, stored, audio_format, part)
        await self._send({"type": "response.output_audio.done", **part})
        await self._send(
            {"type": "response.output_audio_transcript.done", "transcript": transcript, **part}
        )
        await self._send(
            {
                "type": "response.content_part.done",
                "part": {"type": "audio", "transcript": transcript},
                **part,
            }
        )
        stored.item = item = {
            **item,
            "status": "completed" if record.cancel_reason is None else "incomplete",
            "content": [{"type": "output_audio", "transcript": transcript}],
        }
        await self._send({"type": "response.output_item.done", "item": item, **output})
        await self._send(
            {"type": "conversation.item.done", "item": item, "previous_item_id": previous}
        )
        return item

    async def _stream_audio(
        self, record: ResponseRecord, stored: StandInItem, audio_format: str, part: dict[str, Any]
    ) -> str:
        """Send the audio and transcript deltas until done or cancelled; returns the transcript."""
        standin = self._standin
        deltas = _audio_deltas(audio_format, record.reply.audio_ms, standin.delta_ms)
        texts = _text_slices(record.reply.text, len(deltas))
        start = trio.current_time()
        spoken = []
        for (ms, audio), text in zip(deltas, texts, strict=True):
            # A checkpoint at least, so that the reader task can cancel between deltas.
            if standin.realtime_factor is None:
                await trio.sleep(0)
            else:
                await record.sleep_until(start + record.audio_ms / 1000 / standin.realtime_factor)
            if record.cancel_reason is not None:
                break
            await self._send({"type": "response.output_audio.delta", "delta": audio, **part})
            record.audio_ms += ms
            stored.audio_ms = record.audio_ms
            if text:
                await self._send(
                    {"type": "response.output_audio_transcript.delta", "delta": text, **part}
                )
                spoken.append(text)
        return "".join(spoken)

    async def _call_tool(self, record: ResponseRecord, tool_call: ToolCall) -> dict[str, Any]:
        """The function_call item: its events, and the item as finally sent."""
        arguments = orjson.dumps(tool_call.arguments).decode()
        item_id, call_id = _new_id("item"), _new_id("call")
        item = {
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "object": "realtime.item",
            "name": tool_call.name,
            "call_id": call_id,
            "arguments": "",
        }
        stored = StandInItem(item)
        previous = self._add_item(stored)
        output = {"response_id": record.id, "output_index": len(record.output)}
        call = {**output, "item_id": item_id, "call_id": call_id}
        await self._send({"type": "response.output_item.added", "item": item, **output})
        await self._send(
            {"type": "conversation.item.added", "item": item, "previous_item_id": previous}
        )
        await self._send(
            {"type": "response.function_call_arguments.delta", "delta": arguments, **call}
        )
        await self._send(
            {
                "type": "response.function_call_arguments.done",
                "name": tool_call.name,
                "arguments": arguments,
                **call,
            }
        )
        stored.item = item = {**item, "status": "completed", "arguments": arguments}
        await self._send({"type": "response.output_item.done", "item": item, **output})
        await self._send(
            {"type": "conversation.item.done", "item": item, "previous_item_id": previous}
        )
        return item

    def _response(self, record: ResponseRecord, audio_format: str) -> dict[str, Any]:
        """The response object of response.created / response.done."""
        response: dict[str, Any] = {
            "id": record.id,
            "object": "realtime.response",
            "status": record.status,
            "status_details": None,
            "output": record.output,
            "conversation_id": self._conversation_id,
            "output_modalities": ["audio"],
            "audio": {"output": {"format": {"type": audio_format}}},
            "max_output_tokens": "inf",
            "usage": None,
        }
        if record.status == "cancelled":
            response["status_details"] = {"type": "cancelled", "reason": record.cancel_reason}
        if record.status != "in_progress":
            # Roughly the service's rates: 20 audio tokens a second, 4 characters a token.
            audio_tokens = record.audio_ms // 50
            text_tokens = len(record.reply.text) // 4
            response["usage"] = {
                "input_tokens": 0,
                "output_tokens": audio_tokens + text_tokens,
                "total_tokens": audio_tokens + text_tokens,
                "output_token_details": {"audio_tokens": audio_tokens, "text_tokens": text_tokens},
            }
        return response


def _error(code: str, message: str, param: str | None, event_id: str | None) -> dict[str, Any]:
    error = {"type": "invalid_request_error", "code": code, "message": message, "param": param}
    return {"type": "error", "error": {**error, "event_id": event_id}}


class RealtimeStandIn:
    """The stand-in server: scripted replies, shared by all its sessions."""

    def __init__(
        self,
        replies: Iterable[Reply] = (),
        *,
        api_key: str | None = None,
        default_reply: Reply = DEFAULT_REPLY,
        first_reply: Reply | None = None,
        user_transcripts: Iterable[str] = (),
        delta_ms: int = 100,
        realtime_factor: float | None = None,
        record_events: bool = True,
    ) -> None:
        """`replies` are used one per response, then `default_reply` (or `first_reply` for a
        session's first response, e.g. a greeting for every call); `user_transcripts` one
        per committed user turn, then "(speech)". `realtime_factor`: None sends audio deltas
        as fast as possible, 1.0 in real time from the response's start, 2.0 twice as fast.
        `record_events` off keeps no client events (the sessions' memory then stays flat), for
        a long-running server.
        """
        self.record_events = record_events
        self.api_key = api_key
        self.default_reply = default_reply
        self.first_reply = first_reply
        self.delta_ms = delta_ms
        self.realtime_factor = realtime_factor
        self.sessions: list[StandInSession] = []  # in connection order
        self.connection_attempts = 0  # handshakes seen, refused ones included
        self._replies = deque(replies)
        self._transcripts = deque(user_transcripts)
        self._refusals = 0
        self._drop_after: int | None = None
        self._port: int | None = None
        self._new_session = ParkingLot()

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the stand-in is not serving yet")
        return f"ws://127.0.0.1:{self._port}{PATH}"

    def add_replies(self, *replies: Reply) -> None:
        self._replies.extend(replies)

    def refuse_connections(self, count: int = 1) -> None:
        """Refuse the next `count` handshakes with HTTP 503."""
        self._refusals += count

    def drop_after(self, events: int | None) -> None:
        """Every new session drops its connection on its `events`-th client event; None: off."""
        self._drop_after = events

    async def wait_for_session(self, index: int) -> StandInSession:
        """`sessions[index]`, once that many clients have connected."""
        while len(self.sessions) <= index:
            await self._new_session.park()
        return self.sessions[index]

    async def serve(
        self, *, task_status: trio.TaskStatus[RealtimeStandIn] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve on a free port of 127.0.0.1 until cancelled; then every session is closed."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self._port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._serve_connection, listeners)
            task_status.started(self)

    def _next_reply(self, first_in_session: bool) -> Reply:
        if self._replies:
            return self._replies.popleft()
        if first_in_session and self.first_reply is not None:
            return self.first_reply
        return self.default_reply

    def _next_transcript(self) -> str:
        return self._transcripts.popleft() if self._transcripts else "(speech)"

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        """One TCP connection: handshake, then session. Never raises but Cancelled: one bad
        connection must not stop the server.

        Not trio_websocket.serve_websocket: owning the stream is what lets a session drop it,
        close it when the peer vanished, and contain trio-websocket issue #184.
        """
        session = None
        try:
            # Closing the stream here covers every way out, the peer vanishing included
            # (trio-websocket then leaves it open).
            async with stream, trio.open_nursery() as nursery:
                request = None
                with trio.move_on_after(_HANDSHAKE_TIMEOUT):
                    request = await trio_websocket.wrap_server_stream(
                        nursery, stream, max_message_size=_MAX_MESSAGE_SIZE
                    )
                if request is not None:
                    session = await self._open_session(request, stream)
                if session is not None:
                    await session._run()
                nursery.cancel_scope.cancel()  # the connection's reader task
        except* LocalProtocolError:
            # trio-websocket #184: its reader answers a ping that arrives after our Close
            # frame with a pong wsproto refuses, and dies. The session is over by then.
            log.debug("late ping after close (trio-websocket #184)", exc_info=True)
        except* Exception:
            log.exception("realtime stand-in connection failed")
        finally:
            # Only now: `closed` promises the socket is closed and any error logged.
            if session is not None:
                session._finish()

    async def _open_session(
        self, request: WebSocketRequest, stream: trio.SocketStream
    ) -> StandInSession | None:
        """The new session, not yet running; None if the handshake is refused."""
        self.connection_attempts += 1
        url = urlsplit(request.path)
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in request.headers
        }
        refusal = self._refusal(url.path, headers)
        if refusal is not None:
            status, message, code = refusal
            body = orjson.dumps(
                {"error": {"message": message, "type": "invalid_request_error", "code": code}}
            )
            await request.reject(
                status, extra_headers=[(b"content-type", b"application/json")], body=body
            )
            return None
        ws = await request.accept()
        model = parse_qs(url.query).get("model", [DEFAULT_MODEL])[0]
        session = StandInSession(self, ws, stream, model, headers)
        self.sessions.append(session)
        self._new_session.unpark_all()
        return session

    def _refusal(self, path: str, headers: dict[str, str]) -> tuple[int, str, str] | None:
        """(HTTP status, message, error code) if the handshake is to be refused."""
        if self._refusals > 0:
            self._refusals -= 1
            return 503, "The server is overloaded or not ready yet.", "service_unavailable"
        if path != PATH:
            return 404, f"Invalid URL (GET {path})", "not_found"
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, "Incorrect API key provided.", "invalid_api_key"
        return None
