"""A Twilio Media Streams simulator: Twilio's side of a bidirectional `<Connect><Stream>`.

For integration tests, `highway simulate-call` and benchmarks. It connects to a bridge's
WebSocket as Twilio does (signed handshake, `connected`, `start`), sends the caller's
microphone as 20 ms µ-law frames in real time, and models the caller's earpiece: outbound
audio plays at 8 bytes per ms, marks are echoed when the audio queued before them has
played, and `clear` drops unplayed audio and echoes pending marks at once.

    async with open_simulated_call("ws://127.0.0.1:8000/media", auth_token=token) as call:
        call.say_speech(1500)
        await call.wait_said()
        await call.wait_received(500)

Playback is computed from the clock, not ticked, so `played_ms` and `ClearSeen.played_ms`
are exact. Once the socket closes, playback stops there: audio still buffered is never heard,
as when a bridge hangs up before its goodbye has played. No numpy: this also runs from the
`highway` command with run-time dependencies only.
"""

from __future__ import annotations

import binascii
import math
import secrets
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream
from twilio.request_validator import RequestValidator
from wsproto.utilities import LocalProtocolError

from highway.testing.speech import ULAW_BYTES_PER_MS, ULAW_SILENCE_BYTE, speech_ulaw

FRAME_MS = 20
FRAME_BYTES = FRAME_MS * ULAW_BYTES_PER_MS
DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
CONNECT_TIMEOUT_S = 10.0
# Closing waits for the server's Close frame; a server that never answers must not hang us.
CLOSE_TIMEOUT_S = 1.0
# Slack for float rounding when a wait wakes exactly at a computed playback position.
_EPSILON_MS = 1e-6
_SILENCE_FRAME = bytes([ULAW_SILENCE_BYTE]) * FRAME_BYTES
_MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
_CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}


class CallClosedError(Exception):
    """The call closed before what was being waited for happened."""


@dataclass(frozen=True)
class ClearSeen:
    """A `clear` from the server, and how much outbound audio had played when it arrived."""

    at: float  # trio.current_time() when the clear arrived
    played_ms: float  # total outbound audio played (ms) at that moment


class SimulatedCall:
    """One simulated Twilio call on an open WebSocket; made only by `open_simulated_call`."""

    def __init__(
        self,
        ws: WebSocketConnection,
        *,
        call_sid: str,
        stream_sid: str,
        account_sid: str,
        custom_parameters: Mapping[str, str],
        continuous: bool,
        record: bool,
    ) -> None:
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.account_sid = account_sid
        self.started_at: float | None = None
        # When the last frame of queued caller audio was sent (for latency measurements).
        self.last_said_at: float | None = None
        self.media_received: list[tuple[float, int]] = []
        self.marks_sent_by_server: list[str] = []
        self.marks_echoed: list[tuple[float, str]] = []
        self.clears: list[ClearSeen] = []
        self.protocol_errors: list[str] = []
        self.closed = trio.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._ws = ws
        self._custom_parameters = dict(custom_parameters)
        self._continuous = continuous
        self._sequence = 0
        self._chunk = 0
        self._opened_at = trio.current_time()
        self._closed_at: float | None = None
        # Microphone: bytes waiting to be sent; a bytearray drops its head cheaply.
        self._mic_buffer = bytearray()
        self._mic_on = True
        self._stopped = False
        # Earpiece timeline, in ms of audio: everything queued and not cleared ends at
        # `_queued_ms`; playback ran at real speed from `_anchor_ms` at `_anchor_time`.
        self._queued_ms = 0.0
        self._anchor_ms = 0.0
        self._anchor_time = self._opened_at
        self._received_bytes = 0
        self._pending_marks: deque[tuple[float, str]] = deque()  # (position ms, name)
        self._echoed_names: set[str] = set()
        self._heard: bytearray | None = bytearray() if record else None
        self._changed: trio.Event | None = None
        self._replan = trio.Event()
        self._scope = trio.CancelScope()
        self._tasks: trio.Nursery | None = None
        self._handlers: dict[str, Callable[[dict[str, Any], float], None]] = {
            "media": self._on_media,
            "mark": self._on_mark,
            "clear": self._on_clear,
        }

    # Microphone (caller -> server)

    def say(self, ulaw: bytes) -> None:
        """Queue caller audio (µ-law 8 kHz); it goes out in 20 ms frames in real time."""
        self._mic_buffer += ulaw

    def say_speech(self, ms: int) -> None:
        """Queue `ms` of generated speech."""
        self.say(speech_ulaw(ms))

    async def wait_said(self) -> None:
        """Wait until everything queued with `say` has been sent."""
        while self._mic_buffer:
            if self._stopped:
                raise CallClosedError("the stream stopped before the queued audio was sent")
            await self._wait_change("the queued audio was sent")

    def stop_microphone(self) -> None:
        """Send no media frames at all (not even silence) until `start_microphone`."""
        self._mic_on = False

    def start_microphone(self) -> None:
        """Resume sending media frames; the frame clock kept running meanwhile."""
        self._mic_on = True

    async def send_start(self) -> None:
        """Send `start` and begin the microphone (when opened with send_start=False)."""
        if self.started_at is not None:
            raise RuntimeError("start was already sent")
        self.started_at = trio.current_time()
        start = {
            "streamSid": self.stream_sid,
            "accountSid": self.account_sid,
            "callSid": self.call_sid,
            "tracks": ["inbound"],
            "customParameters": self._custom_parameters,
            "mediaFormat": _MEDIA_FORMAT,
        }
        await self._send_event("start", start)
        if not self.closed.is_set():
            assert self._tasks is not None
            self._tasks.start_soon(self._run_microphone, self.started_at)

    async def send_dtmf(self, digit: str) -> None:
        """Send a key press as Twilio reports it."""
        await self._send_event("dtmf", {"track": "inbound_track", "digit": digit})

    async def send_stop(self) -> None:
        """Send Twilio's `stop`; the microphone stops for good, as the stream has ended."""
        self._stopped = True
        self._notify()
        await self._send_event("stop", {"accountSid": self.account_sid, "callSid": self.call_sid})

    async def send_raw(self, text: str) -> None:
        """Send any text frame as it is."""
        await self._send_text(text)

    async def send_event(self, event: dict[str, Any]) -> None:
        """Send any JSON event; streamSid and sequenceNumber are added if missing."""
        message = dict(event)
        # Every message from Twilio uses up a sequence number, even one that brings its own.
        sequence = self._next_sequence()
        message.setdefault("sequenceNumber", sequence)
        message.setdefault("streamSid", self.stream_sid)
        await self._send_json(message)

    async def hang_up(self) -> None:
        """End the call as Twilio does when the caller hangs up: `stop`, then close 1000."""
        await self.send_stop()
        await self._close()

    async def disconnect(self) -> None:
        """Close the WebSocket (1000) without sending `stop`."""
        await self._close()

    # Playback (server -> caller)

    @property
    def played_ms(self) -> float:
        """Outbound audio played so far, in ms (exact, from the clock)."""
        return self._played_at(trio.current_time())

    @property
    def received_ms(self) -> float:
        """Outbound audio received so far, in ms, including any later cleared."""
        return self._received_bytes / ULAW_BYTES_PER_MS

    async def wait_played(self, ms: float) -> None:
        """Wait until `played_ms` reaches `ms`."""
        while self.played_ms < ms - _EPSILON_MS:
            with trio.move_on_at(self._time_at(ms)):
                await self._wait_change(f"{ms} ms had played")

    async def wait_received(self, ms: float) -> None:
        """Wait until `received_ms` reaches `ms`."""
        while self.received_ms < ms:
            await self._wait_change(f"{ms} ms had been received")

    async def wait_for_clear(self, count: int = 1) -> ClearSeen:
        """Wait for the `count`-th clear; returns it."""
        while len(self.clears) < count:
            await self._wait_change(f"clear number {count}")
        return self.clears[count - 1]

    async def wait_for_mark(self, name: str) -> None:
        """Wait until a mark called `name` has been echoed."""
        while name not in self._echoed_names:
            await self._wait_change(f"mark {name!r} was echoed")

    async def wait_closed(self) -> None:
        """Wait until the WebSocket has closed."""
        await self.closed.wait()

    def heard_ulaw(self) -> bytes:
        """What the caller heard from the stream's opening until now (or the close), µ-law
        8 kHz, silence where nothing played. Needs `record=True`."""
        if self._heard is None:
            raise RuntimeError("open the call with record=True to keep what the caller heard")
        end = self._earpiece_index(self._closed_at or trio.current_time())
        heard = bytes(self._heard[:end])
        return heard + bytes([ULAW_SILENCE_BYTE]) * (end - len(heard))

    # Sending

    def _next_sequence(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    async def _send_event(self, event: str, body: dict[str, Any]) -> None:
        # Key order as Twilio sends it: event, sequenceNumber, streamSid, then the body.
        await self._send_json(
            {
                "event": event,
                "sequenceNumber": self._next_sequence(),
                "streamSid": self.stream_sid,
                event: body,
            }
        )

    async def _send_json(self, message: dict[str, Any]) -> None:
        await self._send_text(orjson.dumps(message).decode())

    async def _send_text(self, text: str) -> None:
        # A send racing the server's close must not fail the caller's code: the call is over.
        try:
            await self._ws.send_message(text)
        except ConnectionClosed:
            self._on_closed()

    async def _close(self) -> None:
        # Shielded: a cancelled caller still closes cleanly, so the server sees 1000, not 1006.
        with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            await self._ws.aclose(1000)
        self._on_closed()

    async def _run_microphone(self, started_at: float) -> None:
        # Absolute deadlines from the start: a late wake-up never shifts later frames.
        frame_number = 0
        while not self._stopped:
            frame_number += 1
            await trio.sleep_until(started_at + frame_number * FRAME_MS / 1000)
            if not self._mic_on or self._stopped:
                continue
            said = bool(self._mic_buffer)
            if not said and not self._continuous:
                continue
            sent_at = trio.current_time()
            frame = self._take_frame() if said else _SILENCE_FRAME
            await self._send_media(frame, frame_number)
            if said and not self._mic_buffer:
                self.last_said_at = sent_at
                self._notify()

    def _take_frame(self) -> bytes:
        frame = bytes(self._mic_buffer[:FRAME_BYTES])
        del self._mic_buffer[:FRAME_BYTES]
        return frame.ljust(FRAME_BYTES, bytes([ULAW_SILENCE_BYTE]))

    async def _send_media(self, frame: bytes, frame_number: int) -> None:
        # `chunk` counts the frames sent; `timestamp` is the frame's place on the media
        # clock, so it jumps over any time the microphone was off.
        self._chunk += 1
        media = {
            "track": "inbound",
            "chunk": str(self._chunk),
            "timestamp": str(frame_number * FRAME_MS),
            "payload": binascii.b2a_base64(frame, newline=False).decode("ascii"),
        }
        await self._send_event("media", media)

    # Receiving

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._scope:
            async with trio.open_nursery() as tasks:
                self._tasks = tasks
                tasks.start_soon(self._receive)
                tasks.start_soon(self._echo_marks_when_played)
                task_status.started()

    async def _receive(self) -> None:
        while True:
            try:
                message = await self._ws.get_message()
            except ConnectionClosed:
                self._on_closed()
                return
            self._handle(message)

    def _handle(self, raw: str | bytes) -> None:
        now = trio.current_time()
        if isinstance(raw, bytes):
            return self._reject(f"binary frame of {len(raw)} bytes (Twilio takes JSON text)")
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._reject(f"bad JSON: {raw[:80]!r}")
        if not isinstance(message, dict):
            return self._reject(f"not a JSON object: {raw[:80]!r}")
        event = message.get("event")
        handler = self._handlers.get(event) if isinstance(event, str) else None
        if handler is None:
            return self._reject(f"unknown event {event!r}")
        if message.get("streamSid") != self.stream_sid:
            return self._reject(f"{event} with wrong streamSid {message.get('streamSid')!r}")
        handler(message, now)

    def _reject(self, problem: str) -> None:
        # Twilio drops such a message (error 31951 in its debugger); so do we, and note it.
        self.protocol_errors.append(problem)

    def _on_media(self, message: dict[str, Any], now: float) -> None:
        payload = _field(message, "media", "payload")
        if not isinstance(payload, str):
            return self._reject("media without a media.payload string")
        try:
            audio = binascii.a2b_base64(payload, strict_mode=True)
        except binascii.Error as error:
            return self._reject(f"media with bad base64 payload ({error})")
        self.media_received.append((now, len(audio)))
        self._received_bytes += len(audio)
        if self._played_at(now) >= self._queued_ms:
            # The buffer has run dry: this audio starts playing the moment it arrives.
            self._anchor_ms, self._anchor_time = self._queued_ms, now
            self._fill_heard_silence(now)
        self._queued_ms += len(audio) / ULAW_BYTES_PER_MS
        if self._heard is not None:
            self._heard += audio
        self._notify()

    def _on_mark(self, message: dict[str, Any], now: float) -> None:
        name = _field(message, "mark", "name")
        if not isinstance(name, str):
            return self._reject("mark without a mark.name string")
        self.marks_sent_by_server.append(name)
        self._pending_marks.append((self._queued_ms, name))
        self._replan.set()

    def _on_clear(self, message: dict[str, Any], now: float) -> None:
        played = self._played_at(now)
        self._queued_ms = self._anchor_ms = played
        self._anchor_time = now
        if self._heard is not None:
            del self._heard[self._earpiece_index(now) :]
        # Every pending mark is now due: Twilio echoes them all at once on a clear.
        self._pending_marks = deque((played, name) for _, name in self._pending_marks)
        self.clears.append(ClearSeen(now, played))
        self._replan.set()
        self._notify()

    async def _echo_marks_when_played(self) -> None:
        # The only task that echoes marks, so echoes always leave in order.
        while True:
            self._replan = trio.Event()
            due = self._time_at(self._pending_marks[0][0]) if self._pending_marks else math.inf
            with trio.move_on_at(due):
                await self._replan.wait()
            await self._echo_due_marks()

    async def _echo_due_marks(self) -> None:
        played = self._played_at(trio.current_time())
        while self._pending_marks and self._pending_marks[0][0] <= played + _EPSILON_MS:
            _, name = self._pending_marks.popleft()
            self.marks_echoed.append((trio.current_time(), name))
            self._echoed_names.add(name)
            self._notify()
            await self._send_event("mark", {"name": name})

    def _on_closed(self) -> None:
        if self.closed.is_set():
            return
        self._closed_at = trio.current_time()
        reason = self._ws.closed
        if reason is not None:
            self.close_code, self.close_reason = reason.code, reason.reason
        self.closed.set()
        self._notify()
        self._scope.cancel()

    # The playback clock

    def _played_at(self, when: float) -> float:
        if self._closed_at is not None:
            when = min(when, self._closed_at)
        return min(self._queued_ms, self._anchor_ms + (when - self._anchor_time) * 1000)

    def _time_at(self, position_ms: float) -> float:
        """When playback reaches `position_ms`, or inf if that audio has not arrived."""
        if position_ms > self._queued_ms:
            return math.inf
        return self._anchor_time + (position_ms - self._anchor_ms) / 1000

    def _earpiece_index(self, when: float) -> int:
        return round((when - self._opened_at) * 1000 * ULAW_BYTES_PER_MS)

    def _fill_heard_silence(self, now: float) -> None:
        if self._heard is not None:
            gap = self._earpiece_index(now) - len(self._heard)
            self._heard += bytes([ULAW_SILENCE_BYTE]) * max(gap, 0)

    # Waiting

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_change(self, goal: str) -> None:
        """Wait for any change of state; raises if the call has closed."""
        if self.closed.is_set():
            raise CallClosedError(f"the call closed (code {self.close_code}) before {goal}")
        if self._changed is None:
            self._changed = trio.Event()
        await self._changed.wait()


def _field(message: dict[str, Any], section: str, name: str) -> object:
    body = message.get(section)
    return body.get(name) if isinstance(body, dict) else None


@asynccontextmanager
async def open_simulated_call(
    url: str,
    *,
    auth_token: str | None = None,
    signed_url: str | None = None,
    call_sid: str | None = None,
    stream_sid: str | None = None,
    account_sid: str = DEFAULT_ACCOUNT_SID,
    custom_parameters: Mapping[str, str] | None = None,
    send_start: bool = True,
    continuous: bool = True,
    record: bool = False,
) -> AsyncIterator[SimulatedCall]:
    """Connect to a bridge's ws:// or wss:// `url` as Twilio would and yield the call.

    With `auth_token` the handshake is signed over `signed_url` (default `url`), the URL
    Twilio dialed. `continuous`: send silence whenever nothing is queued, as a phone line
    does. `record`: keep what the caller heard, for `heard_ulaw`. Leaving closes the socket (1000)
    if still open.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    headers = []
    if auth_token is not None:
        signature = RequestValidator(auth_token).compute_signature(signed_url or url, {})
        headers.append((b"X-Twilio-Signature", signature.encode()))
    with trio.fail_after(CONNECT_TIMEOUT_S):
        stream = await _open_stream(parts.scheme, parts.hostname, parts.port)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                ws = await wrap_client_stream(
                    _LatePingGuard(nursery),  # type: ignore[arg-type]
                    stream,
                    parts.netloc,
                    _resource(parts.path, parts.query),
                    extra_headers=headers,
                )
            call = SimulatedCall(
                ws,
                call_sid=call_sid or "CA" + secrets.token_hex(16),
                stream_sid=stream_sid or "MZ" + secrets.token_hex(16),
                account_sid=account_sid,
                custom_parameters=custom_parameters or {},
                continuous=continuous,
                record=record,
            )
            await nursery.start(call._run)
            try:
                await call._send_json(_CONNECTED)
                if send_start:
                    await call.send_start()
                yield call
            finally:
                if not call.closed.is_set():
                    await call._close()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        _raise_single(group)
    finally:
        # trio-websocket leaves a client's TCP stream open when the server closed first.
        await trio.aclose_forcefully(stream)


async def _open_stream(
    scheme: str, host: str, port: int | None
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    if scheme == "ws":
        return await trio.open_tcp_stream(host, port or 80)
    return await trio.open_ssl_over_tcp_stream(
        host, port or 443, ssl_context=ssl.create_default_context(), https_compatible=True
    )


def _resource(path: str, query: str) -> str:
    return (path or "/") + (f"?{query}" if query else "")


class _LatePingGuard:
    """Runs trio-websocket's reader task so that a ping arriving after our Close does not
    crash the call (trio-websocket issue #184: answering it raises LocalProtocolError)."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def start_soon(self, function: Callable[[], Awaitable[None]]) -> None:
        self._nursery.start_soon(self._guarded, function)

    @staticmethod
    async def _guarded(function: Callable[[], Awaitable[None]]) -> None:
        # We are closing anyway; the close then times out instead of failing.
        with suppress(LocalProtocolError):
            await function()


def _raise_single(group: BaseExceptionGroup) -> NoReturn:
    """Re-raise a lone exception from our nursery as itself, so callers can catch it
    (a refused handshake, a timeout, the caller's own error); anything else as the group."""
    if len(group.exceptions) != 1:
        raise group
    error = group.exceptions[0]
    context = error.__context__
    try:
        raise error
    finally:
        # Re-raising here would chain the group, which holds `error`, as its own context.
        error.__context__ = context
