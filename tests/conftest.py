"""Shared fixtures: a clean settings environment, an in-process server, an HTTP client."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
import trio
from quart_trio import QuartTrio

from highway.app import create_app
from highway.config import ENV_NAMES, Settings
from highway.store import Store, open_store
from highway.testing.postgres import PostgresCluster, find_postgres_bin
from highway.testing.serving import serve_on_loopback
from highway.testing.twilio_rest import TwilioRestStandIn
from tests.api_support import (
    ACCOUNT_SID,
    API_KEY,
    AUTH_TOKEN,
    HIGHWAY_NUMBER,
    PUBLIC_URL,
    Highway,
    api_client,
)

NO_POSTGRES = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install Debian's"
    " postgresql package or set HIGHWAY_PG_BIN to their directory"
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Unset every Highway variable and work in an empty directory (so no stray `.env`).

    Returns that directory.
    """
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def settings(clean_env: Path) -> Settings:
    """Default settings with the database in the test's temporary directory."""
    return Settings(HIGHWAY_DATABASE_URL=f"sqlite:///{clean_env / 'highway.db'}")  # type: ignore[call-arg]


@pytest.fixture
def app(settings: Settings) -> QuartTrio:
    return create_app(settings)


@pytest.fixture
async def base_url(app: QuartTrio) -> AsyncIterator[str]:
    """The base URL of the `app` fixture served in-process."""
    async with serve_on_loopback(app) as url:
        yield url


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for local servers.

    trust_env=False: a proxy configured in the environment must not intercept 127.0.0.1.
    """
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        yield client


@pytest.fixture
async def own_postgres_cluster() -> AsyncIterator[PostgresCluster]:
    """A running PostgreSQL server for one test alone, which it may stop and start."""
    if find_postgres_bin() is None:
        pytest.skip(NO_POSTGRES)
    cluster = PostgresCluster()
    try:
        await trio.to_thread.run_sync(cluster.start)
        yield cluster
    finally:
        await trio.to_thread.run_sync(cluster.destroy)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL server on 127.0.0.1 for the whole test session."""
    if find_postgres_bin() is None:
        pytest.skip(NO_POSTGRES)
    with PostgresCluster() as cluster:
        yield cluster


_schemas = itertools.count()


def new_schema_url(cluster: PostgresCluster) -> str:
    """A URL whose tables live in a new, empty schema of their own."""
    schema = f"test_{os.getpid()}_{next(_schemas)}"
    with psycopg.connect(cluster.url(), autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    return f"{cluster.url()}?options=-csearch_path%3D{schema}"


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A URL whose tables live in a schema of their own, so every test starts empty."""
    return new_schema_url(postgres_cluster)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on SQLite, and on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'highway.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@asynccontextmanager
async def opened_store(url: str) -> AsyncIterator[Store]:
    """A store on `url`, closed afterwards."""
    opened = await open_store(url, timeout=5)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with opened_store(database_url) as opened:
        yield opened


def api_settings(database_url: str, twilio_url: str, **overrides: str) -> Settings:
    """Settings for a Highway with an API key, Twilio pointed at the stand-in, and the
    public URL Twilio would use."""
    values = {
        "HIGHWAY_DATABASE_URL": database_url,
        "HIGHWAY_API_KEY": API_KEY,
        "HIGHWAY_PUBLIC_URL": PUBLIC_URL,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_PHONE_NUMBER": HIGHWAY_NUMBER,
        "HIGHWAY_TWILIO_API_URL": twilio_url,
        "HIGHWAY_DB_TIMEOUT_SECONDS": "2",
    } | overrides
    return Settings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def running_highway(settings: Settings, twilio: TwilioRestStandIn) -> AsyncIterator[Highway]:
    async with (
        serve_on_loopback(create_app(settings)) as url,
        api_client(url) as client,
    ):
        yield Highway(url, client, twilio)


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioRestStandIn]:
    standin = TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN)
    async with standin.serve():
        yield standin


@pytest.fixture
async def highway(
    clean_env: Path, database_url: str, twilio: TwilioRestStandIn
) -> AsyncIterator[Highway]:
    """Highway on SQLite and on PostgreSQL, with Twilio's REST API stood in for."""
    assert twilio.base_url is not None
    settings = api_settings(database_url, twilio.base_url)
    async with running_highway(settings, twilio) as running:
        yield running
