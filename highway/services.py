"""What the app's routes share: the settings, the store and the Twilio client, opened when
the server starts serving and closed when it stops."""

from __future__ import annotations

import logging

from quart import current_app

from highway.config import Settings, redact_url
from highway.store import Store, open_store
from highway.telephony.twilio_rest import TwilioCalls

log = logging.getLogger(__name__)

EXTENSION_KEY = "highway"


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Store | None = None
        self.twilio: TwilioCalls | None = None  # None: Twilio credentials are not configured

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the store is opened when the server starts serving")
        return self._store

    async def open(self) -> None:
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

    async def aclose(self) -> None:
        if self.twilio is not None:
            await self.twilio.aclose()
            self.twilio = None
        if self._store is not None:
            await self._store.aclose()
            self._store = None


def services() -> Services:
    """The current app's services."""
    found: Services = current_app.extensions[EXTENSION_KEY]
    return found
