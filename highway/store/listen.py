"""PostgreSQL LISTEN on a dedicated connection, read by Trio without a thread.

psycopg's own `notifies()` blocks (or needs asyncio), so the Trio task waits for the
connection's socket to be readable and then lets libpq parse what arrived. Connecting and
the LISTEN itself are one-off blocking calls, run in a thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import trio
from psycopg import sql

from highway.store.database import DatabaseUnavailable, first_line

__all__ = ["Listener", "listen"]


class Listener:
    """Notifications on one channel, as an async iterator of their payloads (text).

    Iteration raises DatabaseUnavailable when the connection is lost; nothing sent while it
    was down will arrive, so the caller must treat that as a gap.
    """

    def __init__(self, connection: psycopg.Connection) -> None:
        self._connection = connection

    def __aiter__(self) -> AsyncIterator[str]:
        return self._payloads()

    async def _payloads(self) -> AsyncIterator[str]:
        pgconn = self._connection.pgconn
        while True:
            await trio.lowlevel.wait_readable(pgconn.socket)
            try:
                pgconn.consume_input()
            except psycopg.OperationalError as error:
                raise DatabaseUnavailable(f"PostgreSQL: {first_line(error)}") from None
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                raise DatabaseUnavailable("PostgreSQL: the listening connection was closed")
            while (notification := pgconn.notifies()) is not None:
                yield notification.extra.decode()


@asynccontextmanager
async def listen(url: str, channel: str, *, timeout: float) -> AsyncIterator[Listener]:
    """Open a connection to `url`, LISTEN on `channel`, and close it on exit.

    Raises DatabaseUnavailable if the server cannot be reached within `timeout`.
    """

    def connect() -> psycopg.Connection:
        try:
            connection = psycopg.connect(
                url, autocommit=True, connect_timeout=max(1, round(timeout))
            )
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.OperationalError as error:
            raise DatabaseUnavailable(f"PostgreSQL: {first_line(error)}") from None
        return connection

    connection = None
    with trio.move_on_after(timeout + 1):
        connection = await trio.to_thread.run_sync(connect, abandon_on_cancel=True)
    if connection is None:
        raise DatabaseUnavailable(f"PostgreSQL: no answer within {timeout:g} s")
    try:
        yield Listener(connection)
    finally:
        # Trio must forget the socket before libpq closes it.
        trio.lowlevel.notify_closing(connection.pgconn.socket)
        connection.close()
