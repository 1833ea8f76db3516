"""What the app's routes share: the settings, the store, the Twilio client, the event hub
and the live calls, opened when the server starts serving and closed when it stops.

In offline mode (no OPENAI_API_KEY) the model is Highway's own stand-in agent, served on
127.0.0.1 by this process, so that calls still run end to end.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import trio
from quart import current_app

from highway.call.session import ModelEndpoint
from highway.config import Settings, redact_url
from highway.dashboard.hub import EventHub
from highway.store import Store, open_store
from highway.telephony.twilio_rest import TwilioCalls

if TYPE_CHECKING:
    from highway.call.session import CallSession

log = logging.getLogger(__name__)

EXTENSION_KEY = "highway"


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Store | None = None
        self.twilio: TwilioCalls | None = None  # None: Twilio credentials are not configured
        self.hub = EventHub()
        self.model: ModelEndpoint = _openai_endpoint(settings)
        self.live_calls: dict[int, CallSession] = {}

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the store is opened when the server starts serving")
        return self._store

    def is_live(self, call_id: int) -> bool:
        return call_id in self.live_calls

    @contextmanager
    def live_call(self, call_id: int, session: CallSession) -> Iterator[None]:
        """Count `session` as live while the block runs."""
        self.live_calls[call_id] = session
        try:
            yield
        finally:
            del self.live_calls[call_id]

    async def open(self, nursery: trio.Nursery) -> None:
        """Open everything; `nursery` runs the offline agent, if there is one."""
        settings = self.settings
        log.info("database: %s", redact_url(settings.database_url))
        self._store = await open_store(settings.database_url, timeout=settings.db_timeout_seconds)
        if not settings.twilio_configured:
            log.warning("Twilio is not configured: outbound calls are disabled")
        else:
            assert settings.twilio_account_sid and settings.twilio_auth_token
            self.twilio = TwilioCalls(
                settings.twilio_account_sid,
                settings.twilio_auth_token.get_secret_value(),
                api_url=settings.twilio_api_url,
            )
        if settings.offline:
            self.model = await _start_offline_agent(nursery)

    async def aclose(self) -> None:
        if self.twilio is not None:
            await self.twilio.aclose()
            self.twilio = None
        if self._store is not None:
            await self._store.aclose()
            self._store = None


def _openai_endpoint(settings: Settings) -> ModelEndpoint:
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    return ModelEndpoint(settings.openai_url, settings.openai_model, key)


async def _start_offline_agent(nursery: trio.Nursery) -> ModelEndpoint:
    # Imported here: only offline mode needs the stand-in.
    from highway.testing.offline_agent import offline_agent

    agent = await nursery.start(offline_agent().serve)
    log.warning("offline mode: calls are answered by the built-in stand-in agent at %s", agent.url)
    return ModelEndpoint(agent.url, "highway-offline-agent", None)


def services() -> Services:
    """The current app's services."""
    found: Services = current_app.extensions[EXTENSION_KEY]
    return found
