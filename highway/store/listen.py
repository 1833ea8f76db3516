"""PostgreSQL LISTEN on a dedicated connection, read by Trio without a thread.

psycopg's own `notifies()` blocks (or needs asyncio), so the Trio task waits for the
connection's socket to be readable and then lets libpq parse what arrived. Connecting and
the LISTEN itself are one-off blocking calls, run in a thread.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import psycopg
import trio
from psycopg import sql

from highway.store.database import DatabaseUnavailable, first_line

__all__ = ["Listener", "listen"]

# A lost server is noticed within about 10 + 5 × 3 = 25 s.
KEEPALIVE_IDLE_SECONDS = 10
KEEPALIVE_INTERVAL_SECONDS = 5
KEEPALIVE_COUNT = 3


class Listener:
    """Notifications on one channel, as an async iterator of their payloads (text).

    Iteration raises DatabaseUnavailable when the connection is lost; nothing sent while it
    was down will arrive, so the caller must treat that as a gap. The listener is its own
    iterator (not a generator), so a loop may stop early and iterate again later.
    """

    def __init__(self, connection: psycopg.Connection, early: list[str] | None = None) -> None:
        self._connection = connection
        self._early = deque(early or ())

    def __aiter__(self) -> Listener:
        return self

    async def __anext__(self) -> str:
        if self._early:
            return self._early.popleft()
        pgconn = self._connection.pgconn
        # notifies() first: libpq may already hold notifications read with earlier data.
        while (notification := pgconn.notifies()) is None:
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                raise DatabaseUnavailable("PostgreSQL: the listening connection was closed")
            await trio.lowlevel.wait_readable(pgconn.socket)
            try:
                pgconn.consume_input()
            except psycopg.OperationalError as error:
                raise DatabaseUnavailable(f"PostgreSQL: {first_line(error)}") from None
        return notification.extra.decode()


@asynccontextmanager
async def listen(url: str, channel: str, *, timeout: float) -> AsyncIterator[Listener]:
    """Open a connection to `url`, LISTEN on `channel`, and close it on exit.

    Raises DatabaseUnavailable if the server cannot be reached within `timeout`.
    """

    early: list[str] = []
    abandoned = threading.Event()

    def connect() -> psycopg.Connection:
        try:
            connection = psycopg.connect(
                url,
                autocommit=True,
                connect_timeout=max(1, round(timeout)),
                # A connection that only listens sends nothing: without keepalives a
                # half-open one would look idle for hours (the system's default).
                keepalives=1,
                keepalives_idle=KEEPALIVE_IDLE_SECONDS,
                keepalives_interval=KEEPALIVE_INTERVAL_SECONDS,
                keepalives_count=KEEPALIVE_COUNT,
            )
        except psycopg.OperationalError as error:
            raise DatabaseUnavailable(f"PostgreSQL: {first_line(error)}") from None
        try:
            # A notification may come just before LISTEN's answer: psycopg gives those
            # to its handlers, not to libpq's queue that the Listener reads.
            connection.add_notify_handler(lambda notify: early.append(notify.payload))
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            if abandoned.is_set():
                raise DatabaseUnavailable("PostgreSQL: connected too late")
        except BaseException as error:
            connection.close()  # nobody else will: the caller has gone, or LISTEN failed
            if isinstance(error, psycopg.OperationalError):
                raise DatabaseUnavailable(f"PostgreSQL: {first_line(error)}") from None
            raise
        return connection

    connection = None
    with trio.move_on_after(timeout + 1):
        connection = await trio.to_thread.run_sync(connect, abandon_on_cancel=True)
    if connection is None:
        abandoned.set()
        raise DatabaseUnavailable(f"PostgreSQL: no answer within {timeout:g} s")
    try:
        yield Listener(connection, early)
    finally:
        # Trio must forget the socket before libpq closes it; if the connection was lost,
        # libpq has closed it already (and asking for it would raise).
        with suppress(psycopg.OperationalError):
            trio.lowlevel.notify_closing(connection.pgconn.socket)
        connection.close()
