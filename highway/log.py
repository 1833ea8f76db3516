"""Highway's logs: structlog, JSON in production and readable lines on a terminal.

Every module keeps its stdlib logger (`logging.getLogger(__name__)`, %-style messages), and
new code may use `structlog.stdlib.get_logger()` with key-values: both, and every other
library's records (Hypercorn's included), go through one structlog pipeline on one root
handler, so they all come out the same way:

    timestamp (ISO, UTC), level, logger, worker (pid), call_id and stream_sid (inside a
    call), the event, any key-values, then a redaction step, then the renderer.

`HIGHWAY_LOG_FORMAT` picks the renderer: `json` (one object a line), `console` (aligned,
coloured on a terminal) or `auto`, which is console when stderr is a terminal and JSON
otherwise (so Docker and systemd get JSON, a developer's terminal readable lines).

Call context: inside `call_log_context(call_id)` every line, whichever task logs it, carries
`call_id`; once `bind_stream_sid` is called, `stream_sid` too (not before: a line from before
Twilio's `start` message has no `stream_sid` key rather than a null one).

Redaction is `highway.log_redaction`'s: phone numbers, secrets and audio never reach a line.

Exceptions are formatted as plain text before redaction (never with local variables).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import Literal, TextIO

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from highway.log_redaction import redact, redact_text

__all__ = [
    "bind_stream_sid",
    "call_log_context",
    "configure_logging",
    "current_log_settings",
]

LogFormat = Literal["auto", "json", "console"]

# --- call context --------------------------------------------------------------------------


class _CallFields:
    """The key-values of one call's log lines, shared by reference by all of its tasks.

    Trio child tasks copy the context when they are spawned, so a ContextVar holding the
    fields themselves would not let a sibling see a stream SID bound later. `fields` is
    replaced, never mutated, so a reader (another thread, say) always sees a whole dict.
    """

    __slots__ = ("fields",)

    def __init__(self, call_id: int) -> None:
        self.fields: dict[str, object] = {"call_id": call_id}


_call: contextvars.ContextVar[_CallFields | None] = contextvars.ContextVar(
    "highway_log_call", default=None
)


@contextlib.contextmanager
def call_log_context(call_id: int) -> Iterator[None]:
    """Inside, every log line carries `call_id`, also from tasks started inside.

    `stream_sid` is added by `bind_stream_sid` once known; lines logged before it have no
    `stream_sid` key. Enter and exit in the same task (a plain `with` block).
    """
    token = _call.set(_CallFields(call_id))
    try:
        yield
    finally:
        _call.reset(token)


def bind_stream_sid(stream_sid: str) -> None:
    """Add `stream_sid` to the current call's log lines, in every task of the call.

    A no-op outside `call_log_context`.
    """
    call = _call.get()
    if call is not None:
        call.fields = {**call.fields, "stream_sid": stream_sid}


def _add_call_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    call = _call.get()
    if call is not None:
        for key, value in call.fields.items():
            event_dict.setdefault(key, value)
    return event_dict


def _add_worker(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict.setdefault("worker", os.getpid())
    return event_dict


# --- rendering -----------------------------------------------------------------------------

_FIRST_KEYS = ("timestamp", "level", "logger", "worker", "call_id", "stream_sid", "event")


def _json_fallback(value: object) -> str:
    return redact_text(str(value))


def _render_json(_: WrappedLogger, __: str, event_dict: EventDict) -> str:
    """One JSON object, its well-known keys first."""
    ordered = {key: event_dict.pop(key) for key in _FIRST_KEYS if key in event_dict}
    ordered.update(event_dict)
    try:
        return orjson.dumps(
            ordered, default=_json_fallback, option=orjson.OPT_NON_STR_KEYS
        ).decode()
    except TypeError:  # e.g. an int beyond 64 bits: the stdlib copes with anything
        return json.dumps(ordered, default=_json_fallback)


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _order_for_console(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """The call's keys first and the worker last (the renderer puts time, level, event and
    logger in their own columns)."""
    ordered = {key: event_dict.pop(key) for key in ("call_id", "stream_sid") if key in event_dict}
    worker = event_dict.pop("worker", None)
    ordered.update(event_dict)
    if worker is not None:
        ordered["worker"] = worker
    return ordered


def _renderers(fmt: str, stream: TextIO) -> list[Processor]:
    if fmt == "json":
        return [_render_json]
    colors = _is_tty(stream) and "NO_COLOR" not in os.environ
    # Exceptions arrive already formatted as text (format_exc_info), so never with locals.
    console = structlog.dev.ConsoleRenderer(
        colors=colors, sort_keys=False, exception_formatter=structlog.dev.plain_traceback
    )
    return [_order_for_console, console]


# --- configuration -------------------------------------------------------------------------

_current: tuple[int, str] | None = None


class _HighwayHandler(logging.StreamHandler):
    """The root handler `configure_logging` installs (so it can replace its own)."""


def _configure_structlog() -> None:
    """structlog loggers hand their events to stdlib logging, which formats everything."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _level_number(level: int | str) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    return number


def resolve_format(fmt: str, stream: TextIO) -> Literal["json", "console"]:
    """`json` or `console` for `fmt` (`auto`: console when `stream` is a terminal)."""
    fmt = fmt.lower()
    if fmt == "auto":
        return "console" if _is_tty(stream) else "json"
    if fmt in ("json", "console"):
        return fmt  # type: ignore[return-value]
    raise ValueError(f"unknown log format {fmt!r}: use auto, json or console")


def configure_logging(
    level: int | str = logging.INFO, fmt: str = "auto", *, stream: TextIO | None = None
) -> None:
    """Send every log record, Highway's and every library's, to `stream` (default stderr).

    `level` is a logging level or its name (`debug`, `info`, `warning`, `error`); `fmt` is
    `json`, `console` or `auto` (console on a terminal, else JSON). Replaces the root
    logger's handlers, so calling it again reconfigures.
    """
    global _current
    stream = sys.stderr if stream is None else stream
    number = _level_number(level)
    resolved = resolve_format(fmt, stream)

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_worker,
            _add_call_context,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            *_renderers(resolved, stream),
        ],
    )
    handler = _HighwayHandler(stream)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        if isinstance(old, _HighwayHandler):
            old.close()
    root.addHandler(handler)
    root.setLevel(number)
    _configure_structlog()
    _current = (number, resolved)


def current_log_settings() -> tuple[int, str]:
    """(level, format) as last configured, for passing to a worker process.

    Before `configure_logging`: the root logger's level and `auto`.
    """
    if _current is None:
        return logging.getLogger().level, "auto"
    return _current


# structlog loggers go through stdlib logging even before configure_logging is called
# (tests, library use), rather than structlog's default of printing to stdout.
_configure_structlog()
