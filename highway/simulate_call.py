"""`highway simulate-call`: ring a running Highway the way Twilio does, and report.

It plays Twilio for an inbound call: POST /twilio/incoming (signed when TWILIO_AUTH_TOKEN
is set, like the server's own settings), opens the media stream the TwiML names, lets the
agent greet, speaks (a WAV file or generated speech) for each turn, hangs up, and prints the
latencies measured and the transcript Highway stored.
"""

from __future__ import annotations

import argparse
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import trio
from twilio.request_validator import RequestValidator

from highway.config import Settings
from highway.testing.speech import speech_ulaw
from highway.testing.twilio_media import CallClosedError, SimulatedCall, open_simulated_call
from highway.testing.wav import load_wav_ulaw, write_wav_ulaw

__all__ = [
    "CALLER_ID",
    "Options",
    "RingingCall",
    "SimulationFailed",
    "highway_client",
    "options_from",
    "ring",
    "simulate_call",
    "talk",
]

_STREAM_URL = re.compile(r'<Stream url="([^"]+)"')
CALLER_ID = "+15005550199"  # the default of --from
# The agent's turn is over when no new audio has come for this long after it played.
QUIET_SECONDS = 0.7


class SimulationFailed(Exception):
    """The simulated call could not be made; one line for the terminal."""


@dataclass(frozen=True, slots=True)
class Options:
    url: str
    caller: str
    turns: int
    speech_ms: int
    wav: Path | None
    save_heard: Path | None
    timeout: float


def options_from(args: argparse.Namespace) -> Options:
    return Options(
        args.url.rstrip("/"),
        args.caller,
        args.turns,
        args.speech_ms,
        args.wav,
        args.save_heard,
        args.timeout,
    )


@dataclass(frozen=True, slots=True)
class RingingCall:
    """A simulated inbound call Highway has answered with TwiML, before its stream opens."""

    call_id: int
    call_sid: str
    signed_url: str  # the stream URL in the TwiML, which Twilio would sign
    local_url: str  # the same path on the Highway we can reach


async def simulate_call(settings: Settings, options: Options) -> str:
    """Run one simulated call; returns the report to print. Raises SimulationFailed."""
    audio = load_wav_ulaw(options.wav) if options.wav else speech_ulaw(options.speech_ms)
    async with highway_client(settings, options.url) as client:
        ringing = await ring(client, settings, options.caller)
        lines = [f"stream: {ringing.local_url}"]
        lines += await talk(
            settings,
            ringing,
            audio,
            turns=options.turns,
            timeout=options.timeout,
            save_heard=options.save_heard,
        )
        lines += await _transcript(client, ringing.call_id)
    return "\n".join(lines)


def highway_client(settings: Settings, url: str) -> httpx.AsyncClient:
    headers = {}
    if settings.api_key is not None:
        headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
    return httpx.AsyncClient(base_url=url, headers=headers, trust_env=False, timeout=10)


async def ring(client: httpx.AsyncClient, settings: Settings, caller: str) -> RingingCall:
    """Call Highway's number from `caller`, as Twilio reports it. Raises SimulationFailed."""
    call_sid = "CA" + uuid.uuid4().hex
    twiml = await _incoming_call(client, settings, _auth_token(settings), call_sid, caller)
    signed_url = _stream_url(twiml)
    call_id = int(signed_url.rstrip("/").rsplit("/", 1)[1])
    return RingingCall(call_id, call_sid, signed_url, _local(signed_url, str(client.base_url)))


async def talk(
    settings: Settings,
    ringing: RingingCall,
    audio: bytes,
    *,
    turns: int,
    timeout: float,
    save_heard: Path | None = None,
) -> list[str]:
    """Open the call's media stream, say `audio` for each of `turns` turns and hang up.

    Returns the report's lines. Raises SimulationFailed past `timeout` seconds.
    """
    lines = []
    with trio.move_on_after(timeout) as deadline:
        async with open_simulated_call(
            ringing.local_url,
            auth_token=_auth_token(settings),
            signed_url=ringing.signed_url,
            call_sid=ringing.call_sid,
            record=save_heard is not None,
        ) as caller:
            try:
                lines += await _converse(caller, audio, turns)
            except CallClosedError:
                lines.append(f"Highway closed the stream (code {caller.close_code})")
            if save_heard:
                write_wav_ulaw(save_heard, caller.heard_ulaw())
                lines.append(f"what the caller heard: {save_heard}")
            await caller.hang_up()
    if deadline.cancelled_caught:
        raise SimulationFailed(f"the call did not finish within {timeout:g} s")
    return lines


def _auth_token(settings: Settings) -> str | None:
    return settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None


async def _incoming_call(
    client: httpx.AsyncClient, settings: Settings, token: str | None, sid: str, caller: str
) -> str:
    form = {"CallSid": sid, "From": caller, "To": settings.twilio_phone_number or "+15005550006"}
    headers = {}
    if token:
        url = settings.public_url + "/twilio/incoming"
        headers["X-Twilio-Signature"] = RequestValidator(token).compute_signature(url, form)
    try:
        response = await client.post("/twilio/incoming", data=form, headers=headers)
    except httpx.HTTPError as error:
        raise SimulationFailed(f"cannot reach Highway at {client.base_url}: {error}") from None
    if response.status_code != 200:
        raise SimulationFailed(f"/twilio/incoming answered {response.status_code}")
    return response.text


def _stream_url(twiml: str) -> str:
    found = _STREAM_URL.search(twiml)
    if found is None:
        raise SimulationFailed("the TwiML has no <Stream url>")
    return found[1].replace("&amp;", "&")


def _local(stream_url: str, base_url: str) -> str:
    """The stream URL Twilio would dial, pointed at the Highway we can reach."""
    stream, base = urlsplit(stream_url), urlsplit(base_url)
    scheme = "wss" if base.scheme == "https" else "ws"
    return urlunsplit((scheme, base.netloc, stream.path, "", ""))


async def _converse(caller: SimulatedCall, audio: bytes, turns: int) -> list[str]:
    assert caller.started_at is not None
    lines = []
    first_audio = await _agent_turn(caller)
    lines.append(f"greeting: first audio {1000 * (first_audio - caller.started_at):.0f} ms")
    for turn in range(1, turns + 1):
        caller.say(audio)
        await caller.wait_said()
        said_at = trio.current_time()
        answered_at = await _agent_turn(caller)
        lines.append(
            f"turn {turn}: spoke {len(audio) // 8} ms; first answer audio"
            f" {1000 * (answered_at - said_at):.0f} ms after the caller stopped"
        )
    return lines


async def _agent_turn(caller: SimulatedCall) -> float:
    """Wait for the agent to speak and finish; returns when its first audio arrived."""
    await caller.wait_received(caller.received_ms + 1)
    first = caller.media_received[-1][0]
    while True:
        received = caller.received_ms
        await caller.wait_played(received)
        with trio.move_on_after(QUIET_SECONDS):
            await caller.wait_received(received + 1)  # more came meanwhile, or comes now
            continue
        return first


async def _transcript(client: httpx.AsyncClient, call_id: int) -> list[str]:
    # The bridge stores the end just after the stream closes; the record says when.
    with trio.move_on_after(5):
        while True:
            response = await client.get(f"/calls/{call_id}")
            if response.status_code != 200:
                return [f"call {call_id}: {response.status_code} {response.text}"]
            call = response.json()
            if call["endedAt"] is not None:
                break
            await trio.sleep(0.1)
    lines = [f"call {call_id}: {call['status']}, {call['endReason']}", "transcript:"]
    names = {"assistant": "agent", "user": "caller"}
    for event in call["events"]:
        if event["kind"] in names:
            lines.append(f"  {names[event['kind']]}: {event['data']['text']}")
        elif event["kind"] == "tool":
            lines.append(f"  tool: {event['data']['name']} -> {event['data']['result']}")
    return lines
