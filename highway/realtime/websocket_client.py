"""Opening the WebSocket to the model, with every TCP stream closed whatever happens.

trio-websocket's `open_websocket_url` leaves the TCP socket open when the server refuses
the handshake or closes first (until garbage collection), so Highway opens the stream
itself, wraps it with `wrap_client_stream`, and closes it on the way out.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
import trio_websocket

__all__ = ["open_websocket"]

CLOSE_TIMEOUT_SECONDS = 0.1


@asynccontextmanager
async def open_websocket(
    url: str,
    headers: list[tuple[bytes, bytes]],
    *,
    connect_timeout: float,
    max_message_size: int = 16 * 1024 * 1024,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """Connect to the ws:// or wss:// `url`. On exit, close with 1000 within 0.1 s, then
    close the TCP stream. Raises OSError or trio_websocket.HandshakeError on failure."""
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = host if port in (80, 443) else f"{host}:{port}"
    with trio.fail_after(connect_timeout):
        if secure:
            stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=ssl.create_default_context(), https_compatible=True
            )
        else:
            stream = await trio.open_tcp_stream(host, port)
    try:
        async with _unwrapped_nursery() as nursery:
            with trio.fail_after(connect_timeout):
                connection = await trio_websocket.wrap_client_stream(
                    nursery,
                    stream,  # type: ignore[arg-type]
                    host_header,
                    resource,
                    extra_headers=headers,
                    max_message_size=max_message_size,
                )
            try:
                yield connection
            finally:
                with trio.CancelScope(shield=True):
                    await close_quietly(connection)
                nursery.cancel_scope.cancel()  # the connection's reader task
    except trio.TooSlowError:
        raise trio_websocket.ConnectionTimeout from None
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def close_quietly(connection: trio_websocket.WebSocketConnection) -> None:
    """Close with 1000 within CLOSE_TIMEOUT_SECONDS, whatever state the socket is in."""
    # Exception: trio-websocket #184 (a ping after our Close) and friends.
    with trio.move_on_after(CLOSE_TIMEOUT_SECONDS), contextlib.suppress(Exception):
        await connection.aclose()


@asynccontextmanager
async def _unwrapped_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery whose body's single exception comes out as itself, not in a group: the
    only child is the connection's reader, which does not raise."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
