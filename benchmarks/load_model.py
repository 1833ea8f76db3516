"""The model's side of the load: a lean OpenAI Realtime stand-in for hundreds of sessions.

Each session answers `response.create` at once and speaks in real time, one audio delta
(plus a transcript delta) every `delta_ms`, as OpenAI's GA events. Part-way into every
answer (0.8-2 s) its caller "barges in": `speech_started`, the answer is cancelled, and
600 ms later the caller's turn is committed and transcribed and the next answer starts, as
server VAD with `create_response` does. So every leg (audio both ways, barge-in, transcript
records) runs all the time. It checks nothing the bridge sends: `tests/` validate every
event against the SDK; this side only has to be cheap, and to time what it sees.

In µ-law mode every delta carries a stamp (its number) in its first four samples, so the
caller side can match each media frame to the delta it came from.
"""

from __future__ import annotations

import binascii
import random
from dataclasses import dataclass, field
from time import perf_counter

import orjson

from benchmarks import lean_ws
from benchmarks.load_loop import Loop
from benchmarks.stamps import read_stamp, stamp_frame
from highway.testing.speech import PCM24K_BYTES_PER_MS, ULAW_BYTES_PER_MS, ULAW_SILENCE_BYTE

__all__ = ["ModelLoad", "ModelSession"]

APPEND = b'{"type":"input_audio_buffer.append","audio":"'
_AUDIO_AT = len(APPEND)
RESPONSE_CREATE = b'{"type":"response.create"'
ANSWER_MS = 4000  # longer than the latest barge-in: every answer is cut short
BARGE_IN_AFTER = (0.8, 2.0)  # seconds into the answer
CALLER_TURN_SECONDS = 0.6  # speech_started -> speech_stopped
_BYTES_PER_MS = {"pcmu": ULAW_BYTES_PER_MS, "pcm24k": PCM24K_BYTES_PER_MS}
_SILENCE = {"pcmu": bytes([ULAW_SILENCE_BYTE]), "pcm24k": b"\0"}


def _event(**fields: object) -> bytes:
    return orjson.dumps(fields)


@dataclass
class ModelSession:
    """One model connection and what it saw, on the perf_counter clock."""

    connection: lean_ws.Connection
    index: int
    load: ModelLoad
    appends: list[float] = field(default_factory=list)
    append_stamps: list[int] = field(default_factory=list)  # µ-law mode only
    deltas: list[float] = field(default_factory=list)  # delta n was sent at deltas[n]
    speech_started: list[float] = field(default_factory=list)
    _part: dict[str, object] = field(default_factory=dict)  # the answer's ids
    _delta_head: bytes = b""  # its audio deltas' JSON up to the audio
    _response: int = 0  # the answer being spoken (0: none); stale callbacks compare it
    _answers: int = 0
    _spoken_ms: int = 0

    def open(self) -> None:
        self.connection.send(_event(type="session.created", session={"type": "realtime"}))
        self.load.loop.read(self.connection.sock, self._read)
        self._read()  # what came with the handshake

    def _read(self) -> None:
        try:
            messages = self.connection.receive()
        except lean_ws.Closed:
            self.load.loop.forget(self.connection.sock)
            self.connection.close()
            self._response = 0
            return
        for message in messages:
            if message.startswith(APPEND):
                self.appends.append(perf_counter())
                if self.load.mode == "pcmu":
                    stamp = binascii.a2b_base64(message[_AUDIO_AT : _AUDIO_AT + 8])
                    self.append_stamps.append(read_stamp(stamp))
            elif message.startswith(RESPONSE_CREATE):
                self._start_answer()
            # Everything else (session.update, truncate, items) needs no answer here.

    def _start_answer(self) -> None:
        if self._response:
            return
        self._answers += 1
        self._response = answer = self._answers
        ids = f"resp_{self.index}_{answer}", f"item_{self.index}_{answer}"
        self._part = {"response_id": ids[0], "item_id": ids[1], "output_index": 0}
        self._delta_head = (
            b'{"type":"response.output_audio.delta","response_id":"%s","item_id":"%s",'
            b'"output_index":0,"content_index":0,"delta":"' % (ids[0].encode(), ids[1].encode())
        )
        self._spoken_ms = 0
        send = self.connection.send
        send(_event(type="response.created", response={"id": ids[0], "status": "in_progress"}))
        item = {"id": ids[1], "type": "message", "role": "assistant", "status": "in_progress"}
        send(_event(type="response.output_item.added", item=item, **self._part))
        now = perf_counter()
        self._speak(answer, now)
        self.load.loop.at(now + self.load.rng.uniform(*BARGE_IN_AFTER), self._barge_in)

    def _speak(self, answer: int, due: float) -> None:
        if answer != self._response:
            return  # cut short meanwhile
        load = self.load
        self.deltas.append(perf_counter())
        self.connection.send(self._delta_head + load.delta_audio(len(self.deltas) - 1) + b'"}')
        self.connection.send(
            _event(type="response.output_audio_transcript.delta", delta="word ", **self._part)
        )
        self._spoken_ms += load.delta_ms
        if self._spoken_ms >= ANSWER_MS:
            self._end_answer("completed")
            return
        due += load.delta_ms / 1000
        load.loop.at(due, lambda: self._speak(answer, due))

    def _end_answer(self, status: str) -> None:
        send, part = self.connection.send, self._part
        send(_event(type="response.output_audio.done", **part))
        send(_event(type="response.output_audio_transcript.done", transcript="words", **part))
        send(_event(type="response.done", response={"id": part["response_id"], "status": status}))
        self._response = 0

    def _barge_in(self) -> None:
        if not self._response:
            return
        user_item = f"item_{self.index}_{self._answers}_user"
        self.speech_started.append(perf_counter())
        self.connection.send(
            _event(type="input_audio_buffer.speech_started", audio_start_ms=0, item_id=user_item)
        )
        self._end_answer("cancelled")
        self.load.loop.at(
            perf_counter() + CALLER_TURN_SECONDS, lambda: self._caller_turn(user_item)
        )

    def _caller_turn(self, item_id: str) -> None:
        send = self.connection.send
        send(_event(type="input_audio_buffer.speech_stopped", audio_end_ms=600, item_id=item_id))
        send(_event(type="input_audio_buffer.committed", item_id=item_id, previous_item_id=None))
        send(
            _event(
                type="conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=0,
                transcript="Yes, that is right.",
            )
        )
        self._start_answer()


class ModelLoad:
    """Serves model sessions on 127.0.0.1; `sessions[i]` is the i-th to connect."""

    def __init__(self, mode: str, loop: Loop, delta_ms: int, seed: int, port: int = 0) -> None:
        self.mode = mode
        self.loop = loop
        self.delta_ms = delta_ms
        self.rng = random.Random(seed)
        self.sessions: list[ModelSession] = []
        size = delta_ms * _BYTES_PER_MS[mode]
        self._audio = _SILENCE[mode] * size
        self._plain_delta = binascii.b2a_base64(self._audio, newline=False)
        self._listener = lean_ws.listen(port=port)
        self.url = f"ws://127.0.0.1:{self._listener.getsockname()[1]}/v1/realtime"
        loop.read(self._listener, self._accept)

    def delta_audio(self, number: int) -> bytes:
        """Delta `number`'s base64 audio; stamped with its number in µ-law mode."""
        if self.mode != "pcmu":
            return self._plain_delta
        return binascii.b2a_base64(stamp_frame(self._audio, number), newline=False)

    def _accept(self) -> None:
        accepted = lean_ws.accept(self._listener)
        if accepted is not None:
            session = ModelSession(accepted[0], len(self.sessions), self)
            self.sessions.append(session)
            session.open()
