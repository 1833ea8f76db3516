"""OpenAI Realtime client events: every builder's output is a valid GA event, strictly checked."""

from __future__ import annotations

from typing import Any

import pytest

from highway.call.tools import TOOLS
from highway.realtime.openai_events import (
    AudioMode,
    SessionConfig,
    VoiceActivity,
    append_audio,
    assistant_message,
    function_output,
    response_create,
    session_update,
    truncate,
    user_message,
)
from highway.testing.realtime_standin import InvalidEvent, validate_client_event

INSTRUCTIONS = 'You verify details. Say "hello" first.\nBe brief.'


def _message(role: str, content_type: str, text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": role,
            "content": [{"type": content_type, "text": text}],
        },
    }


@pytest.mark.parametrize(
    ("mode", "audio_format"),
    [("pcmu", {"type": "audio/pcmu"}), ("pcm24k", {"type": "audio/pcm", "rate": 24000})],
)
def test_session_update_puts_the_config_in_the_ga_places(
    mode: AudioMode, audio_format: dict[str, Any]
) -> None:
    config = SessionConfig(
        instructions=INSTRUCTIONS,
        voice="marin",
        audio_mode=mode,
        tools=TOOLS,
        language="de",
        vad=VoiceActivity(threshold=0.7, prefix_padding_ms=200, silence_duration_ms=800),
    )
    event = validate_client_event(session_update(config))
    assert event["type"] == "session.update"
    session = event["session"]
    assert session["type"] == "realtime"
    assert session["instructions"] == INSTRUCTIONS
    assert session["output_modalities"] == ["audio"]
    assert session["tools"] == list(TOOLS)
    audio_in, audio_out = session["audio"]["input"], session["audio"]["output"]
    assert audio_in["format"] == audio_out["format"] == audio_format
    assert audio_in["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.7,
        "prefix_padding_ms": 200,
        "silence_duration_ms": 800,
        "create_response": True,
        "interrupt_response": True,
    }
    assert audio_in["transcription"]["language"] == "de"
    assert audio_out["voice"] == "marin"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (append_audio("//7+/w=="), {"type": "input_audio_buffer.append", "audio": "//7+/w=="}),
        (response_create(), {"type": "response.create"}),
        (
            truncate("item_123", 1480),
            {
                "type": "conversation.item.truncate",
                "item_id": "item_123",
                "content_index": 0,
                "audio_end_ms": 1480,
            },
        ),
        (
            function_output("call_abc", '{"ok": true}'),
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "function_call_output",
                    "call_id": "call_abc",
                    "output": '{"ok": true}',
                },
            },
        ),
        (user_message('Say "hi"'), _message("user", "input_text", 'Say "hi"')),
        (assistant_message("Grüß Gott.\n"), _message("assistant", "output_text", "Grüß Gott.\n")),
    ],
)
def test_builders_validate_with_the_expected_fields(message: str, expected: dict[str, Any]) -> None:
    assert validate_client_event(message) == expected


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ('{"type":"input_audio_buffer.append","audio":"AAAA","bogus":1}', "unknown_parameter"),
        (
            '{"type":"session.update",'
            '"session":{"modalities":["audio"],"input_audio_format":"g711_ulaw"}}',
            "missing_required_parameter",  # GA needs session.type; beta never sent it
        ),
    ],
)
def test_the_validator_refuses_extra_fields_and_beta_events(message: str, code: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        validate_client_event(message)
    assert refused.value.code == code


def test_tools_are_the_three_functions_with_required_parameters() -> None:
    assert [tool["name"] for tool in TOOLS] == ["confirm_field", "finish_verification", "end_call"]
    for tool in TOOLS:
        assert tool["type"] == "function"
        schema = tool["parameters"]
        assert schema["type"] == "object"
        assert schema["required"]
        assert set(schema["required"]) <= schema["properties"].keys()


def test_finish_verification_cannot_report_unreachable() -> None:
    (tool,) = (tool for tool in TOOLS if tool["name"] == "finish_verification")
    outcomes = tool["parameters"]["properties"]["outcome"]["enum"]
    assert "unreachable" not in outcomes
    assert set(outcomes) == {"verified", "mismatch", "incomplete", "declined"}
