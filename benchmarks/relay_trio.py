"""A bare Trio relay: the least a bridge built on Trio can cost, for reference.

trio-websocket on both sides, and nothing else: each Twilio media payload becomes an
`input_audio_buffer.append`, each audio delta a Twilio `media`, and `speech_started` a
`clear`. No Hypercorn, no Quart, no checks, records, marks, playback tracking or
transcoding; the session is µ-law both ways in every mode. Measured with
`e2e.py --target trio-relay`, its CPU per call is what Trio's scheduling and socket layer
cost before a bridge does any work of its own: the bound under Highway's figures.

    python benchmarks/relay_trio.py --model-url ws://127.0.0.1:PORT/v1/realtime
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import orjson
import trio
import trio_websocket

from highway.realtime import openai_events
from highway.telephony import media_stream

# µ-law both ways in every audio mode: the floor relays, it never transcodes.
_SESSION = openai_events.session_update(
    openai_events.SessionConfig(instructions="floor", voice="marin", audio_mode="pcmu", tools=())
)


async def relay(model_url: str, request: trio_websocket.WebSocketRequest) -> None:
    twilio = await request.accept()
    async with trio_websocket.open_websocket_url(model_url) as model, trio.open_nursery() as tasks:
        stream_sid: list[str] = []
        tasks.start_soon(_to_caller, model, twilio, stream_sid)
        try:
            while True:
                message = orjson.loads(await twilio.get_message())
                if message["event"] == "media":
                    await model.send_message(
                        openai_events.append_audio(message["media"]["payload"])
                    )
                elif message["event"] == "start":
                    stream_sid.append(message["start"]["streamSid"])
                    await model.send_message(openai_events.response_create())
        except trio_websocket.ConnectionClosed:
            tasks.cancel_scope.cancel()


async def _to_caller(
    model: trio_websocket.WebSocketConnection,
    twilio: trio_websocket.WebSocketConnection,
    stream_sid: list[str],
) -> None:
    while True:
        event = orjson.loads(await model.get_message())
        kind = event["type"]
        if kind == "response.output_audio.delta" and stream_sid:
            await twilio.send_message(media_stream.media_frame(stream_sid[0], event["delta"]))
        elif kind == "input_audio_buffer.speech_started" and stream_sid:
            await twilio.send_message(media_stream.clear_frame(stream_sid[0]))


async def main(model_url: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        servers = await nursery.start(
            partial(
                trio_websocket.serve_websocket,
                partial(relay, model_url),
                "127.0.0.1",
                port,
                ssl_context=None,
            )
        )
        print(f"listening on {servers.port}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-url", required=True, help="the model's Realtime URL")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    trio.run(main, f"{args.model_url}?model=floor", args.port)
