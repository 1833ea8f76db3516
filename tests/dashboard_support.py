"""Shared parts of the dashboard, capacity and metrics tests: a dashboard client on
`WS /dashboard/events`, raw HTTP for paths a client library would normalise, and the
Prometheus text of `GET /metrics` parsed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from tests.api_support import API_KEY

# Generous: the machine running the tests may be busy.
WAIT_SECONDS = 10
# Closing waits for the server's Close frame; a server that never answers must not hang us.
CLOSE_SECONDS = 2

Event = dict[str, Any]


@asynccontextmanager
async def dashboard_socket(
    base_url: str, *, authorization: str | None = None, origin: str | None = None
) -> AsyncIterator[WebSocketConnection]:
    """A bare WebSocket on the event stream, with those `Authorization` and `Origin`
    headers if given, and nothing sent yet. Leaving closes it (1000) if the server has not."""
    headers = [(b"Authorization", authorization.encode())] if authorization else []
    headers += [(b"Origin", origin.encode())] if origin else []
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(WAIT_SECONDS):
        stream = await trio.open_tcp_stream(host, int(port))
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(WAIT_SECONDS):
                ws = await wrap_client_stream(
                    nursery, stream, f"{host}:{port}", "/dashboard/events", extra_headers=headers
                )
            try:
                yield ws
            finally:
                with trio.move_on_after(CLOSE_SECONDS):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        # trio-websocket leaves a client's TCP stream open when the server closed first.
        await trio.aclose_forcefully(stream)


async def first_answer(ws: WebSocketConnection) -> Event | tuple[int, str | None]:
    """The first message the server sends (parsed), or (code, reason) if it closes instead."""
    with trio.fail_after(WAIT_SECONDS):
        try:
            message: Event = orjson.loads(await ws.get_message())
        except ConnectionClosed as closed:
            return closed.reason.code, closed.reason.reason
    return message


class Dashboard:
    """A dashboard connected and authorised: its snapshot, and every event after it,
    collected in the background for tests to wait on."""

    def __init__(self, ws: WebSocketConnection, snapshot: Event) -> None:
        self.ws = ws
        self.snapshot = snapshot
        self.events: list[Event] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed = trio.Event()
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                self.events.append(orjson.loads(await self.ws.get_message()))
                self._notify()
        except ConnectionClosed as closed:
            self.close_code, self.close_reason = closed.reason.code, closed.reason.reason
            self.closed.set()
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def of_call(self, call_id: int) -> list[Event]:
        """The events received so far for Highway's call `call_id`, in order."""
        return [event for event in self.events if event["callId"] == call_id]

    def of(self, kind: str, call_id: int) -> list[Event]:
        return [event for event in self.of_call(call_id) if event["type"] == kind]

    async def wait_for(self, kind: str, call_id: int, count: int = 1) -> Event:
        """Wait (at most WAIT_SECONDS) for the `count`-th event of `kind` for the call."""
        with trio.fail_after(WAIT_SECONDS):
            while len(found := self.of(kind, call_id)) < count:
                if self.closed.is_set():
                    raise AssertionError(f"closed ({self.close_code}) before {kind} came")
                await self._changed.wait()
        return found[count - 1]

    async def wait_for_count(self, count: int) -> None:
        """Wait (at most WAIT_SECONDS) until `count` events have come, whatever they are."""
        with trio.fail_after(WAIT_SECONDS):
            while len(self.events) < count and not self.closed.is_set():
                await self._changed.wait()

    async def wait_closed(self) -> tuple[int | None, str | None]:
        """Wait (at most WAIT_SECONDS) for the server to close the stream: (code, reason)."""
        with trio.fail_after(WAIT_SECONDS):
            await self.closed.wait()
        return self.close_code, self.close_reason


@asynccontextmanager
async def open_dashboard(
    base_url: str, *, api_key: str | None = API_KEY, by_header: bool = False
) -> AsyncIterator[Dashboard]:
    """A dashboard on the Highway at `base_url`, authorised as the page does it (the key in
    a first `auth` message; an empty key when `api_key` is None), or by the header. Yields
    once the snapshot has come."""
    async with (
        dashboard_socket(base_url, authorization=f"Bearer {api_key}" if by_header else None) as ws,
        trio.open_nursery() as nursery,
    ):
        if not by_header:
            await ws.send_message(orjson.dumps({"type": "auth", "apiKey": api_key or ""}).decode())
        snapshot = await first_answer(ws)
        assert isinstance(snapshot, dict), f"closed instead of a snapshot: {snapshot}"
        assert snapshot["type"] == "snapshot"
        dashboard = Dashboard(ws, snapshot)
        await nursery.start(dashboard.run)
        yield dashboard
        nursery.cancel_scope.cancel()


async def raw_get(base_url: str, target: str) -> tuple[int, str | None]:
    """The status and Location of `GET target`, sent byte for byte as given: no client
    normalises the path (httpx would resolve `..` before sending it)."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    request = f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    with trio.fail_after(WAIT_SECONDS):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(request.encode())
            answer = b""
            while b"\r\n\r\n" not in answer and (chunk := await stream.receive_some()):
                answer += chunk
    status_line, *header_lines = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    location = next((v for k, v in headers.items() if k.lower() == "location"), None)
    return int(status_line.split()[1]), location


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient, base_url: str) -> Samples:
    """`GET /metrics` parsed: every sample's value by its name and labels."""
    response = await client.get(f"{base_url}/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; KeyError if the scrape had no such sample."""
    return samples[name, frozenset(labels.items())]
