"""The in-process event hub: calls publish what happens, dashboards subscribe.

Publishing never waits: a subscriber that falls behind misses events (counted in
`missed`) until it catches up, rather than slowing a call down.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import trio

__all__ = ["EventHub"]

log = logging.getLogger(__name__)

DEFAULT_BUFFER = 1000


class EventHub:
    def __init__(self) -> None:
        self._subscribers: set[_Subscriber] = set()
        self.published = 0

    def publish(self, kind: str, call_id: int, **data: Any) -> None:
        """Send `{"type": kind, "callId": call_id, "at": ..., **data}` to every subscriber."""
        self.published += 1
        if not self._subscribers:
            return
        event = {"type": kind, "callId": call_id, "at": _now(), **data}
        for subscriber in self._subscribers:
            subscriber.offer(event)

    @asynccontextmanager
    async def subscribe(self, buffer: int = DEFAULT_BUFFER) -> AsyncIterator[_Subscriber]:
        """Receive every event published from now on: `async for event in subscriber`."""
        subscriber = _Subscriber(buffer)
        self._subscribers.add(subscriber)
        try:
            yield subscriber
        finally:
            self._subscribers.discard(subscriber)
            subscriber.close()


class _Subscriber:
    def __init__(self, buffer: int) -> None:
        self._send, self._receive = trio.open_memory_channel[dict[str, Any]](buffer)
        self.missed = 0

    def offer(self, event: dict[str, Any]) -> None:
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.missed += 1

    def close(self) -> None:
        self._send.close()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._receive.__aiter__()

    async def receive(self) -> dict[str, Any]:
        return await self._receive.receive()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
