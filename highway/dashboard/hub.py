"""The event hub: calls publish what happens, dashboards subscribe.

On one worker the hub hands each event straight to its subscribers. When several workers or
hosts share a PostgreSQL database, a relay (see `highway.dashboard.fanout`) carries every
published event through the database to every worker's hub, this one's included, which
then `deliver`s it; so each dashboard sees every call, whichever worker carries it.

Publishing never waits: a subscriber that falls behind is dropped (its dashboard reconnects
and starts again from a fresh snapshot) rather than slowing a call down.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import trio

__all__ = ["EventHub", "FeedInterrupted", "Subscriber"]

log = logging.getLogger(__name__)

DEFAULT_BUFFER = 1000

Event = dict[str, Any]


class FeedInterrupted(Exception):
    """The subscriber missed events: it fell behind, or the relay lost its connection."""


class EventHub:
    def __init__(self, worker: int | None = None) -> None:
        self.worker = worker if worker is not None else os.getpid()
        self._subscribers: set[Subscriber] = set()
        self._relay: Callable[[Event], None] | None = None

    def publish(self, kind: str, call_id: int, **data: Any) -> None:
        """Send `{"type": kind, "callId": call_id, "at": …, "worker": pid, **data}` to
        every subscriber, on every worker."""
        if self._relay is None and not self._subscribers:
            return
        event = {"type": kind, "callId": call_id, "at": _now(), "worker": self.worker, **data}
        if self._relay is not None:
            self._relay(event)
        else:
            self.deliver(event)

    def relay_through(self, relay: Callable[[Event], None] | None) -> None:
        """Send published events to `relay` instead, which brings them back to `deliver`."""
        self._relay = relay

    def deliver(self, event: Event) -> None:
        """Hand `event` to this worker's subscribers."""
        for subscriber in list(self._subscribers):
            subscriber.offer(event)

    def interrupt(self, reason: str) -> None:
        """Tell every subscriber that events were lost (they should start again)."""
        for subscriber in list(self._subscribers):
            subscriber.interrupt(reason)

    @asynccontextmanager
    async def subscribe(self, buffer: int = DEFAULT_BUFFER) -> AsyncIterator[Subscriber]:
        """Receive every event published from now on: `async for event in subscriber`.

        Iteration raises FeedInterrupted if events were lost on the way.
        """
        subscriber = Subscriber(buffer)
        self._subscribers.add(subscriber)
        try:
            yield subscriber
        finally:
            self._subscribers.discard(subscriber)
            subscriber.close()


class Subscriber:
    def __init__(self, buffer: int) -> None:
        self._send, self._receive = trio.open_memory_channel[Event](buffer)
        self.interrupted: str | None = None

    def offer(self, event: Event) -> None:
        if self.interrupted is not None:
            return
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.interrupt("fell behind")
        except trio.ClosedResourceError:
            pass

    def interrupt(self, reason: str) -> None:
        if self.interrupted is None:
            self.interrupted = reason
            self._send.close()

    def close(self) -> None:
        self._send.close()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        async for event in self._receive:
            yield event
        if self.interrupted is not None:
            raise FeedInterrupted(self.interrupted)

    async def receive(self) -> Event:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise FeedInterrupted(self.interrupted or "closed") from None


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
