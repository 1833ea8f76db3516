"""One live call: the nursery that joins Twilio's media stream to an OpenAI Realtime session.

The call's nursery supervises four members, and the first to finish ends the call:

- the Twilio reader: frames from the caller, through the Conversation, to the model;
- the model link: connects (with back-off, at most 3 tries in a row), configures and
  restores the session, reads it through the Conversation to the caller, pings it every
  HIGHWAY_KEEPALIVE_SECONDS, and rolls over to a new session before OpenAI's 60 minutes;
- the timer: no `start` within 10 s, no media for HIGHWAY_IDLE_TIMEOUT_SECONDS, or
  HIGHWAY_MAX_CALL_SECONDS reached;
- the recorder: stores and publishes call events in order, and runs the model's tools,
  so that neither reader ever waits for the database.

Whatever ends it, `run()` closes the model's socket at once (shielded, 0.1 s at most),
closes Twilio's, stores what is left of the transcript, and finalises the call once.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import trio
import trio_websocket

from highway.call.agent import agent_session
from highway.call.conversation import (
    AUDIO_DELTA,
    Action,
    CallEnds,
    Conversation,
    HangUp,
    Record,
    RunTool,
    ToModel,
    ToTwilio,
)
from highway.call.tools import ToolResult, run_tool
from highway.config import Settings
from highway.dashboard.events import publish_call, publish_call_event, verification_outcome
from highway.dashboard.hub import EventHub
from highway.log import bind_stream_sid
from highway.metrics import Meters
from highway.realtime import openai_events
from highway.realtime.websocket_client import close_quietly, open_websocket
from highway.store import Call, EventKind, Store, StoreError, Verification
from highway.telephony.media_stream import FrameError, Media, Start, parse_frame
from highway.telephony.twilio_rest import TwilioCalls, TwilioError

__all__ = ["CallSession", "CallerSocket", "ModelEndpoint"]

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 10.0
MODEL_RETRIES = 3
MODEL_BACKOFF_SECONDS = (0.25, 0.5, 1.0)
MODEL_CONNECT_TIMEOUT_SECONDS = 5.0
# After the rollover time, wait up to this long for a pause in the conversation.
ROLLOVER_PATIENCE_SECONDS = 60.0
ROLLOVER_CHECK_SECONDS = 0.1
FINALISE_TIMEOUT_SECONDS = 5.0
CALLER_CLOSE_TIMEOUT_SECONDS = 1.0

NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013


class CallerSocket(Protocol):
    """Twilio's side of the call: a WebSocket already accepted."""

    async def receive(self) -> str | bytes | None:
        """The next frame, or None once the caller's socket is closed."""

    async def send(self, text: str) -> None:
        """Send a frame; does nothing once the socket is closed."""

    async def close(self, code: int) -> None: ...


@dataclass(frozen=True, slots=True)
class ModelEndpoint:
    """Where the model is: the Realtime URL (without ?model=), the model and the key."""

    url: str
    model: str
    api_key: str | None

    @property
    def full_url(self) -> str:
        return f"{self.url}?model={self.model}"

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        if not self.api_key:
            return []
        return [(b"Authorization", f"Bearer {self.api_key}".encode())]


class _ModelGone(Exception):
    """The model's connection is lost (closed, or a ping went unanswered)."""


@dataclass(slots=True)
class _Ending:
    reason: str
    failed: bool
    error: str | None
    close_code: int


class CallSession:
    """Runs one call from an accepted Twilio socket to its final record."""

    def __init__(
        self,
        *,
        call: Call,
        caller: CallerSocket,
        settings: Settings,
        store: Store,
        hub: EventHub,
        model: ModelEndpoint,
        twilio: TwilioCalls | None,
        meters: Meters,
    ) -> None:
        self.call = call
        self.caller = caller
        self.settings = settings
        self.store = store
        self.hub = hub
        self.model = model
        self.twilio = twilio
        self.meters = meters
        self.conversation = Conversation(settings.audio_mode)
        self.verification: Verification | None = None
        self.ending: _Ending | None = None
        self.bad_frames = 0
        self.model_errors = 0
        self.model_connections = 0
        self._verification_loaded = trio.Event()
        self._started = trio.Event()
        self._last_media_at = -math.inf
        self._upstream: trio_websocket.WebSocketConnection | None = None
        self._records_in, self._records_out = trio.open_memory_channel[Record | RunTool](math.inf)
        self._nursery: trio.Nursery | None = None

    # Lifecycle

    async def run(self) -> None:
        """Run the call until something ends it, then finalise it. Never raises (but
        Cancelled, when the server shuts down: the call is still closed and finalised)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._load_verification)
                nursery.start_soon(self._read_caller)
                nursery.start_soon(self._link_model)
                nursery.start_soon(self._time_call)
                nursery.start_soon(self._record)
        except Exception:
            log.exception("call %d: the bridge failed", self.call.id)
            self.meters.error("bridge")
            self.end("bridge_error", failed=True, error="internal error")
        finally:
            with trio.CancelScope(shield=True):
                await self._finish()

    def end(
        self,
        reason: str,
        *,
        failed: bool = False,
        error: str | None = None,
        close_code: int = NORMAL_CLOSURE,
    ) -> None:
        """End the call for `reason`. The first reason wins; later calls change nothing."""
        if self.ending is None:
            self.ending = _Ending(reason, failed, error, close_code)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _finish(self) -> None:
        # Cancelled from outside with no reason: the server is shutting down.
        ending = self.ending or _Ending("server_shutdown", False, None, GOING_AWAY)
        await self._close_model()
        with trio.move_on_after(CALLER_CLOSE_TIMEOUT_SECONDS):
            await self.caller.close(ending.close_code)
        with trio.move_on_after(FINALISE_TIMEOUT_SECONDS) as scope:
            for action in self.conversation.flush_transcript():
                self._records_in.send_nowait(action)
            self._records_in.close()
            await self._store_remaining_records()
            status = "failed" if ending.failed else "completed"
            try:
                ended = await self.store.end_call(
                    self.call.id, status=status, end_reason=ending.reason, error=ending.error
                )
                publish_call(self.hub, ended)
            except StoreError as error:
                log.error("call %d: could not store its end: %s", self.call.id, error)
                self.meters.error("store")
        if scope.cancelled_caught:
            log.error("call %d: storing its end timed out", self.call.id)
            self.meters.error("store")
        self.meters.call_ended("failed" if ending.failed else "completed", ending.reason)
        self.hub.publish("callStatus", self.call.id, status="inactive")
        self.hub.publish(
            "clientDisconnected", self.call.id, text="Client disconnected", reason=ending.reason
        )
        log.info(
            "call %d ended: %s (model connections %d, model errors %d, bad frames %d,"
            " barge-ins %d)",
            self.call.id,
            ending.reason,
            self.model_connections,
            self.model_errors,
            self.bad_frames,
            self.conversation.barge_ins,
        )

    # Members of the call's nursery

    async def _load_verification(self) -> None:
        verification_id = self.call.verification_id
        if verification_id is not None:
            try:
                self.verification = await self.store.get_verification(verification_id)
                problem = None if self.verification else f"verification {verification_id} not found"
            except Exception as error:  # the database, or a row this version cannot read
                problem = repr(error)
            if problem is not None:
                log.error("call %d: cannot load its verification: %s", self.call.id, problem)
                self.end(
                    "verification_unavailable",
                    failed=True,
                    error=problem,
                    close_code=INTERNAL_ERROR,
                )
                return
        self._verification_loaded.set()

    async def _read_caller(self) -> None:
        conversation = self.conversation
        meters = self.meters
        while True:
            frame = await self.caller.receive()
            received_at = trio.current_time()
            if frame is None:
                self.end("caller_disconnected")
                return
            try:
                event = parse_frame(frame)
            except FrameError as error:
                self._bad_frame(error)
                continue
            if type(event) is Media:
                self._last_media_at = received_at
                meters.frames_in += 1
                text = conversation.caller_audio(event)
                if text is not None:
                    await self._send_model(text)
                    meters.caller_to_model.observe(trio.current_time() - received_at)
                continue
            if type(event) is Start and not self._accept_start(event):
                return
            await self._perform(conversation.twilio_event(event, trio.current_time()))

    async def _link_model(self) -> None:
        """Keep a configured model session open for as long as the call lasts."""
        failures = 0
        while True:
            try:
                await self._run_model_session()
                failures = 0  # a rollover: straight to a new session
            except (OSError, trio_websocket.HandshakeError, _ModelGone) as error:
                self.conversation.model_lost()
                failures += 1
                reason = _describe(error)
                if failures > MODEL_RETRIES:
                    log.error("call %d: OpenAI unavailable: %s", self.call.id, reason)
                    self.end("openai_unavailable", failed=True, error=f"OpenAI: {reason}")
                    return
                log.warning(
                    "call %d: OpenAI connection lost (%s); retry %d of %d",
                    self.call.id,
                    reason,
                    failures,
                    MODEL_RETRIES,
                )
                await trio.sleep(MODEL_BACKOFF_SECONDS[failures - 1])

    async def _time_call(self) -> None:
        ends_at = trio.current_time() + self.settings.max_call_seconds
        with trio.move_on_at(min(ends_at, trio.current_time() + START_TIMEOUT_SECONDS)):
            await self._started.wait()
        if not self._started.is_set():
            self.end("max_duration" if trio.current_time() >= ends_at else "no_start")
            return
        self._last_media_at = max(self._last_media_at, trio.current_time())
        idle = self.settings.idle_timeout_seconds
        while True:
            # Media only moves _last_media_at; this wakes at most once per idle period.
            await trio.sleep_until(min(ends_at, self._last_media_at + idle))
            now = trio.current_time()
            if now >= ends_at:
                self.end("max_duration")
                return
            if now >= self._last_media_at + idle:
                self.end("idle_timeout")
                return

    async def _record(self) -> None:
        async for action in self._records_out:
            if isinstance(action, RunTool):
                await self._run_tool(action)
            else:
                await self._store_record(action)

    # The model's session

    async def _run_model_session(self) -> None:
        endpoint = self.model
        async with open_websocket(
            endpoint.full_url, endpoint.headers, connect_timeout=MODEL_CONNECT_TIMEOUT_SECONDS
        ) as upstream:
            self.model_connections += 1
            if self.model_connections > 1:
                self.meters.openai_reconnects += 1
            try:
                await self._verification_loaded.wait()
                await self._configure(upstream)
                self._upstream = upstream
                await self._perform(self.conversation.model_up())
                lost: list[str] = []
                async with trio.open_nursery() as link:
                    link.start_soon(self._keep_alive, upstream, link.cancel_scope, lost)
                    try:
                        await self._read_model(upstream)
                    except trio_websocket.ConnectionClosed as closed:
                        lost.append(f"closed ({closed.reason.code})")
                    link.cancel_scope.cancel()
                if lost:
                    raise _ModelGone(lost[0])
            except trio_websocket.ConnectionClosed as closed:
                raise _ModelGone(f"closed ({closed.reason.code})") from None
            finally:
                self._upstream = None

    async def _configure(self, upstream: trio_websocket.WebSocketConnection) -> None:
        """Send the session's settings, then restore the conversation so far, if any."""
        if self.model_connections > 1 and self.verification is not None:
            # Reloaded so the instructions know which fields are confirmed by now.
            try:
                fresh = await self.store.get_verification(self.verification.id)
                self.verification = fresh or self.verification
            except StoreError as error:
                log.warning("call %d: verification not reloaded: %s", self.call.id, error)
        config = agent_session(self.settings, self.verification)
        await upstream.send_message(openai_events.session_update(config))
        for turn in self.conversation.transcript.history:
            assert turn.text is not None
            build = (
                openai_events.user_message
                if turn.role == "user"
                else openai_events.assistant_message
            )
            await upstream.send_message(build(turn.text))

    async def _read_model(self, upstream: trio_websocket.WebSocketConnection) -> None:
        """Read until the connection drops (raises) or it is time to roll over (returns)."""
        conversation = self.conversation
        meters = self.meters
        rollover_at = trio.current_time() + self.settings.openai_session_seconds
        while True:
            now = trio.current_time()
            if now < rollover_at:
                wake_at = rollover_at
            elif conversation.quiet or now >= rollover_at + ROLLOVER_PATIENCE_SECONDS:
                log.info("call %d: rolling over to a new OpenAI session", self.call.id)
                return
            else:
                # Past the rollover time: look for a pause in the conversation. Pauses show
                # in the Twilio reader's marks too, so check every so often, not per event.
                wake_at = now + ROLLOVER_CHECK_SECONDS
            message = None
            with trio.move_on_at(wake_at):
                message = await upstream.get_message()
            if message is None:
                continue
            try:
                event = orjson.loads(message)
            except orjson.JSONDecodeError:
                log.warning("call %d: OpenAI sent a frame that is not JSON", self.call.id)
                continue
            if not isinstance(event, dict):
                continue
            kind = event.get("type")
            if kind == "error":
                if self._model_error(event):
                    return
                continue
            received_at = trio.current_time()
            actions = conversation.model_event(event, received_at)
            await self._perform(actions)
            # Only audio that went out: late audio after a barge-in is dropped, not sent.
            if kind == AUDIO_DELTA and actions:
                meters.frames_out += 1
                meters.model_to_caller.observe(trio.current_time() - received_at)

    def _model_error(self, event: dict[str, Any]) -> bool:
        """Log an OpenAI error event; True if the session is over (its 60 minutes)."""
        error = event.get("error") or {}
        code = error.get("code") or error.get("type") or "unknown"
        self.model_errors += 1
        self.meters.error("openai_error")
        if code == "session_expired":
            log.info("call %d: OpenAI session expired; rolling over", self.call.id)
            return True
        log.warning("call %d: OpenAI error %s: %s", self.call.id, code, error.get("message"))
        return False

    async def _keep_alive(
        self,
        upstream: trio_websocket.WebSocketConnection,
        link: trio.CancelScope,
        lost: list[str],
    ) -> None:
        """Ping every keepalive interval; a pong missing for as long ends the link."""
        interval = self.settings.keepalive_seconds
        while True:
            await trio.sleep(interval)
            with trio.move_on_after(interval) as waiting:
                try:
                    await upstream.ping()
                except trio_websocket.ConnectionClosed:
                    return  # the reader sees it too
            if waiting.cancelled_caught:
                lost.append("no pong within the keepalive interval")
                link.cancel()
                return

    async def _send_model(self, event: str) -> None:
        upstream = self._upstream
        if upstream is None:
            return  # between sessions: the caller's audio of this moment is lost
        # If it closed, the model reader sees the same close and reconnects.
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await upstream.send_message(event)

    async def _close_model(self) -> None:
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            await close_quietly(upstream)

    # Actions

    async def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            if type(action) is ToTwilio:
                await self.caller.send(action.frame)
            elif type(action) is ToModel:
                await self._send_model(action.event)
            elif isinstance(action, Record | RunTool):
                self._records_in.send_nowait(action)
            elif isinstance(action, HangUp):
                self._spawn(self._hang_up, action.reason)
            elif isinstance(action, CallEnds):
                self.end(action.reason)

    def _spawn(self, task: Callable[..., Awaitable[Any]], *args: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(task, *args)

    async def _hang_up(self, reason: str) -> None:
        call_sid = self.conversation.call_sid
        if self.twilio is not None and call_sid:
            try:
                # False means Twilio had already ended it (20404): done either way.
                await self.twilio.hangup(call_sid)
            except TwilioError as error:
                log.warning("call %d: Twilio hang-up failed: %s", self.call.id, error)
                self.meters.error("twilio_hangup")
        # Closing the stream also ends the call: the TwiML after <Connect> is <Hangup/>.
        log.info("call %d: agent hung up: %s", self.call.id, reason)
        self.end("agent_hung_up")

    async def _store_record(self, action: Record) -> None:
        # Shielded: once taken from the queue, a record is stored and published even if the
        # call ends meanwhile (the database's own timeout bounds the wait).
        event_id = None
        with trio.CancelScope(shield=True):
            try:
                event_id = (await self.store.add_event(self.call.id, action.kind, action.data)).id
            except StoreError as error:
                log.error("call %d: %s event not stored: %s", self.call.id, action.kind, error)
                self.meters.error("store")
        publish_call_event(self.hub, self.call.id, action.kind, action.data, event_id)
        if action.kind is EventKind.INTERRUPTION:
            self.meters.barge_ins += 1
            self.meters.truncations += bool(action.data.get("truncated"))
        elif outcome := verification_outcome(action.kind, action.data):
            self.meters.outcome(outcome)

    async def _run_tool(self, action: RunTool) -> None:
        """Run the tool and store its event (both shielded, like records), then answer."""
        with trio.CancelScope(shield=True):
            try:
                result = await run_tool(
                    self.store, self.verification, action.name, action.arguments
                )
            except StoreError as error:
                log.error("call %d: tool %s failed: %s", self.call.id, action.name, error)
                self.meters.error("store")
                result = ToolResult({"error": "the record could not be saved; try again"})
            record = Record(EventKind.TOOL, {"callId": action.call_id, **result.record})
            await self._store_record(record)
        await self._perform(
            self.conversation.tool_done(action.call_id, result.output_json, result.hang_up)
        )

    async def _store_remaining_records(self) -> None:
        async for action in self._records_out:
            if isinstance(action, Record):
                await self._store_record(action)

    # Twilio details

    def _accept_start(self, start: Start) -> bool:
        """Check the stream belongs to this call; remember it. False ends the call."""
        expected = self.call.call_sid
        if expected is not None and start.call_sid != expected:
            log.warning("call %d: stream for another Twilio call; closing", self.call.id)
            self.end(
                "wrong_call",
                failed=True,
                error="stream for another call",
                close_code=POLICY_VIOLATION,
            )
            return False
        bind_stream_sid(start.stream_sid)
        self._started.set()
        # Published now, not once stored: the greeting's words may come before that.
        self.hub.publish(
            "clientConnected", self.call.id, text="Client connected", streamSid=start.stream_sid
        )
        self.hub.publish("callStatus", self.call.id, status="active")
        self._spawn(self._record_start, start)
        return True

    async def _record_start(self, start: Start) -> None:
        try:
            publish_call(
                self.hub, await self.store.record_stream_start(self.call.id, start.stream_sid)
            )
        except StoreError as error:
            log.error("call %d: stream start not stored: %s", self.call.id, error)
            self.meters.error("store")

    def _bad_frame(self, error: FrameError) -> None:
        self.bad_frames += 1
        self.meters.error("bad_frame")
        # The first, then every 100th: a broken client must not flood the log.
        if self.bad_frames == 1 or self.bad_frames % 100 == 0:
            log.warning(
                "call %d: ignored a bad frame from Twilio (%s); %d so far",
                self.call.id,
                error,
                self.bad_frames,
            )


def _describe(error: BaseException) -> str:
    if isinstance(error, trio_websocket.HandshakeError):
        return f"handshake refused ({type(error).__name__})"
    return str(error) or type(error).__name__
