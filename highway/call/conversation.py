"""One call's conversation as a state machine: events in, actions out. Sans-IO.

The session (highway.call.session) feeds it Twilio events and OpenAI events and carries out
the actions it returns, in order. It holds the rules: the agent greets once both sides are
up, the caller's audio goes to the model, the model's audio goes to the caller followed by
marks, barge-in clears and truncates, tool calls run and answer the model, DTMF becomes a
user message, and the call hangs up once the goodbye has played.

The two per-frame paths (`caller_audio`, and an audio delta in `model_event`) return as
little as they can: no record, no log, one string or two.
"""

from __future__ import annotations

import binascii
import logging
from dataclasses import dataclass
from typing import Any

import codec
from highway.call.playback import DEFAULT_MARK_SPACING_MS, PlaybackTracker
from highway.call.transcript import Transcript, Turn
from highway.realtime import openai_events
from highway.realtime.openai_events import AudioMode
from highway.store import EventKind
from highway.telephony import media_stream
from highway.telephony.media_stream import Dtmf, Mark, Media, Start, Stop, TwilioEvent

__all__ = [
    "CallEnds",
    "Conversation",
    "HangUp",
    "Record",
    "RunTool",
    "ToModel",
    "ToTwilio",
]

log = logging.getLogger(__name__)

# Bytes of audio per millisecond: µ-law at 8 kHz, and PCM16 at 24 kHz.
_ULAW_BYTES_PER_MS = 8
_PCM24K_BYTES_PER_MS = 48


# The model's speech: the one model event on the per-frame path.
AUDIO_DELTA = "response.output_audio.delta"


@dataclass(frozen=True, slots=True)
class ToTwilio:
    frame: str


@dataclass(frozen=True, slots=True)
class ToModel:
    event: str


@dataclass(frozen=True, slots=True)
class Record:
    """Store as a call event and publish to the event hub."""

    kind: EventKind
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunTool:
    """Run a function the model called; hand the result to `Conversation.tool_done`."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class HangUp:
    """The goodbye has played: hang up through Twilio's REST API, then end the call."""

    reason: str


@dataclass(frozen=True, slots=True)
class CallEnds:
    """The call is over (the caller hung up, or Twilio stopped the stream)."""

    reason: str


Action = ToTwilio | ToModel | Record | RunTool | HangUp | CallEnds


class Conversation:
    """The rules of one call, with no I/O. `now` is seconds on a monotonic clock."""

    def __init__(
        self, audio_mode: AudioMode, mark_spacing_ms: float = DEFAULT_MARK_SPACING_MS
    ) -> None:
        self.audio_mode = audio_mode
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.playback = PlaybackTracker(mark_spacing_ms)
        self.transcript = Transcript()
        self.model_connected = False
        self.barge_ins = 0
        self._greeted = False
        self._response_id: str | None = None  # the model's response in progress
        self._respond_when_done = False  # a tool output or DTMF waits for a new response
        self._hang_up_reason: str | None = None
        self._hung_up = False
        self._stale_items: set[str] = set()  # audio items of an earlier model session
        if audio_mode == "pcm24k":
            self._to_model = codec.UlawToPcm(24000)
            self._to_caller = codec.PcmToUlaw(24000)

    @property
    def quiet(self) -> bool:
        """Nobody is talking: no response in progress and no audio left to play."""
        return self._response_id is None and not self.playback.playing

    # Twilio

    def caller_audio(self, media: Media) -> str | None:
        """The model event for one frame of the caller's audio, or None if no model is up."""
        if not self.model_connected:
            return None
        if self.audio_mode == "pcmu":
            return openai_events.append_audio(media.payload)
        pcm = self._to_model.process(media.audio)
        return openai_events.append_audio(binascii.b2a_base64(pcm, newline=False).decode())

    def twilio_event(self, event: TwilioEvent, now: float) -> list[Action]:
        """Any Twilio event but media (see `caller_audio`)."""
        if isinstance(event, Mark):
            return self._mark_played(event.name, now)
        if isinstance(event, Start):
            self.stream_sid, self.call_sid = event.stream_sid, event.call_sid
            return self._greet_when_ready()
        if isinstance(event, Dtmf):
            return [
                Record(EventKind.DTMF, {"digit": event.digit}),
                *self._tell_model(f"The caller pressed {event.digit} on the keypad."),
            ]
        if isinstance(event, Stop):
            return [CallEnds("caller_hung_up")]
        return []  # connected

    # OpenAI

    def model_up(self) -> list[Action]:
        """A model session is open and configured (session.update sent)."""
        self.model_connected = True
        return self._greet_when_ready()

    def model_lost(self) -> None:
        """The model's connection dropped: its response and items are gone with it."""
        self.model_connected = False
        self._response_id = None
        self._respond_when_done = False
        if self.playback.item_id is not None:
            # Its audio may still be playing; a barge-in can clear it but not truncate it.
            self._stale_items.add(self.playback.item_id)

    def model_event(self, event: dict[str, Any], now: float) -> list[Action]:
        kind = event.get("type")
        if kind == AUDIO_DELTA:
            return self._model_audio(event, now)
        handler = _MODEL_HANDLERS.get(kind)  # type: ignore[arg-type]
        return handler(self, event, now) if handler else []

    def tool_done(self, call_id: str, output: str, hang_up: str | None) -> list[Action]:
        """A tool finished: give the model its output and let it go on (or hang up)."""
        actions: list[Action] = [ToModel(openai_events.function_output(call_id, output))]
        if hang_up is not None:
            # No new response: the goodbye came with the call to end_call.
            self._hang_up_reason = hang_up
            return actions + self._hang_up_if_done()
        if self._response_id is None:
            actions.append(ToModel(openai_events.response_create()))
        else:
            self._respond_when_done = True
        return actions

    def flush_transcript(self) -> list[Action]:
        """The call is ending: record whatever transcript is still waiting."""
        return [self._record_turn(turn) for turn in self.transcript.flush()]

    # Rules

    def _greet_when_ready(self) -> list[Action]:
        if self._greeted or not self.model_connected or self.stream_sid is None:
            return []
        self._greeted = True
        return [ToModel(openai_events.response_create())]

    def _tell_model(self, text: str) -> list[Action]:
        if not self.model_connected:
            return []
        actions: list[Action] = [ToModel(openai_events.user_message(text))]
        if self._response_id is None:
            actions.append(ToModel(openai_events.response_create()))
        else:
            self._respond_when_done = True
        return actions

    def _model_audio(self, event: dict[str, Any], now: float) -> list[Action]:
        item_id = event.get("item_id")
        delta = event.get("delta")
        if self.stream_sid is None or not isinstance(item_id, str) or not isinstance(delta, str):
            return []
        if self.playback.was_interrupted(item_id):
            return []  # late audio of an answer the caller talked over
        try:
            audio = binascii.a2b_base64(delta, strict_mode=True)
        except binascii.Error:
            log.warning("dropped an audio delta that is not valid base64")
            return []
        if self.audio_mode == "pcmu":
            payload, ms = delta, len(audio) / _ULAW_BYTES_PER_MS
        else:
            ulaw = self._to_caller.process(audio)
            payload = binascii.b2a_base64(ulaw, newline=False).decode()
            ms = len(audio) / _PCM24K_BYTES_PER_MS
        actions: list[Action] = [ToTwilio(media_stream.media_frame(self.stream_sid, payload))]
        mark = self.playback.audio_sent(item_id, ms, now)
        if mark is not None:
            actions.append(ToTwilio(media_stream.mark_frame(self.stream_sid, mark)))
        return actions

    def _audio_done(self, event: dict[str, Any], now: float) -> list[Action]:
        mark = self.playback.audio_done(str(event.get("item_id")))
        if mark is None or self.stream_sid is None:
            return self._hang_up_if_done()
        return [ToTwilio(media_stream.mark_frame(self.stream_sid, mark))]

    def _mark_played(self, name: str, now: float) -> list[Action]:
        if self.playback.mark_played(name, now):
            return self._hang_up_if_done()
        return []

    def _speech_started(self, event: dict[str, Any], now: float) -> list[Action]:
        # Work out what was heard before the clear: the clear echoes every pending mark.
        truncation = self.playback.interrupt(now)
        if truncation is None or self.stream_sid is None:
            return []
        self.barge_ins += 1
        actions: list[Action] = [ToTwilio(media_stream.clear_frame(self.stream_sid))]
        # An item the model has already dropped (its session was replaced) is not truncated.
        truncated = truncation.item_id not in self._stale_items
        if truncated:
            actions.append(
                ToModel(openai_events.truncate(truncation.item_id, truncation.audio_end_ms))
            )
        data = {
            "itemId": truncation.item_id,
            "heardMs": truncation.audio_end_ms,
            "truncated": truncated,
        }
        actions.append(Record(EventKind.INTERRUPTION, data))
        return actions

    def _response_created(self, event: dict[str, Any], now: float) -> list[Action]:
        response = event.get("response") or {}
        self._response_id = response.get("id") or "unknown"
        return []

    def _response_done(self, event: dict[str, Any], now: float) -> list[Action]:
        self._response_id = None
        actions: list[Action] = []
        if self.playback.item_id is not None:
            # A response cut short (cancelled, or out of tokens) sends no audio.done.
            actions = self._audio_done({"item_id": self.playback.item_id}, now)
        if self._respond_when_done:
            self._respond_when_done = False
            return [*actions, ToModel(openai_events.response_create())]
        if any(isinstance(action, HangUp) for action in actions):
            return actions
        return actions + self._hang_up_if_done()

    def _item_added(self, event: dict[str, Any], now: float) -> list[Action]:
        item = event.get("item") or {}
        if item.get("type") == "message" and item.get("role") == "assistant" and item.get("id"):
            self.transcript.begin("assistant", item["id"])
        return []

    def _committed(self, event: dict[str, Any], now: float) -> list[Action]:
        if event.get("item_id"):
            self.transcript.begin("user", event["item_id"])
        return []

    def _user_transcript(self, event: dict[str, Any], now: float) -> list[Action]:
        return self._settle("user", event, event.get("transcript"))

    def _user_transcript_failed(self, event: dict[str, Any], now: float) -> list[Action]:
        return self._settle("user", event, None)

    def _assistant_transcript(self, event: dict[str, Any], now: float) -> list[Action]:
        return self._settle("assistant", event, event.get("transcript"))

    def _settle(self, role: Any, event: dict[str, Any], text: Any) -> list[Action]:
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            return []
        turns = self.transcript.settle(role, item_id, text if isinstance(text, str) else None)
        return [self._record_turn(turn) for turn in turns]

    def _record_turn(self, turn: Turn) -> Record:
        data = {"text": turn.text, "itemId": turn.item_id}
        kind = EventKind.USER if turn.role == "user" else EventKind.ASSISTANT
        return Record(kind, data)

    def _function_call(self, event: dict[str, Any], now: float) -> list[Action]:
        call_id, name = event.get("call_id"), event.get("name")
        if not isinstance(call_id, str) or not isinstance(name, str):
            return []
        return [RunTool(call_id, name, str(event.get("arguments") or ""))]

    def _hang_up_if_done(self) -> list[Action]:
        """Hang up once end_call was called, the response is over and its audio played."""
        if (
            self._hang_up_reason is None
            or self._hung_up
            or self._response_id is not None
            or self.playback.playing
        ):
            return []
        self._hung_up = True
        return [HangUp(self._hang_up_reason)]


_MODEL_HANDLERS = {
    "response.output_audio.done": Conversation._audio_done,
    "input_audio_buffer.speech_started": Conversation._speech_started,
    "input_audio_buffer.committed": Conversation._committed,
    "response.created": Conversation._response_created,
    "response.done": Conversation._response_done,
    "response.output_item.added": Conversation._item_added,
    "response.output_audio_transcript.done": Conversation._assistant_transcript,
    "conversation.item.input_audio_transcription.completed": Conversation._user_transcript,
    "conversation.item.input_audio_transcription.failed": Conversation._user_transcript_failed,
    "response.function_call_arguments.done": Conversation._function_call,
}
