"""Shared fixtures: a clean settings environment, an in-process server, an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import httpx
import hypercorn.trio
import pytest
import trio
from quart_trio import QuartTrio

from highway.app import create_app
from highway.config import ENV_NAMES, Settings
from highway.server import hypercorn_config


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


@asynccontextmanager
async def serve_app(app: QuartTrio) -> AsyncIterator[str]:
    """Serve `app` with Hypercorn on 127.0.0.1 (a free port) and yield its base URL.

    Leaving the block shuts the server down gracefully.
    """
    config = hypercorn_config("127.0.0.1", 0)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(hypercorn.trio.serve, app, config, shutdown_trigger=shutdown.wait)
        )
        try:
            yield binds[0]  # e.g. "http://127.0.0.1:41675", from the bound socket
        finally:
            shutdown.set()


@pytest.fixture
async def base_url(app: QuartTrio) -> AsyncIterator[str]:
    """The base URL of the `app` fixture served in-process."""
    async with serve_app(app) as url:
        yield url


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for local servers.

    trust_env=False: a proxy configured in the environment must not intercept 127.0.0.1.
    """
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        yield client
