"""Twilio Media Streams, sans-IO: parse the frames Twilio sends, build the ones we send.

See the Media Streams reference: one JSON object per text frame, told apart by "event".
Parsing checks exactly what the bridge relies on and ignores unknown fields, as Twilio
asks. Outbound frames are built by string concatenation from values that cannot need JSON
escaping (base64 and our own mark names), which is several times faster than a JSON
encoder on the per-frame path.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "Connected",
    "Dtmf",
    "FrameError",
    "Mark",
    "Media",
    "Start",
    "Stop",
    "TwilioEvent",
    "clear_frame",
    "mark_frame",
    "media_frame",
    "parse_frame",
]


# A stream SID goes into every outbound frame unescaped, so it must be plain: Twilio's are
# "MZ" and 32 hex digits.
_SID = re.compile(r"[A-Za-z0-9]{2,64}")


class FrameError(ValueError):
    """A frame that is not valid Media Streams JSON; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Connected:
    pass


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Media:
    payload: str  # base64 µ-law, 8 kHz, checked to be valid base64
    audio: bytes  # the decoded payload
    timestamp_ms: int  # since the stream started, by Twilio's clock


@dataclass(frozen=True, slots=True)
class Mark:
    name: str


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class Stop:
    pass


TwilioEvent = Connected | Start | Media | Mark | Dtmf | Stop


def parse_frame(frame: str | bytes) -> TwilioEvent:
    """Parse one text frame from Twilio. Raises FrameError, never anything else."""
    try:
        message = orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise FrameError("not JSON") from None
    if not isinstance(message, dict):
        raise FrameError("not a JSON object")
    event = message.get("event")
    # Media first: it is 50 of every 50-and-a-bit frames.
    if event == "media":
        return _media(_section(message, "media"))
    parse = _PARSERS.get(event) if isinstance(event, str) else None
    if parse is None:
        raise FrameError("no event" if event is None else f"unknown event {event!r}")
    return parse(message)


def _section(message: dict[str, Any], name: str) -> dict[str, Any]:
    value = message.get(name)
    if not isinstance(value, dict):
        raise FrameError(f"{name} event without a {name!r} object")
    return value


def _text(section: dict[str, Any], name: str, event: str) -> str:
    value = section.get(name)
    if not isinstance(value, str) or not value:
        raise FrameError(f"{event} event without {name!r}")
    return value


def _media(media: dict[str, Any]) -> Media:
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise FrameError("media event without a payload")
    try:
        # strict_mode: the payload is forwarded as is, so it must be pure base64.
        audio = binascii.a2b_base64(payload, strict_mode=True)
    except binascii.Error:
        raise FrameError("media payload is not valid base64") from None
    try:
        timestamp = int(media.get("timestamp", 0))
    except (TypeError, ValueError):
        raise FrameError("media timestamp is not a number") from None
    return Media(payload, audio, timestamp)


def _start(message: dict[str, Any]) -> Start:
    start = _section(message, "start")
    parameters = start.get("customParameters") or {}
    if not isinstance(parameters, dict):
        raise FrameError("start event with customParameters that are not an object")
    stream_sid = _text(start, "streamSid", "start")
    if not _SID.fullmatch(stream_sid):
        raise FrameError("start event with a malformed streamSid")
    return Start(
        stream_sid=stream_sid,
        call_sid=_text(start, "callSid", "start"),
        account_sid=str(start.get("accountSid", "")),
        custom_parameters={str(k): str(v) for k, v in parameters.items()},
    )


def _mark(message: dict[str, Any]) -> Mark:
    return Mark(_text(_section(message, "mark"), "name", "mark"))


def _dtmf(message: dict[str, Any]) -> Dtmf:
    return Dtmf(_text(_section(message, "dtmf"), "digit", "dtmf"))


_PARSERS = {
    "connected": lambda _message: Connected(),
    "start": _start,
    "mark": _mark,
    "dtmf": _dtmf,
    "stop": lambda _message: Stop(),
}


def media_frame(stream_sid: str, payload: str) -> str:
    """An outbound `media` frame; `payload` is base64 µ-law."""
    return (
        '{"event":"media","streamSid":"' + stream_sid + '","media":{"payload":"' + payload + '"}}'
    )


def mark_frame(stream_sid: str, name: str) -> str:
    """A `mark` frame; Twilio echoes it once the audio sent before it has played."""
    return '{"event":"mark","streamSid":"' + stream_sid + '","mark":{"name":"' + name + '"}}'


def clear_frame(stream_sid: str) -> str:
    """A `clear` frame: Twilio drops the unplayed audio and echoes every pending mark."""
    return '{"event":"clear","streamSid":"' + stream_sid + '"}'
