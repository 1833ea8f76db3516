"""Twilio Media Streams frames: parsing what Twilio sends, building what we send."""

from __future__ import annotations

import json

import pytest

from highway.telephony.media_stream import (
    Connected,
    Dtmf,
    FrameError,
    Mark,
    Media,
    Start,
    Stop,
    TwilioEvent,
    clear_frame,
    mark_frame,
    media_frame,
    parse_frame,
)

STREAM = "MZ0123456789abcdef0123456789abcdef"
ACCOUNT = "AC0123456789abcdef0123456789abcdef"
CALL = "CA0123456789abcdef0123456789abcdef"
START = (
    f'{{"event":"start","sequenceNumber":"1","streamSid":"{STREAM}",'
    f'"start":{{"streamSid":"{STREAM}","accountSid":"{ACCOUNT}","callSid":"{CALL}",'
    '"tracks":["inbound"],'
    '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},'
    '"customParameters":{"lead_id":"42"}}}'
)
TWILIO_SENDS: list[tuple[str, TwilioEvent]] = [
    ('{"event":"connected","protocol":"Call","version":"1.0.0"}', Connected()),
    (START, Start(STREAM, CALL, ACCOUNT, {"lead_id": "42"})),
    (
        f'{{"event":"media","sequenceNumber":"2","streamSid":"{STREAM}",'
        '"media":{"track":"inbound","chunk":"1","timestamp":"20","payload":"//7+/w=="}}',
        Media("//7+/w==", b"\xff\xfe\xfe\xff", 20),
    ),
    (
        f'{{"event":"dtmf","sequenceNumber":"9","streamSid":"{STREAM}",'
        '"dtmf":{"track":"inbound_track","digit":"5"}}',
        Dtmf("5"),
    ),
    (
        f'{{"event":"mark","sequenceNumber":"10","streamSid":"{STREAM}",'
        '"mark":{"name":"resp_1:chunk_7"}}',
        Mark("resp_1:chunk_7"),
    ),
    (
        f'{{"event":"stop","sequenceNumber":"11","streamSid":"{STREAM}",'
        f'"stop":{{"accountSid":"{ACCOUNT}","callSid":"{CALL}"}}}}',
        Stop(),
    ),
]


@pytest.mark.parametrize(("frame", "expected"), TWILIO_SENDS)
def test_twilio_messages_parse_from_text_and_bytes(frame: str, expected: TwilioEvent) -> None:
    assert parse_frame(frame) == expected
    assert parse_frame(frame.encode()) == expected


def test_unknown_fields_are_ignored() -> None:
    frame = '{"event":"mark","future":[1,{"x":null}],"mark":{"name":"m1","extra":true}}'
    assert parse_frame(frame) == Mark("m1")


def _start(**fields: object) -> str:
    return json.dumps({"event": "start", "start": {"streamSid": STREAM, "callSid": CALL, **fields}})


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"streamSid":"MZ1"}', "no event"),
        ('{"event":"hangup"}', "unknown event 'hangup'"),
        ('{"event":"media","media":{"timestamp":"20"}}', "without a payload"),
        ('{"event":"media","media":{"payload":"***"}}', "not valid base64"),
        ('{"event":"media","media":{"payload":"abc"}}', "not valid base64"),
        (
            '{"event":"media","media":{"payload":"AAAA","timestamp":"soon"}}',
            "timestamp is not a number",
        ),
        ('{"event":"start","start":{"callSid":"CA1"}}', "'streamSid'"),
        ('{"event":"start","start":{"streamSid":"MZ1"}}', "'callSid'"),
        (_start(streamSid='MZ1","event":"clear'), "malformed streamSid"),
        (_start(customParameters=["lead_id"]), "customParameters"),
        ('{"event":"mark","mark":{}}', "'name'"),
        ('{"event":"dtmf","dtmf":{"track":"inbound_track"}}', "'digit'"),
        (b"\xff\xfe", "not JSON"),
        (b'{"event":"media","media":null}', "'media' object"),
    ],
)
def test_malformed_frames_raise_frame_error(frame: str | bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        parse_frame(frame)


def test_builders_produce_the_outbound_shapes() -> None:
    assert json.loads(media_frame(STREAM, "//7+/w==")) == {
        "event": "media",
        "streamSid": STREAM,
        "media": {"payload": "//7+/w=="},
    }
    assert json.loads(mark_frame(STREAM, "resp_1:160")) == {
        "event": "mark",
        "streamSid": STREAM,
        "mark": {"name": "resp_1:160"},
    }
    assert json.loads(clear_frame(STREAM)) == {"event": "clear", "streamSid": STREAM}


def test_a_built_media_frame_round_trips_through_the_parser() -> None:
    assert parse_frame(media_frame(STREAM, "//7+/w==")) == Media("//7+/w==", b"\xff\xfe\xfe\xff", 0)


@pytest.mark.parametrize("frame", ['{"event":[]}', '{"event":{"x":1}}'])
def test_an_event_name_that_is_not_a_string_is_a_frame_error(frame: str) -> None:
    with pytest.raises(FrameError, match="unknown event"):
        parse_frame(frame)
