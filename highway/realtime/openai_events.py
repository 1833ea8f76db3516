"""OpenAI Realtime (GA protocol), sans-IO: the client events the bridge sends.

Field names follow `openai.types.realtime`; the tests validate every event built here
against those types with unknown fields forbidden. The per-frame event is built by string
concatenation from base64, which never needs escaping; the rest go through orjson.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

__all__ = [
    "AudioMode",
    "SessionConfig",
    "VoiceActivity",
    "append_audio",
    "assistant_message",
    "function_output",
    "response_create",
    "session_update",
    "truncate",
    "user_message",
]

AudioMode = Literal["pcmu", "pcm24k"]

_FORMATS: dict[str, dict[str, Any]] = {
    "pcmu": {"type": "audio/pcmu"},
    "pcm24k": {"type": "audio/pcm", "rate": 24000},
}
_RESPONSE_CREATE = '{"type":"response.create"}'


@dataclass(frozen=True, slots=True)
class VoiceActivity:
    """Server VAD settings: when the caller has started and stopped speaking."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Everything `session.update` says about one call's agent."""

    instructions: str
    voice: str
    audio_mode: AudioMode
    tools: tuple[dict[str, Any], ...]
    language: str = "en"
    vad: VoiceActivity = VoiceActivity()
    transcription_model: str = "gpt-4o-mini-transcribe"


def session_update(config: SessionConfig) -> str:
    audio_format = _FORMATS[config.audio_mode]
    session = {
        "type": "realtime",
        "instructions": config.instructions,
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": audio_format,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": config.vad.threshold,
                    "prefix_padding_ms": config.vad.prefix_padding_ms,
                    "silence_duration_ms": config.vad.silence_duration_ms,
                    "create_response": True,
                    # The server cancels its answer when the caller talks over it; the
                    # bridge clears Twilio's buffer and truncates the item (see playback).
                    "interrupt_response": True,
                },
                "transcription": {
                    "model": config.transcription_model,
                    "language": config.language,
                },
            },
            "output": {"format": audio_format, "voice": config.voice},
        },
        "tools": list(config.tools),
        "tool_choice": "auto",
    }
    return _dumps({"type": "session.update", "session": session})


def append_audio(payload: str) -> str:
    """`input_audio_buffer.append` for base64 audio in the session's input format."""
    return '{"type":"input_audio_buffer.append","audio":"' + payload + '"}'


def response_create() -> str:
    return _RESPONSE_CREATE


def truncate(item_id: str, audio_end_ms: int) -> str:
    """Cut an assistant item's audio where the caller stopped hearing it."""
    return _dumps(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": audio_end_ms,
        }
    )


def function_output(call_id: str, output: str) -> str:
    return _dumps(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output},
        }
    )


def user_message(text: str) -> str:
    return _message("user", "input_text", text)


def assistant_message(text: str) -> str:
    """An assistant turn as text, to restore a conversation in a new session."""
    return _message("assistant", "output_text", text)


def _message(role: str, content_type: str, text: str) -> str:
    return _dumps(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": role,
                "content": [{"type": content_type, "text": text}],
            },
        }
    )


def _dumps(event: dict[str, Any]) -> str:
    return orjson.dumps(event).decode()
