"""Redaction for Highway's logs, the last step before a line is rendered.

Redaction (defence in depth: callers already avoid logging these), on the event text and on
every value, looking one level into dicts, lists and tuples:

- Phone numbers: a `+` (or URL-encoded `%2B`) followed by 8 or more digits, and `tel:`/`sip:`
  numbers, become `***` and their last four digits, as `mask_phone` does. Bare digit runs
  are left alone in text, since call IDs, pids, ports and epoch times look the same; under
  keys that name a number (`to`, `from`, `caller`, `called`, `callee`, `to_number`,
  `from_number`, anything with `phone`) bare runs of 7 or more digits are masked too.
- Secrets: values under keys containing `api_key`, `apikey`, `authorization`, `password`,
  `passwd`, `token`, `secret`, `cookie` or `credential` become `[redacted]` (numbers and
  booleans stay, so `output_tokens=12` is kept); in text, `Bearer <anything>`,
  `Authorization: <anything>`, `password=`/`token=`/`api_key=`/`secret=` values and
  `sk-...` keys are redacted, and URL passwords become `***` (`config.redact_url`).
- Audio: values under the keys `payload`, `audio`, `delta` and `media` become
  `[audio omitted]`, bytes become `[<n> bytes]`, and in text a `payload`/`audio`/`delta`
  value and any base64-looking run of 128 or more characters are omitted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from structlog.types import EventDict, WrappedLogger

from highway.config import redact_url

__all__ = ["mask_phone", "redact", "redact_text"]

_MASKED = r"***\g<last4>"
_TEXT_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Audio first, so that the other rules do not spend time inside base64.
    (
        re.compile(r"""(?i)(\b(?:payload|audio|delta)["']?\s*[:=]\s*["']?)[A-Za-z0-9+/]{16,}=*"""),
        r"\1[audio omitted]",
    ),
    (re.compile(r"[A-Za-z0-9+/]{128,}=*"), "[base64 omitted]"),
    # Phone numbers: +E.164 (8+ digits), URL-encoded %2B, tel: and sip: URIs.
    (re.compile(r"(?:\+|%2[Bb])\d{4,}(?P<last4>\d{4})(?!\d)"), _MASKED),
    (
        re.compile(r"(?i)(?P<scheme>\b(?:tel|sips?):)\d{3,}(?P<last4>\d{4})(?!\d)"),
        r"\g<scheme>" + _MASKED,
    ),
    # Credentials.
    (re.compile(r"(?i)\bBearer\s+[^\s\"',;]+"), "Bearer [redacted]"),
    (
        re.compile(
            r"""(?i)(\bauthorization["']?\s*[:=]\s*["']?)(?:(?:basic|bearer|digest|token)\s+)?"""
            r"""[^\s"',;]+"""
        ),
        r"\1[redacted]",
    ),
    (
        re.compile(
            r"(?i)\b(api[_-]?key|auth[_-]?token|access[_-]?token|token|secret|password|passwd)"
            r"=[^\s&\"',;]+"
        ),
        r"\1=[redacted]",
    ),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "sk-[redacted]"),
)
_URL_WITH_USERINFO = re.compile(
    r"""\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@"'<>]*:[^\s/@"'<>]*@[^\s"'<>]*"""
)
_URL_PASSWORD = re.compile(r"(://[^\s/@:]*):[^\s/@]*@")
_BARE_NUMBER = re.compile(r"(?:\+|%2[Bb])?\d{3,}(?P<last4>\d{4})(?!\d)")

_SECRET_KEY_PARTS = (
    "api_key",
    "apikey",
    "authorization",
    "password",
    "passwd",
    "token",
    "secret",
    "cookie",
    "credential",
)
_AUDIO_KEYS = frozenset({"payload", "audio", "delta", "media"})
_PHONE_KEYS = frozenset(
    {"to", "from", "from_", "caller", "called", "callee", "to_number", "from_number"}
)
_REDACTED = "[redacted]"
_AUDIO_OMITTED = "[audio omitted]"
# How far into dicts, lists and tuples redaction looks: the value and its items.
_DEPTH = 1


def _redact_url(match: re.Match[str]) -> str:
    try:
        return redact_url(match.group())
    except ValueError:  # urlsplit refuses, e.g. a bad IPv6 host: mask by pattern instead
        return _URL_PASSWORD.sub(r"\1:***@", match.group())


def redact_text(text: str) -> str:
    """`text` with phone numbers masked and secrets and audio removed (rules above)."""
    for pattern, replacement in _TEXT_RULES:
        text = pattern.sub(replacement, text)
    if "@" in text:
        text = _URL_WITH_USERINFO.sub(_redact_url, text)
    return text


def _key_kind(key: object) -> str | None:
    if not isinstance(key, str):
        return None
    name = key.lower().replace("-", "_")
    if name in _AUDIO_KEYS:
        return "audio"
    if any(part in name for part in _SECRET_KEY_PARTS):
        return "secret"
    if name in _PHONE_KEYS or "phone" in name:
        return "phone"
    return None


def _clean(key: object, value: Any, depth: int) -> Any:
    """`value`, logged under `key`, made safe to log."""
    if value is None or isinstance(value, bool):
        return value
    kind = _key_kind(key)
    if kind == "audio":
        return _AUDIO_OMITTED
    if kind == "secret" and not isinstance(value, int | float):
        return _REDACTED
    if kind == "phone" and isinstance(value, str | int):
        return redact_text(_BARE_NUMBER.sub(_MASKED, str(value)))
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"[{len(value)} bytes]"
    if isinstance(value, Mapping):
        if depth <= 0:
            return redact_text(str(value))
        return {k: _clean(k, v, depth - 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if depth <= 0:
            return redact_text(str(value))
        return [_clean(key, item, depth - 1) for item in value]
    # Anything else (exceptions, enums, datetimes, models) is logged as its text.
    return redact_text(str(value))


def redact(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key, value in event_dict.items():
        if key == "event":
            event_dict[key] = redact_text(value) if isinstance(value, str) else _clean("", value, 0)
        else:
            event_dict[key] = _clean(key, value, _DEPTH)
    return event_dict


def mask_phone(number: str | None) -> str:
    """A phone number for logs: only its last four digits, e.g. '***0123'."""
    if not number:
        return "unknown"
    return "***" + number[-4:] if len(number) > 4 else "***"
