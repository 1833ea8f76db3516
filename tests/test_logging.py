"""Logs: one structlog pipeline for stdlib and structlog loggers, JSON or console, with the
call's ID and stream SID on every line of a call, and phone numbers, secrets and audio
kept out."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
import trio

import highway.log
from highway.config import SettingsError, load_settings
from highway.log import (
    bind_stream_sid,
    call_log_context,
    configure_logging,
    current_log_settings,
)
from highway.log_redaction import mask_phone
from highway.server import hypercorn_config

STREAM_SID = "MZ" + "0123456789abcdef" * 2
CALL_SID = "CA" + "fedcba9876543210" * 2
PHONE = "+14155550123"

stdlib_log = logging.getLogger("highway.test_logging")
struct_log = structlog.stdlib.get_logger("highway.test_logging.structured")

LogTo = Callable[..., io.StringIO]


@pytest.fixture
def log_to(monkeypatch: pytest.MonkeyPatch) -> Iterator[LogTo]:
    """`log_to(fmt, level)` sends all logging to a fresh StringIO and returns it.

    Afterwards Highway's handler is removed and the root level restored (pytest's own
    handlers come back with its next phase).
    """
    root = logging.getLogger()
    level = root.level
    monkeypatch.setattr(highway.log, "_current", highway.log._current)

    def configure(fmt: str = "json", level: int | str = "debug") -> io.StringIO:
        stream = io.StringIO()
        configure_logging(level, fmt, stream=stream)
        return stream

    yield configure
    for handler in root.handlers[:]:
        if isinstance(handler, highway.log._HighwayHandler):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def by_event(stream: io.StringIO) -> dict[str, dict[str, object]]:
    return {str(line["event"]): line for line in json_lines(stream)}


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- the call context ----------------------------------------------------------------------


async def test_every_line_of_a_call_carries_its_id_and_stream_sid_in_every_task(
    log_to: LogTo,
):
    stream = log_to("json")
    stdlib_log.info("before the call")

    with call_log_context(7):
        stdlib_log.info("call accepted")
        sid_known = trio.Event()

        async def reads_twilio() -> None:
            stdlib_log.info("reader started")
            bind_stream_sid(STREAM_SID)
            sid_known.set()

        async def talks_to_the_ai() -> None:
            await sid_known.wait()
            stdlib_log.info("sibling, stdlib")
            struct_log.info("sibling, structlog", turn=1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reads_twilio)
            nursery.start_soon(talks_to_the_ai)
        stdlib_log.info("call ended")

    struct_log.info("after the call")

    lines = by_event(stream)
    for event in ("before the call", "after the call"):
        assert "call_id" not in lines[event]
        assert "stream_sid" not in lines[event]
    # Before Twilio's `start`, the stream SID is not known: the key is absent, not null.
    for event in ("call accepted", "reader started"):
        assert lines[event]["call_id"] == 7
        assert "stream_sid" not in lines[event]
    for event in ("sibling, stdlib", "sibling, structlog", "call ended"):
        assert lines[event]["call_id"] == 7, event
        assert lines[event]["stream_sid"] == STREAM_SID, event
    assert lines["sibling, structlog"]["turn"] == 1


async def test_calls_side_by_side_keep_their_own_context(log_to: LogTo):
    stream = log_to("json")

    async def call(call_id: int, stream_sid: str, bound: trio.Event, other: trio.Event) -> None:
        with call_log_context(call_id):
            bind_stream_sid(stream_sid)
            bound.set()
            await other.wait()  # both calls are live and bound before either logs
            stdlib_log.info("call %d talking", call_id)

    first, second = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, 1, "MZ" + "1" * 32, first, second)
        nursery.start_soon(call, 2, "MZ" + "2" * 32, second, first)

    lines = by_event(stream)
    assert lines["call 1 talking"]["call_id"] == 1
    assert lines["call 1 talking"]["stream_sid"] == "MZ" + "1" * 32
    assert lines["call 2 talking"]["call_id"] == 2
    assert lines["call 2 talking"]["stream_sid"] == "MZ" + "2" * 32


def test_bind_stream_sid_outside_a_call_does_nothing(log_to: LogTo):
    stream = log_to("json")

    bind_stream_sid(STREAM_SID)
    stdlib_log.info("no call")

    (line,) = json_lines(stream)
    assert "stream_sid" not in line
    assert "call_id" not in line


# --- the JSON line -------------------------------------------------------------------------


def test_json_line_has_time_level_logger_worker_and_event(log_to: LogTo):
    stream = log_to("json")

    stdlib_log.warning("call %d to %s placed as %s", 3, "***0123", CALL_SID)

    (line,) = json_lines(stream)
    assert list(line)[:5] == ["timestamp", "level", "logger", "worker", "event"]
    assert str(line["timestamp"]).endswith("Z")  # ISO 8601, UTC
    assert line["level"] == "warning"
    assert line["logger"] == "highway.test_logging"
    assert line["worker"] == os.getpid()
    assert line["event"] == f"call 3 to ***0123 placed as {CALL_SID}"


def test_structlog_positional_arguments_and_key_values(log_to: LogTo):
    stream = log_to("json")

    struct_log.info("call %d ended: %s", 4, "completed", duration_ms=1234)

    (line,) = json_lines(stream)
    assert line["event"] == "call 4 ended: completed"
    assert line["logger"] == "highway.test_logging.structured"
    assert line["duration_ms"] == 1234


def test_stdlib_extra_values_become_keys(log_to: LogTo):
    stream = log_to("json")

    stdlib_log.info("with extra", extra={"attempt": 2})

    (line,) = json_lines(stream)
    assert line["attempt"] == 2


def test_hypercorns_logger_goes_through_the_same_pipeline(log_to: LogTo):
    stream = log_to("json")
    errorlog = hypercorn_config("127.0.0.1", 0).errorlog
    assert isinstance(errorlog, logging.Logger)

    errorlog.info("Running on http://127.0.0.1:8000 (CTRL + C to quit)")

    (line,) = json_lines(stream)
    assert line["logger"] == "hypercorn.error"
    assert line["event"] == "Running on http://127.0.0.1:8000 (CTRL + C to quit)"


def test_an_exception_is_one_json_line_with_its_traceback(log_to: LogTo):
    stream = log_to("json")

    try:
        raise RuntimeError(f"Twilio refused {PHONE}")
    except RuntimeError:
        stdlib_log.exception("placing failed")
    try:
        raise RuntimeError(f"Twilio refused {PHONE}")
    except RuntimeError:
        struct_log.exception("placing failed again")

    lines = by_event(stream)
    assert len(stream.getvalue().splitlines()) == 2
    for event in ("placing failed", "placing failed again"):
        exception = str(lines[event]["exception"])
        assert exception.startswith("Traceback (most recent call last):")
        assert "RuntimeError: Twilio refused ***0123" in exception
        assert PHONE not in exception
        assert lines[event]["level"] == "error"


def test_level_filters_both_kinds_of_logger(log_to: LogTo):
    stream = log_to("json", "WARNING")

    stdlib_log.info("quiet stdlib")
    struct_log.info("quiet structlog")
    stdlib_log.warning("loud stdlib")
    struct_log.error("loud structlog")

    assert list(by_event(stream)) == ["loud stdlib", "loud structlog"]


def test_configuring_again_replaces_the_handler(log_to: LogTo):
    first = log_to("json")
    second = log_to("json")

    stdlib_log.info("once")

    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


# --- console and auto ----------------------------------------------------------------------


def test_console_lines_are_readable_and_carry_the_call(log_to: LogTo):
    stream = log_to("console")

    with call_log_context(7):
        bind_stream_sid(STREAM_SID)
        stdlib_log.info("call %d answered", 7)
        struct_log.info("turn", to=PHONE)

    text = stream.getvalue()
    lines = text.splitlines()
    assert len(lines) == 2
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])
    assert "[info" in lines[0]
    assert "call 7 answered" in lines[0]
    assert "[highway.test_logging]" in lines[0]
    assert f"call_id=7 stream_sid={STREAM_SID}" in lines[0]
    assert "to=***0123" in lines[1]
    assert PHONE not in text
    assert "\x1b[" not in text  # no colours: the stream is not a terminal


def test_console_shows_a_traceback_as_plain_text(log_to: LogTo):
    stream = log_to("console")

    try:
        raise ValueError("bad frame")
    except ValueError:
        stdlib_log.exception("bridge failed")

    text = stream.getvalue()
    assert "bridge failed" in text
    assert "Traceback (most recent call last):" in text
    assert "ValueError: bad frame" in text


def test_auto_is_json_off_a_terminal_and_console_on_one(log_to: LogTo):
    piped = io.StringIO()
    configure_logging("info", "auto", stream=piped)
    stdlib_log.info("piped")
    assert json.loads(piped.getvalue())["event"] == "piped"
    assert current_log_settings() == (logging.INFO, "json")

    terminal = FakeTerminal()
    configure_logging("info", "auto", stream=terminal)
    stdlib_log.info("on a terminal")
    assert "on a terminal" in terminal.getvalue()
    assert not terminal.getvalue().startswith("{")
    assert current_log_settings() == (logging.INFO, "console")


def test_unknown_format_or_level_is_refused(log_to: LogTo):
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml", stream=io.StringIO())
    with pytest.raises(ValueError, match="log level"):
        configure_logging("loud", "json", stream=io.StringIO())


# --- redaction -----------------------------------------------------------------------------


def test_phone_numbers_are_masked_in_messages_and_values(log_to: LogTo):
    stream = log_to("json")

    stdlib_log.info("incoming call from %s to %s", PHONE, "+15005550006")
    struct_log.info(f"dialling {PHONE}", to=PHONE, caller="4155550123", number_of_turns=12)
    stdlib_log.info("webhook url /twilio/status?From=%2B14155550123&To=tel:4155550123")

    text = stream.getvalue()
    assert "5550123" not in text
    lines = by_event(stream)
    assert "incoming call from ***0123 to ***0006" in lines
    structured = lines["dialling ***0123"]
    assert structured["to"] == "***0123" == mask_phone(PHONE)
    assert structured["caller"] == "***0123"  # a bare number under a phone-ish key
    assert structured["number_of_turns"] == 12
    assert "webhook url /twilio/status?From=***0123&To=tel:***0123" in lines


def test_ids_ports_pids_and_times_are_not_mistaken_for_phone_numbers(log_to: LogTo):
    stream = log_to("json")
    message = (
        f"call 12345678901 stream {STREAM_SID} sid {CALL_SID} port 8000 pid 4194301"
        " at 2025-06-01T12:00:00+00:00 epoch 1748779200 took +1500 ms"
    )

    stdlib_log.info(message)
    struct_log.info("values", call_id=12345678901, stream_sid=STREAM_SID, call_sid=CALL_SID)

    lines = by_event(stream)
    assert message in lines
    assert lines["values"]["call_id"] == 12345678901
    assert lines["values"]["stream_sid"] == STREAM_SID
    assert lines["values"]["call_sid"] == CALL_SID


def test_secrets_are_redacted(log_to: LogTo):
    stream = log_to("json")

    struct_log.info(
        "request",
        api_key="hw-key-4f1d9c",
        OPENAI_API_KEY="sk-test-8a7b6c5d",
        auth_token="twilio-token-3e2f1a",
        password="pg-pass-9z8y",
        headers={"Authorization": "Basic QUM6dG9rZW4=", "X-Request": "ok"},
        database="postgresql://highway:pg-pass-9z8y@db.example:5432/highway",
        output_tokens=42,
    )
    stdlib_log.info("sent Authorization: Bearer hw-key-4f1d9c to the API")
    stdlib_log.info("header %s", {"authorization": "Basic QUM6dG9rZW4="})
    stdlib_log.info("connecting to postgresql://highway:pg-pass-9z8y@db.example/highway")
    stdlib_log.info("conninfo host=db password=pg-pass-9z8y; key sk-test-8a7b6c5d")

    text = stream.getvalue()
    for secret in ("hw-key-4f1d9c", "sk-test-8a7b6c5d", "twilio-token-3e2f1a", "pg-pass-9z8y"):
        assert secret not in text
    assert "QUM6dG9rZW4" not in text
    lines = by_event(stream)
    request = lines["request"]
    for key in ("api_key", "OPENAI_API_KEY", "auth_token", "password"):
        assert request[key] == "[redacted]", key
    assert request["headers"] == {"Authorization": "[redacted]", "X-Request": "ok"}
    assert request["database"] == "postgresql://highway:***@db.example:5432/highway"
    assert request["output_tokens"] == 42  # a count, not a secret
    assert "sent Authorization: [redacted] to the API" in lines
    assert "connecting to postgresql://highway:***@db.example/highway" in lines
    assert "conninfo host=db password=[redacted]; key sk-[redacted]" in lines


def test_bearer_tokens_are_redacted_wherever_they_appear(log_to: LogTo):
    stream = log_to("json")

    stdlib_log.info("retrying with Bearer abc.def-123")
    struct_log.info("retry", detail="got bearer xyz")

    lines = by_event(stream)
    assert "retrying with Bearer [redacted]" in lines
    assert lines["retry"]["detail"] == "got Bearer [redacted]"


def test_audio_is_omitted(log_to: LogTo):
    stream = log_to("json")
    base64_audio = "f39/f39/" * 27  # 216 characters: one 20 ms µ-law frame

    struct_log.info(
        "frame",
        payload=base64_audio,
        delta=base64_audio,
        audio=b"\xff" * 160,
        media={"track": "inbound", "payload": base64_audio},
        chunk=b"\x7f" * 320,
    )
    stdlib_log.info("unexpected message %s", {"event": "media", "payload": base64_audio})
    stdlib_log.info("raw %s", base64_audio)

    text = stream.getvalue()
    assert "f39/f39/" not in text
    lines = json_lines(stream)
    frame = lines[0]
    for key in ("payload", "delta", "audio", "media"):
        assert frame[key] == "[audio omitted]", key
    assert frame["chunk"] == "[320 bytes]"
    assert (
        lines[1]["event"] == "unexpected message {'event': 'media', 'payload': '[audio omitted]'}"
    )
    assert lines[2]["event"] == "raw [base64 omitted]"


def test_mask_phone():
    assert mask_phone(PHONE) == "***0123"
    assert mask_phone("123") == "***"
    assert mask_phone(None) == "unknown"


# --- settings ------------------------------------------------------------------------------


def test_log_settings_default_to_auto_and_info(clean_env: Path):
    settings = load_settings()

    assert settings.log_format == "auto"
    assert settings.log_level == "info"


def test_log_settings_are_case_insensitive(clean_env: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HIGHWAY_LOG_FORMAT", "JSON")
    monkeypatch.setenv("HIGHWAY_LOG_LEVEL", "Debug")

    settings = load_settings()

    assert settings.log_format == "json"
    assert settings.log_level == "debug"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "HIGHWAY_LOG_FORMAT",
            "xml",
            "invalid setting HIGHWAY_LOG_FORMAT: Input should be 'auto', 'json' or 'console'",
        ),
        (
            "HIGHWAY_LOG_LEVEL",
            "verbose",
            "invalid setting HIGHWAY_LOG_LEVEL: "
            "Input should be 'debug', 'info', 'warning' or 'error'",
        ),
    ],
)
def test_bad_log_setting_is_one_line(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
):
    monkeypatch.setenv(name, value)

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert str(caught.value) == expected
