"""Serving an app in this process on 127.0.0.1, for tests, stand-ins and benchmarks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import hypercorn.trio
import trio
from hypercorn.config import Config
from quart_trio import QuartTrio


@asynccontextmanager
async def serve_on_loopback(app: QuartTrio) -> AsyncIterator[str]:
    """Serve `app` with Hypercorn on a free port of 127.0.0.1; yields its base URL.

    Like `highway.server.hypercorn_config` (stdlib logging, no access log), but without
    importing the application, which a stand-in does not need. Also serves the small
    receiver apps tests put behind callback URLs.
    """
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = None
    # Hypercorn waits out graceful_timeout (3 s) for idle keep-alive connections a client
    # has not closed; these servers answer at once, so half a second is plenty.
    config.graceful_timeout = 0.5
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(hypercorn.trio.serve, app, config, shutdown_trigger=shutdown.wait)
        )
        try:
            yield binds[0]
        finally:
            shutdown.set()
