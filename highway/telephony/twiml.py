"""TwiML that connects a call to Highway's media stream."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from twilio.twiml.voice_response import Connect, VoiceResponse

# Twilio's media stream WebSocket is always TLS; plain ws:// serves local simulators only.
_WS_SCHEME = {"https": "wss", "http": "ws"}


def stream_url(public_url: str, verification_id: int, call_id: int) -> str:
    """`wss://{public host}/media-stream/{verification}/{callId}`, with no query string:
    Twilio refuses one on a stream URL (per-call values go in <Parameter>s instead)."""
    parts = urlsplit(public_url)
    path = f"{parts.path}/media-stream/{verification_id}/{call_id}"
    return urlunsplit((_WS_SCHEME[parts.scheme], parts.netloc, path, "", ""))


def connect_stream(url: str, parameters: Mapping[str, str]) -> str:
    """A bidirectional stream to `url`; the call hangs up once Highway closes the stream."""
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    response.hangup()
    return str(response)


def busy(message: str) -> str:
    """Say `message` and hang up: the answer when Highway cannot take the call."""
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)
