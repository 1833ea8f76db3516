"""Full calls through the real server over real sockets: Twilio's side simulated, OpenAI's
stood in for, Twilio's REST API stood in for, the database real."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from highway.testing.realtime_standin import Reply
from highway.testing.twilio_rest import TwilioRestStandIn
from tests.bridge_support import Bridge, running_bridge

GREETING = Reply(text="Hello Ada, this is Highway.", audio_ms=600)
ANSWER = Reply(text="Thank you.", audio_ms=400)


@pytest.fixture
async def bridge(
    clean_env: Path, tmp_path: Path, twilio: TwilioRestStandIn
) -> AsyncIterator[Bridge]:
    async with running_bridge(
        f"sqlite:///{tmp_path / 'highway.db'}", twilio, replies=[GREETING, ANSWER]
    ) as running:
        yield running


@pytest.mark.parametrize("audio_mode", ["pcmu", "pcm24k"])
async def test_greeting_and_turn_taking(
    clean_env: Path, database_url: str, twilio: TwilioRestStandIn, audio_mode: str
) -> None:
    async with running_bridge(
        database_url, twilio, replies=[GREETING, ANSWER], HIGHWAY_AUDIO_MODE=audio_mode
    ) as bridge:
        call = await bridge.place_call()
        async with bridge.dial(call) as caller:
            model = await bridge.model_session()
            with trio.fail_after(5):
                await caller.wait_played(600)  # the whole greeting, before anyone spoke
            caller.say_speech(600)
            with trio.fail_after(5):
                await caller.wait_received(1000)  # the answer to the caller's turn
                await caller.wait_played(1000)
            await caller.hang_up()
            hung_up_at = trio.current_time()
            with trio.fail_after(2):
                await model.closed.wait()
        record = await bridge.ended_call(call.call_id)

    # The upstream closed within 100 ms of the caller hanging up.
    assert model.closed_at is not None
    assert model.closed_at - hung_up_at < 0.1
    # Configured from the verification, in the audio mode asked for; nothing invalid sent.
    assert model.invalid_events == []
    assert model.client_events[0]["type"] == "session.update"
    session = model.client_events[0]["session"]
    fmt = {"pcmu": {"type": "audio/pcmu"}, "pcm24k": {"type": "audio/pcm", "rate": 24000}}
    assert session["audio"]["input"]["format"] == fmt[audio_mode]
    assert session["audio"]["output"]["format"] == fmt[audio_mode]
    assert session["audio"]["output"]["voice"] == "marin"
    detection = session["audio"]["input"]["turn_detection"]
    assert detection["type"] == "server_vad" and detection["interrupt_response"] is True
    assert session["audio"]["input"]["transcription"]["language"] == "en"
    assert {tool["name"] for tool in session["tools"]} == {
        "confirm_field",
        "finish_verification",
        "end_call",
    }
    assert "Ada Lovelace" in session["instructions"]
    assert "date_of_birth" in session["instructions"]
    assert "1815" not in session["instructions"]  # the values on file stay secret
    # The agent greeted first: response.create before any caller audio was committed.
    kinds = [event["type"] for event in model.client_events]
    assert kinds.index("response.create") < kinds.index("input_audio_buffer.append")

    assert record["status"] == "completed"
    assert record["endReason"] == "caller_hung_up"
    assert record["streamSid"] == caller.stream_sid
    assert record["answeredAt"] is not None and record["durationSeconds"] is not None
    transcript = [(e["kind"], e["data"]["text"]) for e in record["events"] if e["kind"] != "status"]
    assert transcript == [
        ("assistant", GREETING.text),
        ("user", "(speech)"),
        ("assistant", ANSWER.text),
    ]
    statuses = [e["data"]["status"] for e in record["events"] if e["kind"] == "status"]
    assert statuses.count("completed") == 1  # finalised exactly once
