"""The agent for one call: its instructions and session settings, from the verification."""

from __future__ import annotations

from highway.call.tools import TOOLS
from highway.config import Settings
from highway.realtime.openai_events import SessionConfig, VoiceActivity
from highway.store import Verification

__all__ = ["agent_session"]

_NO_VERIFICATION = (
    "You are Highway, a phone assistant. There is nothing to verify for this caller. Greet"
    " them, say politely that there is nothing pending for them and that they may hang up,"
    " then say goodbye and call end_call."
)


def agent_session(settings: Settings, verification: Verification | None) -> SessionConfig:
    """The session for a call about `verification` (None: the default inbound agent)."""
    language = verification.language if verification else "en"
    return SessionConfig(
        instructions=instructions(verification),
        voice=(verification.voice if verification else None) or settings.voice,
        audio_mode=settings.audio_mode,
        tools=TOOLS,
        language=language,
        vad=VoiceActivity(
            threshold=settings.vad_threshold,
            prefix_padding_ms=settings.vad_prefix_padding_ms,
            silence_duration_ms=settings.vad_silence_ms,
        ),
    )


def instructions(verification: Verification | None) -> str:
    """What the model is told. It lists the details to confirm but never their values, so
    the model cannot read them out to whoever answers the phone."""
    if verification is None:
        return _NO_VERIFICATION
    lines = [
        f"You are Highway, a polite phone agent. You are calling {verification.customer_name}"
        f" to verify their details for: {verification.purpose}.",
        f"Speak only in the language with code '{verification.language}'. Be brief.",
        "Greet the customer by name and say why you are calling. Then ask them to state each"
        " detail below, one at a time. Never say or hint at the value on file.",
        "After the customer states a detail, call confirm_field with the detail's name and"
        " the value as they said it (dates as YYYY-MM-DD). If it is a mismatch, ask once"
        " more, then move on.",
        "When every detail is confirmed, or the customer cannot or will not go on, call"
        " finish_verification with the outcome. Then say goodbye and call end_call.",
        "Details:",
    ]
    for field in verification.fields:
        done = "" if field.status == "pending" else f" (already {field.status})"
        lines.append(f"- {field.name}{done}")
    if verification.instructions:
        lines.append(f"Also: {verification.instructions}")
    return "\n".join(lines)
