"""The Twilio Media Streams simulator against a tiny stand-in bridge on 127.0.0.1.

The stand-in is a trio-websocket server that checks the handshake signature, records what
the simulator sends, and sends media, marks and clears back when a test tells it to. Tests
synchronise on events, never on sleeps; the two sleeps below make pauses in the caller's
speech, which is what they test.
"""

from __future__ import annotations

import base64
import itertools
import math
import os
import re
import wave
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)
from twilio.request_validator import RequestValidator
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request

import codec
from highway.testing.speech import speech_pcm16, speech_ulaw
from highway.testing.twilio_media import (
    CallClosedError,
    SimulatedCall,
    open_simulated_call,
)
from highway.testing.wav import load_wav_ulaw, write_wav_ulaw

DEADLINE = 5  # seconds per test
AUTH_TOKEN = "test-auth-token-5f0c2a"
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
CALL_SID = "CA" + "1" * 32
STREAM_SID = "MZ" + "2" * 32
PUBLIC_URL = "wss://bridge.example.com/media"
SILENCE = 0xFF
SILENCE_FRAME = bytes([SILENCE]) * 160


@dataclass
class Peer:
    """The bridge's side of one connection: what the simulator sent, as it arrived."""

    ws: WebSocketConnection
    signature: str | None
    texts: list[str] = field(default_factory=list)
    messages: list[dict[str, Any] | None] = field(default_factory=list)  # None: not JSON
    arrivals: list[float] = field(default_factory=list)
    closed: trio.Event = field(default_factory=trio.Event)
    close_code: int | None = None
    _changed: trio.Event = field(default_factory=trio.Event)

    async def read(self) -> None:
        while True:
            try:
                text = await self.ws.get_message()
            except ConnectionClosed as closed:
                self.close_code = closed.reason.code if closed.reason else None
                self.closed.set()
                self._notify()
                return
            assert isinstance(text, str)
            self.texts.append(text)
            self.messages.append(_parse(text))
            self.arrivals.append(trio.current_time())
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m is not None and m.get("event") == kind]

    async def wait_for(self, kind: str, count: int = 1) -> list[dict[str, Any]]:
        await self.wait_until(lambda: len(self.events(kind)) >= count)
        return self.events(kind)

    def inbound_audio(self) -> bytes:
        return b"".join(base64.b64decode(m["media"]["payload"]) for m in self.events("media"))

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_message(orjson.dumps(message).decode())

    async def send_media(self, audio: bytes, sid: str) -> None:
        payload = base64.b64encode(audio).decode()
        await self.send({"event": "media", "streamSid": sid, "media": {"payload": payload}})

    async def send_mark(self, name: str, sid: str) -> None:
        await self.send({"event": "mark", "streamSid": sid, "mark": {"name": name}})


def _parse(text: str) -> dict[str, Any] | None:
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return message if isinstance(message, dict) else None


@dataclass
class Bridge:
    url: str
    peers: trio.MemoryReceiveChannel[Peer]


@asynccontextmanager
async def serve_bridge(
    auth_token: str | None = None, public_url: str | None = None
) -> AsyncIterator[Bridge]:
    """A stand-in bridge; with `auth_token` it refuses (403) a handshake whose signature
    does not match `public_url` (default: its own URL)."""
    send_peer, receive_peer = trio.open_memory_channel[Peer](math.inf)
    url = ""

    async def handler(request: WebSocketRequest) -> None:
        headers = {name.decode().lower(): value.decode() for name, value in request.headers}
        signature = headers.get("x-twilio-signature")
        if auth_token is not None and not RequestValidator(auth_token).validate(
            public_url or url, {}, signature or ""
        ):
            await request.reject(403)
            return
        peer = Peer(await request.accept(), signature)
        send_peer.send_nowait(peer)
        await peer.read()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{server.port}/media"
        yield Bridge(url, receive_peer)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def call_on_bridge(**options: Any) -> AsyncIterator[tuple[SimulatedCall, Peer]]:
    """A simulated call to a fresh stand-in bridge, with the bridge's side of it."""
    with trio.fail_after(DEADLINE):
        async with serve_bridge() as bridge, open_simulated_call(bridge.url, **options) as call:
            yield call, await bridge.peers.receive()


def _open_sockets() -> int:
    fds = os.listdir("/proc/self/fd")
    return sum(1 for fd in fds if _readlink(f"/proc/self/fd/{fd}").startswith("socket:"))


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:  # the listing's own descriptor, gone by now
        return ""


def _frames(peer: Peer) -> list[dict[str, Any]]:
    return [m["media"] for m in peer.events("media")]


# The opening


async def test_connected_then_start_exactly_as_twilio_sends_them():
    options = {
        "call_sid": CALL_SID,
        "stream_sid": STREAM_SID,
        "account_sid": ACCOUNT_SID,
        "custom_parameters": {"lead_id": "42"},
        "continuous": False,
    }
    async with call_on_bridge(**options) as (call, peer):
        await peer.wait_for("start")
        assert call.started_at is not None
    assert peer.messages[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert peer.messages[1] == {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": STREAM_SID,
        "start": {
            "streamSid": STREAM_SID,
            "accountSid": ACCOUNT_SID,
            "callSid": CALL_SID,
            "tracks": ["inbound"],
            "customParameters": {"lead_id": "42"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }


async def test_default_sids_look_like_twilio_ones():
    async with call_on_bridge(continuous=False) as (first, _), call_on_bridge() as (second, _):
        assert re.fullmatch(r"CA[0-9a-f]{32}", first.call_sid)
        assert re.fullmatch(r"MZ[0-9a-f]{32}", first.stream_sid)
        assert first.account_sid == "AC" + "0" * 32
        assert (first.call_sid, first.stream_sid) != (second.call_sid, second.stream_sid)


async def test_without_start_nothing_but_connected_until_send_start():
    async with call_on_bridge(send_start=False) as (call, peer):
        assert call.started_at is None
        await call.send_start()
        await peer.wait_for("media")
        with pytest.raises(RuntimeError):
            await call.send_start()
    assert [m["event"] for m in peer.messages[:3]] == ["connected", "start", "media"]


# The microphone


async def test_media_frames_follow_the_20_ms_clock():
    async with call_on_bridge() as (call, peer):
        media = await peer.wait_for("media", 25)
        assert call.started_at is not None
        started_at = call.started_at
    media = media[:25]
    kinds = [m and m["event"] for m in peer.messages]
    arrivals = [t for t, kind in zip(peer.arrivals, kinds, strict=True) if kind == "media"][:25]
    for n, message in enumerate(media, start=1):
        assert message.keys() == {"event", "sequenceNumber", "streamSid", "media"}
        assert message["sequenceNumber"] == str(n + 1)  # start was 1
        assert message["streamSid"] == call.stream_sid
        frame = message["media"]
        assert frame.keys() == {"track", "chunk", "timestamp", "payload"}
        assert (frame["track"], frame["chunk"], frame["timestamp"]) == (
            "inbound",
            str(n),
            str(20 * n),
        )
        assert base64.b64decode(frame["payload"]) == SILENCE_FRAME
    mean_interval = (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1)
    assert mean_interval == pytest.approx(0.020, abs=0.005)
    # Absolute deadlines: the last frames are not later than a frame behind their slot.
    lateness = [t - started_at - 0.020 * n for n, t in enumerate(arrivals, start=1)]
    assert min(lateness[-5:]) < 0.050, lateness


async def test_said_audio_goes_out_in_order_between_silence():
    async with call_on_bridge() as (call, peer):
        await peer.wait_for("media")
        words = b"\x01" * 160 + b"\x02" * 160 + b"\x03" * 100
        call.say(words)
        await call.wait_said()
        assert call.last_said_at is not None
        expected = words + bytes([SILENCE]) * 60  # the partial frame padded with silence
        await peer.wait_until(lambda: expected + SILENCE_FRAME in peer.inbound_audio())
    audio = peer.inbound_audio()
    start = audio.index(b"\x01")
    assert start % 160 == 0
    assert set(audio[:start]) == {SILENCE}
    assert audio[start : start + 480] == expected
    assert set(audio[start + 480 :]) == {SILENCE}


async def test_say_speech_queues_generated_speech():
    async with call_on_bridge(continuous=False) as (call, peer):
        call.say_speech(100)
        await call.wait_said()
        await peer.wait_for("media", 5)
    assert peer.inbound_audio() == speech_ulaw(100)


async def test_not_continuous_sends_only_said_audio_and_timestamps_skip_pauses():
    async with call_on_bridge(continuous=False) as (call, peer):
        call.say(b"\x01" * 320)
        await call.wait_said()
        await trio.sleep(0.1)  # the caller pauses
        call.say(b"\x02" * 160)
        await call.wait_said()
        await peer.wait_for("media", 3)
    frames = _frames(peer)
    assert [base64.b64decode(f["payload"]) for f in frames] == [
        b"\x01" * 160,
        b"\x01" * 160,
        b"\x02" * 160,
    ]
    assert [f["chunk"] for f in frames] == ["1", "2", "3"]
    timestamps = [int(f["timestamp"]) for f in frames]
    assert timestamps[1] == timestamps[0] + 20
    assert timestamps[2] >= timestamps[1] + 100


async def test_microphone_off_sends_nothing_and_its_clock_runs_on():
    async with call_on_bridge() as (call, peer):
        await peer.wait_for("media")
        call.stop_microphone()
        await trio.sleep(0.1)  # the line goes quiet
        call.start_microphone()

        def gap_seen() -> bool:
            stamps = [int(f["timestamp"]) for f in _frames(peer)]
            return any(b - a >= 100 for a, b in itertools.pairwise(stamps))

        await peer.wait_until(gap_seen)
    chunks = [int(f["chunk"]) for f in _frames(peer)]
    assert chunks == list(range(1, len(chunks) + 1))


# Other caller events


async def test_dtmf_event_raw_and_stop_shapes():
    async with call_on_bridge(stream_sid=STREAM_SID, call_sid=CALL_SID, continuous=False) as (
        call,
        peer,
    ):
        await call.send_dtmf("5")
        await call.send_event({"event": "custom", "foo": 1})
        await call.send_event({"event": "custom", "streamSid": "MZother"})
        await call.send_raw("not json")
        await call.send_stop()
        await peer.wait_for("stop")
    assert peer.messages[2:5] == [
        {
            "event": "dtmf",
            "sequenceNumber": "2",
            "streamSid": STREAM_SID,
            "dtmf": {"track": "inbound_track", "digit": "5"},
        },
        {"event": "custom", "foo": 1, "sequenceNumber": "3", "streamSid": STREAM_SID},
        {"event": "custom", "streamSid": "MZother", "sequenceNumber": "4"},
    ]
    assert peer.texts[5] == "not json"
    assert peer.messages[6] == {
        "event": "stop",
        "sequenceNumber": "5",
        "streamSid": STREAM_SID,
        "stop": {"accountSid": call.account_sid, "callSid": CALL_SID},
    }


async def test_hang_up_sends_stop_then_closes_1000():
    async with call_on_bridge() as (call, peer):
        await peer.wait_for("media")
        await call.hang_up()
        assert call.closed.is_set()
        assert call.close_code == 1000
        await peer.closed.wait()
        # After the close nothing fails, and waiting for what cannot come says so.
        await call.send_dtmf("1")
        with pytest.raises(CallClosedError):
            await call.wait_played(10)
    assert peer.close_code == 1000
    assert peer.messages[-1] is not None and peer.messages[-1]["event"] == "stop"


async def test_disconnect_closes_without_stop():
    async with call_on_bridge() as (call, peer):
        await peer.wait_for("media")
        await call.disconnect()
        await peer.closed.wait()
    assert peer.close_code == 1000
    assert not peer.events("stop")


async def test_leaving_closes_1000_and_leaves_no_socket_open():
    with trio.fail_after(DEADLINE):
        async with serve_bridge() as bridge:
            before = _open_sockets()
            async with open_simulated_call(bridge.url) as call:
                peer = await bridge.peers.receive()
                await peer.wait_for("media")
            await peer.closed.wait()
            assert call.closed.is_set()
            assert peer.close_code == 1000
            assert _open_sockets() == before


async def test_server_close_sets_closed_with_its_code_and_frees_the_socket():
    with trio.fail_after(DEADLINE):
        async with serve_bridge() as bridge:
            before = _open_sockets()
            async with open_simulated_call(bridge.url) as call:
                peer = await bridge.peers.receive()
                await peer.wait_for("media")
                await peer.ws.aclose(4000, "bye")
                await call.wait_closed()
                assert (call.close_code, call.close_reason) == (4000, "bye")
                await call.send_dtmf("1")  # a send after the close is not an error
                with pytest.raises(CallClosedError, match="4000"):
                    await call.wait_received(20)
            assert _open_sockets() == before


# Playback, marks and clear


async def test_marks_echo_when_the_audio_before_them_has_played():
    async with call_on_bridge(continuous=False) as (call, peer):
        await peer.wait_for("start")
        sid = call.stream_sid
        for _ in range(4):
            await peer.send_media(speech_ulaw(100), sid)
        await peer.send_mark("m400", sid)
        await peer.send_media(speech_ulaw(200), sid)
        await peer.send_mark("m600", sid)
        await call.wait_for_mark("m400")
        played_at_echo = call.played_ms
        await call.wait_for_mark("m600")
        assert call.played_ms == call.received_ms == 600
        # With nothing buffered, a mark comes straight back.
        sent_at = trio.current_time()
        await peer.send_mark("now", sid)
        await call.wait_for_mark("now")
        echoes = await peer.wait_for("mark", 3)
    assert 400 <= played_at_echo < 450
    first_audio = call.media_received[0][0]
    (m400, _), (m600, _), (now, _) = call.marks_echoed
    assert (m400 - first_audio) * 1000 == pytest.approx(400, abs=40)
    assert (m600 - first_audio) * 1000 == pytest.approx(600, abs=40)
    assert now - sent_at < 0.050
    assert call.marks_sent_by_server == ["m400", "m600", "now"]
    assert echoes[0] == {
        "event": "mark",
        "sequenceNumber": "2",
        "streamSid": sid,
        "mark": {"name": "m400"},
    }
    assert [e["mark"]["name"] for e in echoes] == ["m400", "m600", "now"]


async def test_clear_drops_unplayed_audio_and_echoes_pending_marks_at_once():
    async with call_on_bridge(continuous=False, record=True) as (call, peer):
        await peer.wait_for("start")
        sid = call.stream_sid
        media_sent_at = trio.current_time()
        await peer.send_media(b"\x01" * 8000, sid)  # 1000 ms
        await peer.send_mark("a", sid)
        await peer.send_media(b"\x01" * 4000, sid)
        await peer.send_mark("b", sid)
        await call.wait_played(300)
        clear_sent_at = trio.current_time()
        await peer.send({"event": "clear", "streamSid": sid})
        seen = await call.wait_for_clear()
        await call.wait_for_mark("b")
        assert call.played_ms == seen.played_ms  # nothing left to play
        assert call.received_ms == 1500
        # Audio after the clear plays from its arrival.
        await peer.send_media(b"\x02" * 800, sid)
        await peer.send_mark("c", sid)
        await call.wait_for_mark("c")
        assert call.played_ms == pytest.approx(seen.played_ms + 100)
        echoes = await peer.wait_for("mark", 3)
        heard = call.heard_ulaw()
    first_audio = call.media_received[0][0]
    assert seen.played_ms == pytest.approx((seen.at - first_audio) * 1000, abs=2)
    assert seen.played_ms == pytest.approx((clear_sent_at - media_sent_at) * 1000, abs=20)
    assert 300 <= seen.played_ms < 400
    (a_at, _), (b_at, _), (c_at, _) = call.marks_echoed
    assert a_at - seen.at < 0.050 and b_at - seen.at < 0.050
    assert (c_at - call.media_received[-1][0]) * 1000 == pytest.approx(100, abs=40)
    assert [e["mark"]["name"] for e in echoes] == ["a", "b", "c"]
    # The earpiece: silence, the played part of the first audio, silence, the second audio.
    assert heard.count(b"\x01") == pytest.approx(seen.played_ms * 8, abs=1)
    assert heard.count(b"\x02") == 800
    assert re.fullmatch(rb"\xff*\x01+\xff*\x02+\xff*", heard)


async def test_wait_played_follows_the_clock():
    async with call_on_bridge(continuous=False) as (call, peer):
        await peer.wait_for("start")
        with pytest.raises(RuntimeError, match="record=True"):
            call.heard_ulaw()
        await peer.send_media(speech_ulaw(200), call.stream_sid)
        await call.wait_received(200)
        await call.wait_played(150)
        assert 150 <= call.played_ms <= 200  # reached, and never past what was received
        assert call.media_received[0][1] == 1600


async def test_protocol_errors_are_recorded_and_the_message_dropped():
    async with call_on_bridge(continuous=False) as (call, peer):
        await peer.wait_for("start")
        sid = call.stream_sid
        await peer.ws.send_message("{not json")
        await peer.send({"event": "play", "streamSid": sid})
        await peer.send({"event": "media", "streamSid": "MZwrong", "media": {"payload": "//8="}})
        await peer.send({"event": "media", "streamSid": sid, "media": {"payload": "@@@"}})
        await peer.send({"event": "media", "streamSid": sid, "media": {}})
        await peer.send({"event": "mark", "streamSid": sid, "mark": {}})
        await peer.ws.send_message(b"\x00\x01")
        await peer.send_mark("sync", sid)
        await call.wait_for_mark("sync")
    errors = call.protocol_errors
    assert len(errors) == 7, errors
    expected = [
        "bad JSON",
        "unknown event 'play'",
        "wrong streamSid",
        "base64",
        "payload",
        "mark.name",
        "binary",
    ]
    for error, words in zip(errors, expected, strict=True):
        assert words in error
    assert call.received_ms == 0
    assert call.marks_sent_by_server == ["sync"]


# The signed handshake


async def test_handshake_signed_with_the_auth_token():
    with trio.fail_after(DEADLINE):
        async with (
            serve_bridge(auth_token=AUTH_TOKEN) as bridge,
            open_simulated_call(bridge.url, auth_token=AUTH_TOKEN, continuous=False),
        ):
            peer = await bridge.peers.receive()
    assert peer.signature == RequestValidator(AUTH_TOKEN).compute_signature(bridge.url, {})


async def test_handshake_signs_the_url_twilio_dialed():
    with trio.fail_after(DEADLINE):
        async with (
            serve_bridge(auth_token=AUTH_TOKEN, public_url=PUBLIC_URL) as bridge,
            open_simulated_call(bridge.url, auth_token=AUTH_TOKEN, signed_url=PUBLIC_URL),
        ):
            peer = await bridge.peers.receive()
    assert peer.signature == RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL, {})


async def test_handshake_with_a_wrong_token_is_refused():
    with trio.fail_after(DEADLINE):
        async with serve_bridge(auth_token=AUTH_TOKEN) as bridge:
            with pytest.raises(ConnectionRejected) as refused:
                async with open_simulated_call(bridge.url, auth_token="wrong"):
                    pass
    assert refused.value.status_code == 403


async def test_no_signature_without_a_token():
    async with call_on_bridge(continuous=False) as (_, peer):
        assert peer.signature is None


async def test_a_ping_after_our_close_does_not_break_hang_up():
    """trio-websocket issue #184: answering a ping after sending Close raises."""

    async def bridge(stream: trio.SocketStream) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        while data := await stream.receive_some():
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, Request):
                    await stream.send_all(ws.send(AcceptConnection()))
                elif isinstance(event, CloseConnection):
                    await stream.send_all(b"\x89\x00")  # an empty ping frame
                    await stream.send_all(ws.send(event.response()))
                    return

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, bridge, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            async with open_simulated_call(f"ws://127.0.0.1:{port}/media") as call:
                await call.hang_up()
                assert call.close_code == 1000
            nursery.cancel_scope.cancel()


# WAV files


def _write_wav(path: Path, pcm: bytes, rate: int, channels: int = 1, width: int = 2) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(pcm)


def _interleave(left: np.ndarray, right: np.ndarray) -> bytes:
    return np.column_stack([left, right]).astype("<i2").tobytes()


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_load_wav_ulaw_resamples_to_8_khz(tmp_path: Path, rate: int):
    path = tmp_path / "speech.wav"
    _write_wav(path, speech_pcm16(500, rate), rate)
    ulaw = load_wav_ulaw(path)
    assert len(ulaw) == 4000
    if rate == 8000:
        assert ulaw == speech_ulaw(500)
    heard = np.frombuffer(codec.ulaw_decode(ulaw), "<i2").astype(float)
    reference = np.frombuffer(speech_pcm16(500, 8000), "<i2").astype(float)
    assert np.corrcoef(heard[40:-40], reference[40:-40])[0, 1] > 0.99  # edges: filter ramp


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_load_wav_ulaw_averages_stereo(tmp_path: Path, rate: int):
    signal = np.frombuffer(speech_pcm16(300, rate), "<i2").astype(np.int32)
    _write_wav(tmp_path / "stereo.wav", _interleave(signal, np.zeros_like(signal)), rate, 2)
    _write_wav(tmp_path / "mono.wav", (signal // 2).astype("<i2").tobytes(), rate)
    assert load_wav_ulaw(tmp_path / "stereo.wav") == load_wav_ulaw(tmp_path / "mono.wav")


def test_load_wav_ulaw_refuses_other_rates_and_widths(tmp_path: Path):
    _write_wav(tmp_path / "cd.wav", speech_pcm16(100, 16000), 11025)
    with pytest.raises(ValueError, match="11025 Hz"):
        load_wav_ulaw(tmp_path / "cd.wav")
    _write_wav(tmp_path / "8bit.wav", bytes(800), 8000, width=1)
    with pytest.raises(ValueError, match="8-bit"):
        load_wav_ulaw(tmp_path / "8bit.wav")
    (tmp_path / "text.wav").write_text("not a wav")
    with pytest.raises(ValueError, match="not a PCM WAV"):
        load_wav_ulaw(tmp_path / "text.wav")


def test_write_wav_ulaw_writes_8_khz_16_bit_mono(tmp_path: Path):
    ulaw = speech_ulaw(300)
    write_wav_ulaw(tmp_path / "heard.wav", ulaw)
    with wave.open(str(tmp_path / "heard.wav"), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        assert wav.readframes(wav.getnframes()) == codec.ulaw_decode(ulaw)
    assert codec.ulaw_decode(load_wav_ulaw(tmp_path / "heard.wav")) == codec.ulaw_decode(ulaw)
