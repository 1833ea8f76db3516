"""The callers' side of the load: lean simulated Twilio media streams, hundreds per core.

Each call connects as Twilio does (`connected`, `start` with its CallSid), then sends a
20 ms µ-law frame every 20 ms, stamped with its number in the first four samples. Audio
coming back "plays" in real time: a mark is echoed once the audio queued before it has
played, and `clear` drops the rest and echoes every pending mark at once, as Twilio does.
All timing is on the perf_counter clock. `highway.testing.twilio_media` is the full
simulator the tests use; this one does only what the benchmark measures, as cheaply as it
can, so that the harness stays far below the bridge it measures.
"""

from __future__ import annotations

import binascii
from collections import deque
from dataclasses import dataclass, field
from time import perf_counter

import orjson

from benchmarks import lean_ws
from benchmarks.load_loop import Loop
from benchmarks.stamps import read_stamp, stamp_frame
from highway.testing.speech import ULAW_BYTES_PER_MS, ULAW_SILENCE_BYTE
from highway.testing.twilio_media import FRAME_BYTES

__all__ = ["SimulatedCaller"]

FRAME_SECONDS = 0.020
_MEDIA = b'{"event":"media"'
_MARK = b'{"event":"mark"'
_CLEAR = b'{"event":"clear"'
_PAYLOAD = b'"payload":"'
_SILENCE = bytes([ULAW_SILENCE_BYTE]) * FRAME_BYTES
_FRAME = (
    b'{"event":"media","sequenceNumber":"%d","streamSid":"%s","media":{"track":"inbound",'
    b'"chunk":"%d","timestamp":"%d","payload":"%s"}}'
)


@dataclass
class SimulatedCaller:
    """One Twilio media stream and what it saw."""

    connection: lean_ws.Connection
    loop: Loop
    call_sid: str
    stamped: bool  # read stamps from media (µ-law mode: the audio comes back unchanged)
    stream_sid: str = ""
    started_at: float = 0.0
    sent: list[float] = field(default_factory=list)  # frame n was sent at sent[n]
    media: list[float] = field(default_factory=list)
    media_stamps: list[int] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    marks_echoed: int = 0
    _sequence: int = 0
    _played_until: float = 0.0  # when the audio queued so far will have played
    _pending_marks: deque[tuple[float, bytes]] = field(default_factory=deque)
    _stopped: bool = False

    def start(self) -> None:
        """Send `connected` and `start`, and begin sending frames."""
        self.stream_sid = "MZ" + self.call_sid[2:]
        self.loop.read(self.connection.sock, self._read)
        self._read()  # what came with the handshake
        self._send_event({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        start = {
            "streamSid": self.stream_sid,
            "accountSid": "AC" + "0" * 32,
            "callSid": self.call_sid,
            "tracks": ["inbound"],
            "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        self.started_at = perf_counter()
        self._send_event({"event": "start", "streamSid": self.stream_sid, "start": start})
        first = self.started_at + FRAME_SECONDS
        self.loop.at(first, lambda: self._send_frame(first))

    def hang_up(self) -> None:
        """Twilio's `stop`, then a normal close."""
        self._stopped = True
        self._send_event({"event": "stop", "streamSid": self.stream_sid, "stop": {}})
        self.loop.forget(self.connection.sock)
        self.connection.close()

    def _read(self) -> None:
        try:
            messages = self.connection.receive()
        except lean_ws.Closed:
            self.loop.forget(self.connection.sock)
            self.connection.close()
            return
        now = perf_counter()
        for message in messages:
            if message.startswith(_MEDIA):
                self.media.append(now)
                start = message.index(_PAYLOAD) + len(_PAYLOAD)
                end = message.index(b'"', start)
                if self.stamped:
                    head = binascii.a2b_base64(message[start : start + 8])
                    self.media_stamps.append(read_stamp(head))
                seconds = (end - start) * 3 / 4 / ULAW_BYTES_PER_MS / 1000
                self._played_until = max(self._played_until, now) + seconds
            elif message.startswith(_MARK):
                self._on_mark(message)
            elif message.startswith(_CLEAR):
                self.clears.append(now)
                self._played_until = now
                self._echo_marks(clear=True)

    def _on_mark(self, message: bytes) -> None:
        name = orjson.loads(message)["mark"]["name"]
        due = self._played_until
        self._pending_marks.append((due, name.encode()))
        self.loop.at(due, self._echo_marks)

    def _echo_marks(self, clear: bool = False) -> None:
        pending, now = self._pending_marks, perf_counter()
        while pending and (clear or pending[0][0] <= now):
            _, name = pending.popleft()
            self.marks_echoed += 1
            self.connection.send(
                b'{"event":"mark","sequenceNumber":"%d","streamSid":"%s","mark":{"name":"%s"}}'
                % (self._next_sequence(), self.stream_sid.encode(), name)
            )

    def _send_frame(self, due: float) -> None:
        """Send the frame due at `due`, and schedule the next."""
        if self._stopped or self.connection.closed:
            return
        number = len(self.sent)
        payload = binascii.b2a_base64(stamp_frame(_SILENCE, number), newline=False)
        sequence = self._next_sequence()
        self.sent.append(perf_counter())
        self.connection.send(
            _FRAME % (sequence, self.stream_sid.encode(), number + 1, 20 * number, payload)
        )
        # Paced on the schedule, not on when this ran: a late tick does not slow the call.
        following = due + FRAME_SECONDS
        self.loop.at(following, lambda: self._send_frame(following))

    def _send_event(self, event: dict[str, object]) -> None:
        sequence = {"sequenceNumber": str(self._next_sequence())}
        self.connection.send(orjson.dumps({"event": event.pop("event"), **sequence, **event}))

    def _next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence
