"""The benchmark's floor: the least a bridge can do, with no Highway in it.

A bare relay on the benchmark's own lean WebSockets (`benchmarks/lean_ws.py`): each Twilio
media payload becomes an `input_audio_buffer.append`, each audio delta a Twilio `media`,
and `speech_started` a `clear`. No JSON parsing of audio messages, no checks, records,
marks, playback tracking or transcoding (in pcm24k mode it relays the 24 kHz audio as it
is). Run against the same harness as Highway, its delays are the harness's own: two socket
hops each way and the two simulators. The benchmark subtracts them to get what Highway adds.

    python benchmarks/relay_floor.py --model-url ws://127.0.0.1:PORT/v1/realtime
"""

from __future__ import annotations

import argparse
import math
import sys
from urllib.parse import urlsplit

import orjson

from benchmarks import lean_ws
from benchmarks.load_loop import Loop

_MEDIA = b'{"event":"media"'
_START = b'{"event":"start"'
_PAYLOAD = b'"payload":"'
_DELTA = b'{"type":"response.output_audio.delta"'
_DELTA_AUDIO = b'"delta":"'
_SPEECH_STARTED = b'{"type":"input_audio_buffer.speech_started"'


def _quoted_after(message: bytes, key: bytes) -> bytes:
    start = message.index(key) + len(key)
    return message[start : message.index(b'"', start)]


class Relay:
    """One call: Twilio's stream and the model's, relayed both ways."""

    def __init__(self, loop: Loop, model: tuple[str, int, str], twilio: lean_ws.Connection):
        self.loop = loop
        self.twilio = twilio
        self.upstream = lean_ws.connect(*model)
        self.stream_sid = b""
        loop.read(twilio.sock, self._from_caller)
        loop.read(self.upstream.sock, self._from_model)
        self._from_model()  # what came with the handshake's answer

    def _from_caller(self) -> None:
        try:
            messages = self.twilio.receive()
        except lean_ws.Closed:
            self._close()
            return
        for message in messages:
            if message.startswith(_MEDIA):
                audio = _quoted_after(message, _PAYLOAD)
                self.upstream.send(b'{"type":"input_audio_buffer.append","audio":"%s"}' % audio)
            elif message.startswith(_START):
                self.stream_sid = orjson.loads(message)["start"]["streamSid"].encode()
                self.upstream.send(b'{"type":"response.create"}')

    def _from_model(self) -> None:
        try:
            messages = self.upstream.receive()
        except lean_ws.Closed:
            self._close()
            return
        for message in messages:
            if message.startswith(_DELTA):
                audio = _quoted_after(message, _DELTA_AUDIO)
                self.twilio.send(
                    b'{"event":"media","streamSid":"%s","media":{"payload":"%s"}}'
                    % (self.stream_sid, audio)
                )
            elif message.startswith(_SPEECH_STARTED):
                self.twilio.send(b'{"event":"clear","streamSid":"%s"}' % self.stream_sid)

    def _close(self) -> None:
        for connection in (self.twilio, self.upstream):
            if connection.sock.fileno() != -1:  # not yet closed here (the peer may have)
                self.loop.forget(connection.sock)
                connection.close()


def main(model_url: str, port: int) -> None:
    parts = urlsplit(model_url)
    model = (parts.hostname or "127.0.0.1", parts.port or 80, f"{parts.path}?{parts.query}")
    loop = Loop()
    listener = lean_ws.listen(port=port)

    def accept() -> None:
        accepted = lean_ws.accept(listener)
        if accepted is not None:
            Relay(loop, model, accepted[0])

    loop.read(listener, accept)
    print(f"listening on {listener.getsockname()[1]}", file=sys.stderr, flush=True)
    loop.run_until(math.inf)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-url", required=True, help="the model's Realtime URL")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    main(f"{args.model_url}?model=floor", args.port)
