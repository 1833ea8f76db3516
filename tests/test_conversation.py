"""The call's state machine, driven directly: events in, actions out, no sockets or clock."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from highway.call.conversation import (
    Action,
    CallEnds,
    Conversation,
    HangUp,
    Record,
    RunTool,
    ToModel,
    ToTwilio,
)
from highway.call.transcript import RESTORED_TURNS, Transcript
from highway.store import EventKind
from highway.telephony.media_stream import Dtmf, Mark, Media, Start, Stop
from highway.testing.realtime_standin import validate_client_event
from highway.testing.speech import speech_pcm16, speech_ulaw

STREAM = "MZ" + "1" * 32
START = Start(stream_sid=STREAM, call_sid="CA" + "2" * 32, account_sid="AC" + "3" * 32)


def model_events(actions: list[Action]) -> list[dict[str, Any]]:
    """The events sent to the model, each checked against the SDK's types (no extras)."""
    return [validate_client_event(a.event) for a in actions if isinstance(a, ToModel)]


def twilio_frames(actions: list[Action]) -> list[dict[str, Any]]:
    return [orjson.loads(a.frame) for a in actions if isinstance(a, ToTwilio)]


def started(mode: str = "pcmu") -> Conversation:
    conversation = Conversation(mode)  # type: ignore[arg-type]
    conversation.twilio_event(START, now=0.0)
    conversation.model_up()
    return conversation


def delta(item: str, ms: int, response: str = "resp_1", mode: str = "pcmu") -> dict[str, Any]:
    audio = speech_ulaw(ms) if mode == "pcmu" else speech_pcm16(ms)
    return {
        "type": "response.output_audio.delta",
        "response_id": response,
        "item_id": item,
        "output_index": 0,
        "content_index": 0,
        "delta": base64.b64encode(audio).decode(),
    }


def speak(conversation: Conversation, item: str, ms: int, now: float) -> list[Action]:
    """A response with one audio item of `ms`, all sent at `now` (faster than real time)."""
    conversation.model_event({"type": "response.created", "response": {"id": "resp_1"}}, now)
    conversation.model_event(
        {
            "type": "response.output_item.added",
            "item": {"id": item, "type": "message", "role": "assistant"},
        },
        now,
    )
    actions: list[Action] = []
    for _ in range(ms // 100):
        actions += conversation.model_event(delta(item, 100), now)
    return actions


def test_the_agent_greets_once_both_sides_are_up_in_either_order() -> None:
    first_model = Conversation("pcmu")
    assert first_model.model_up() == []
    greeting = first_model.twilio_event(START, now=0.0)
    assert model_events(greeting) == [{"type": "response.create"}]

    first_twilio = Conversation("pcmu")
    assert first_twilio.twilio_event(START, now=0.0) == []
    assert model_events(first_twilio.model_up()) == [{"type": "response.create"}]
    # Reconnecting does not greet again.
    first_twilio.model_lost()
    assert first_twilio.model_up() == []


def test_caller_audio_passes_through_in_pcmu_mode() -> None:
    conversation = started("pcmu")
    payload = base64.b64encode(speech_ulaw(20)).decode()
    media = Media(payload, base64.b64decode(payload), 20)
    event = validate_client_event(conversation.caller_audio(media))
    assert event == {"type": "input_audio_buffer.append", "audio": payload}


def test_caller_audio_is_transcoded_to_24k_pcm_in_pcm24k_mode() -> None:
    conversation = started("pcm24k")
    audio = speech_ulaw(20)
    media = Media(base64.b64encode(audio).decode(), audio, 20)
    event = validate_client_event(conversation.caller_audio(media))
    assert len(base64.b64decode(event["audio"])) == 20 * 48  # 480 samples of 16 bits


def test_no_model_means_the_callers_audio_goes_nowhere() -> None:
    conversation = Conversation("pcmu")
    conversation.twilio_event(START, now=0.0)
    audio = speech_ulaw(20)
    assert conversation.caller_audio(Media(base64.b64encode(audio).decode(), audio, 0)) is None


@pytest.mark.parametrize("mode", ["pcmu", "pcm24k"])
def test_model_audio_goes_to_twilio_followed_by_marks(mode: str) -> None:
    conversation = started(mode)
    actions = conversation.model_event(delta("item_a", 100, mode=mode), now=0.0)
    media, mark = twilio_frames(actions)
    assert media["event"] == "media" and media["streamSid"] == STREAM
    assert len(base64.b64decode(media["media"]["payload"])) == 800  # 100 ms of µ-law
    assert mark == {"event": "mark", "streamSid": STREAM, "mark": {"name": "item_a:100"}}


def test_barge_in_clears_then_truncates_at_what_was_heard() -> None:
    conversation = started()
    speak(conversation, "item_a", 2000, now=1.0)
    # Marks up to 400 ms came back; the caller speaks 30 ms after the 400 ms mark.
    for position in (100, 200, 300, 400):
        conversation.twilio_event(Mark(f"item_a:{position}"), now=1.0 + position / 1000)
    actions = conversation.model_event({"type": "input_audio_buffer.speech_started"}, now=1.43)

    assert twilio_frames(actions) == [{"event": "clear", "streamSid": STREAM}]
    assert isinstance(actions[0], ToTwilio)  # the clear goes before the truncate
    assert model_events(actions) == [
        {
            "type": "conversation.item.truncate",
            "item_id": "item_a",
            "content_index": 0,
            "audio_end_ms": 430,
        }
    ]
    # Marks flushed by the clear and late audio of the interrupted answer are ignored.
    assert conversation.twilio_event(Mark("item_a:2000"), now=1.431) == []
    assert conversation.model_event(delta("item_a", 100), now=1.44) == []
    assert conversation.barge_ins == 1


def test_no_clear_and_no_truncate_when_nothing_is_playing() -> None:
    conversation = started()
    assert conversation.model_event({"type": "input_audio_buffer.speech_started"}, 0.0) == []
    speak(conversation, "item_a", 200, now=0.0)
    conversation.model_event({"type": "response.output_audio.done", "item_id": "item_a"}, 0.0)
    conversation.twilio_event(Mark("item_a:100"), now=0.1)
    conversation.twilio_event(Mark("item_a:200"), now=0.2)
    assert conversation.model_event({"type": "input_audio_buffer.speech_started"}, 0.3) == []


def test_after_the_model_reconnects_old_audio_is_cleared_but_not_truncated() -> None:
    conversation = started()
    speak(conversation, "item_old", 1000, now=0.0)
    conversation.model_lost()
    conversation.model_up()
    actions = conversation.model_event({"type": "input_audio_buffer.speech_started"}, 0.2)
    assert twilio_frames(actions) == [{"event": "clear", "streamSid": STREAM}]
    assert model_events(actions) == []


def function_call(name: str, arguments: str = "{}") -> dict[str, Any]:
    return {
        "type": "response.function_call_arguments.done",
        "response_id": "resp_1",
        "item_id": "item_fc",
        "output_index": 1,
        "call_id": "call_1",
        "name": name,
        "arguments": arguments,
    }


def test_a_tool_call_runs_and_the_model_goes_on_after_its_response() -> None:
    conversation = started()
    conversation.model_event({"type": "response.created", "response": {"id": "resp_1"}}, 0.0)
    actions = conversation.model_event(function_call("confirm_field", '{"field":"dob"}'), 0.0)
    assert actions == [RunTool("call_1", "confirm_field", '{"field":"dob"}')]

    # The tool finishes before the response does: the new response waits for it.
    done = conversation.tool_done("call_1", '{"status":"confirmed"}', hang_up=None)
    assert model_events(done) == [
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": "call_1",
                "output": '{"status":"confirmed"}',
            },
        }
    ]
    after = conversation.model_event({"type": "response.done", "response": {}}, 0.1)
    assert model_events(after) == [{"type": "response.create"}]


def test_end_call_hangs_up_only_once_the_goodbye_has_played() -> None:
    conversation = started()
    speak(conversation, "item_bye", 300, now=0.0)
    conversation.model_event({"type": "response.output_audio.done", "item_id": "item_bye"}, 0.0)
    conversation.model_event(function_call("end_call", '{"reason":"done"}'), 0.0)
    done = conversation.tool_done("call_1", '{"ok":true}', hang_up="done")
    assert not any(isinstance(a, HangUp) for a in done)
    assert [e["type"] for e in model_events(done)] == ["conversation.item.create"]
    assert conversation.model_event({"type": "response.done", "response": {}}, 0.01) == []
    assert conversation.twilio_event(Mark("item_bye:200"), now=0.2) == []
    assert conversation.twilio_event(Mark("item_bye:300"), now=0.3) == [HangUp("done")]


def test_end_call_with_nothing_playing_hangs_up_when_the_response_ends() -> None:
    conversation = started()
    conversation.model_event({"type": "response.created", "response": {"id": "resp_1"}}, 0.0)
    conversation.tool_done("call_1", "{}", hang_up="bye")
    actions = conversation.model_event({"type": "response.done", "response": {}}, 0.0)
    assert actions == [HangUp("bye")]


def test_dtmf_is_recorded_and_told_to_the_model() -> None:
    conversation = started()
    actions = conversation.twilio_event(Dtmf("5"), now=0.0)
    assert actions[0] == Record(EventKind.DTMF, {"digit": "5"})
    assert model_events(actions) == [
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "The caller pressed 5 on the keypad."}],
            },
        },
        {"type": "response.create"},
    ]


def test_stop_ends_the_call() -> None:
    assert started().twilio_event(Stop(), now=0.0) == [CallEnds("caller_hung_up")]


def test_transcripts_are_recorded_in_speaking_order() -> None:
    conversation = started()
    conversation.model_event({"type": "input_audio_buffer.committed", "item_id": "item_u"}, 0)
    speak(conversation, "item_a", 100, now=0.0)
    # The agent's words are final before the caller's transcription arrives.
    early = conversation.model_event(
        {
            "type": "response.output_audio_transcript.done",
            "item_id": "item_a",
            "transcript": "Thanks!",
        },
        0.1,
    )
    assert early == []
    late = conversation.model_event(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "item_u",
            "transcript": "It is 1815.",
        },
        0.2,
    )
    assert late == [
        Record(EventKind.USER, {"text": "It is 1815.", "itemId": "item_u"}),
        Record(EventKind.ASSISTANT, {"text": "Thanks!", "itemId": "item_a"}),
    ]
    assert [turn.role for turn in conversation.transcript.history] == ["user", "assistant"]


def test_a_failed_transcription_does_not_hold_up_the_rest() -> None:
    conversation = started()
    conversation.model_event({"type": "input_audio_buffer.committed", "item_id": "item_u"}, 0)
    conversation.model_event(
        {
            "type": "response.output_item.added",
            "item": {"id": "item_a", "type": "message", "role": "assistant"},
        },
        0,
    )
    conversation.model_event(
        {
            "type": "response.output_audio_transcript.done",
            "item_id": "item_a",
            "transcript": "Hello?",
        },
        0,
    )
    actions = conversation.model_event(
        {"type": "conversation.item.input_audio_transcription.failed", "item_id": "item_u"}, 0
    )
    assert actions == [Record(EventKind.ASSISTANT, {"text": "Hello?", "itemId": "item_a"})]


def test_a_barge_in_is_recorded_with_where_the_agent_was_cut() -> None:
    conversation = started()
    speak(conversation, "item_a", 1000, now=0.0)
    actions = conversation.model_event({"type": "input_audio_buffer.speech_started"}, now=0.25)
    assert actions[-1] == Record(
        EventKind.INTERRUPTION, {"itemId": "item_a", "heardMs": 250, "truncated": True}
    )


def test_the_transcript_keeps_the_latest_turns_to_restore_and_no_more() -> None:
    transcript = Transcript()
    for n in range(RESTORED_TURNS + 20):
        transcript.settle("user", f"item_{n}", f"turn {n}")
    assert len(transcript.history) == RESTORED_TURNS
    assert transcript.history[0].text == "turn 20"
    assert transcript.history[-1].text == f"turn {RESTORED_TURNS + 19}"
