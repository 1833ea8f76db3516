"""Blocking database drivers run in worker threads, so the Trio loop never waits on them.

Each unit of work is a plain function that gets a `Transaction` and runs in one database
transaction on a worker thread. Every unit is bounded twice: the server stops a statement
that runs too long (PostgreSQL `statement_timeout`, SQLite's busy timeout and interrupt),
and Trio stops waiting after the same time, so a stuck database cannot hang a call.

SQL is written once with `:name` parameters; `Dialect` adapts it to each driver.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import psycopg
import psycopg_pool
import trio
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

log = logging.getLogger(__name__)

T = TypeVar("T")
Row = dict[str, Any]


class StoreError(Exception):
    """The store cannot do what was asked (for example an unknown schema version)."""


class DatabaseUnavailable(StoreError):
    """The database could not be reached or did not answer in time. Retrying may help."""


class _Abandoned(Exception):
    """Raised in a worker thread whose caller has given up on it."""


@dataclass(frozen=True, slots=True)
class JsonValue:
    """Marks a parameter to be stored in a JSON column (jsonb in PostgreSQL, text in SQLite)."""

    value: Any


_NAMED_PARAM = re.compile(r"(?<![:\w]):(\w+)")


class Dialect(ABC):
    """What differs between the databases: parameters, locking and JSON."""

    name: str
    for_update: str  # appended to a SELECT that is followed by an UPDATE of the same row

    @abstractmethod
    def sql(self, statement: str) -> str: ...

    @abstractmethod
    def param(self, value: Any) -> Any: ...

    def params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {key: self.param(value) for key, value in values.items()}


class SqliteDialect(Dialect):
    name = "sqlite"
    for_update = ""  # one writer at a time already: the store's single connection

    def sql(self, statement: str) -> str:
        return statement  # sqlite3 understands :name itself

    def param(self, value: Any) -> Any:
        if isinstance(value, JsonValue):
            return json.dumps(value.value, separators=(",", ":"))
        if isinstance(value, datetime):
            # sqlite3's implicit datetime adapter is deprecated; ISO text sorts correctly.
            return value.isoformat()
        return value


class PostgresDialect(Dialect):
    name = "postgresql"
    for_update = " FOR UPDATE"

    def sql(self, statement: str) -> str:
        return _NAMED_PARAM.sub(r"%(\1)s", statement)

    def param(self, value: Any) -> Any:
        return Jsonb(value.value) if isinstance(value, JsonValue) else value


class Transaction:
    """The handle a unit of work uses: runs statements and returns rows as dicts."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cursor = cursor
        self.dialect = dialect

    def execute(self, statement: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        self._cursor.execute(self.dialect.sql(statement), self.dialect.params(params or {}))
        if self._cursor.description is None:
            return []
        return [dict(row) for row in self._cursor.fetchall()]

    def one(self, statement: str, params: Mapping[str, Any] | None = None) -> Row | None:
        rows = self.execute(statement, params)
        return rows[0] if rows else None


class Database(ABC):
    """A connection (pool) that runs units of work in threads, each bounded by `timeout`."""

    dialect: Dialect

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def run(self, work: Callable[[Transaction], T]) -> T:
        """Run `work` in one transaction on a worker thread and return its result.

        Raises DatabaseUnavailable if the database cannot be reached or takes longer than
        `timeout`. The thread is abandoned on timeout (threads cannot be cancelled), and the
        server-side limits make sure it finishes soon after.
        """
        abandoned = threading.Event()

        def unless_abandoned(tx: Transaction) -> T:
            result = work(tx)
            if abandoned.is_set():
                # Trio stopped waiting and the caller was told it failed: roll back, so that
                # an answer of "unavailable" means nothing was written.
                raise _Abandoned
            return result

        try:
            with trio.fail_after(self.timeout):
                return await trio.to_thread.run_sync(
                    self._run_in_thread,
                    unless_abandoned,
                    limiter=self._limiter,
                    abandon_on_cancel=True,
                )
        except trio.TooSlowError:
            abandoned.set()
            self._interrupt()
            raise DatabaseUnavailable(
                f"no answer from the database within {self.timeout:g} s"
            ) from None

    @property
    @abstractmethod
    def _limiter(self) -> trio.CapacityLimiter: ...

    @abstractmethod
    def _run_in_thread(self, work: Callable[[Transaction], T]) -> T: ...

    @abstractmethod
    def _interrupt(self) -> None:
        """Ask the driver to stop the statement that timed out, if it can."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def aclose(self) -> None: ...


class SqliteDatabase(Database):
    """One SQLite connection shared by all tasks, one unit of work at a time.

    SQLite has one writer anyway; WAL mode lets other processes (say, a backup) read.
    """

    dialect = SqliteDialect()

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__(timeout)
        self.path = path
        self._single = trio.CapacityLimiter(1)
        self._connection: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._connection = await trio.to_thread.run_sync(self._connect)

    def _connect(self) -> sqlite3.Connection:
        try:
            # isolation_level=None: transactions are begun and ended explicitly below.
            connection = sqlite3.connect(
                self.path, timeout=self.timeout, check_same_thread=False, isolation_level=None
            )
            connection.row_factory = sqlite3.Row
            for pragma in ("journal_mode = WAL", "foreign_keys = ON", "synchronous = NORMAL"):
                connection.execute(f"PRAGMA {pragma}")
        except sqlite3.Error as error:
            raise DatabaseUnavailable(f"cannot open SQLite database {self.path}: {error}") from None
        return connection

    @property
    def _limiter(self) -> trio.CapacityLimiter:
        return self._single

    def _run_in_thread(self, work: Callable[[Transaction], T]) -> T:
        if self._connection is None:
            raise StoreError("the database is not open")
        cursor = self._connection.cursor()
        try:
            # IMMEDIATE takes the write lock up front, so a unit never fails half-way
            # because another process started writing first.
            cursor.execute("BEGIN IMMEDIATE")
            try:
                result = work(Transaction(cursor, self.dialect))
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")
            return result
        except sqlite3.OperationalError as error:
            # Locked, unreadable, disk full or interrupted: the database, not the request.
            raise DatabaseUnavailable(f"SQLite: {error}") from None
        finally:
            cursor.close()

    def _interrupt(self) -> None:
        if self._connection is not None:
            self._connection.interrupt()

    async def aclose(self) -> None:
        async with self._single:  # let a running unit finish first
            if self._connection is not None:
                self._connection.close()
                self._connection = None


class PostgresDatabase(Database):
    """A psycopg connection pool; the sync API in threads, because psycopg's async API is
    asyncio-only."""

    dialect = PostgresDialect()

    def __init__(self, url: str, timeout: float, max_connections: int = 10) -> None:
        super().__init__(timeout)
        self._pool_limiter = trio.CapacityLimiter(max_connections)
        self._connect_timeout = max(1, round(timeout))  # libpq takes whole seconds
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            timeout=timeout,
            kwargs={"connect_timeout": self._connect_timeout, "autocommit": False},
            configure=self._configure,
            open=False,
            name="highway",
        )

    def _configure(self, connection: psycopg.Connection) -> None:
        # Server-side bounds, so an abandoned thread's statement ends too. Set per connection
        # (not through `options` in the URL), so a URL's own options are kept.
        ms = int(self.timeout * 1000)
        connection.execute(f"SET statement_timeout = {ms}")
        connection.execute(f"SET lock_timeout = {ms}")
        connection.execute(f"SET idle_in_transaction_session_timeout = {ms * 2}")
        connection.commit()

    async def open(self) -> None:
        """Check that the server answers (for a clear error at start-up), then start the pool,
        which keeps reconnecting in the background whenever the server comes back."""
        await trio.to_thread.run_sync(self._check_reachable, abandon_on_cancel=True)
        await trio.to_thread.run_sync(lambda: self._pool.open(wait=False))

    def _check_reachable(self) -> None:
        try:
            psycopg.connect(self._pool.conninfo, connect_timeout=self._connect_timeout).close()
        except psycopg.OperationalError as error:
            raise DatabaseUnavailable(f"PostgreSQL: {first_line(error)}") from None

    @property
    def _limiter(self) -> trio.CapacityLimiter:
        return self._pool_limiter

    def _run_in_thread(self, work: Callable[[Transaction], T]) -> T:
        try:
            with (
                self._pool.connection() as connection,
                connection.transaction(),
                connection.cursor(row_factory=dict_row) as cursor,
            ):
                return work(Transaction(cursor, self.dialect))
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as error:
            raise DatabaseUnavailable(f"PostgreSQL: {first_line(error)}") from None

    def _interrupt(self) -> None:
        pass  # the connection's statement_timeout ends the statement on the server

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(lambda: self._pool.close(timeout=self.timeout))


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def connect(url: str, timeout: float) -> Database:
    """A Database for a `sqlite:///path` or `postgresql://` URL (not yet opened)."""
    if url.startswith("sqlite:///"):
        return SqliteDatabase(url.removeprefix("sqlite:///"), timeout)
    if url.startswith("postgresql://"):
        return PostgresDatabase(url, timeout)
    raise StoreError("the database URL must start with sqlite:/// or postgresql://")
