"""Plain, readable stdlib logging (structured logging arrives with a later issue)."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """Send every log record to stderr in one format, Hypercorn's included."""
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr, force=True)


def mask_phone(number: str | None) -> str:
    """A phone number for logs: only its last four digits, e.g. '***0123'."""
    if not number:
        return "unknown"
    return "***" + number[-4:] if len(number) > 4 else "***"
