"""The Quart-Trio application. Routes arrive with later issues; for now only health."""

from __future__ import annotations

import os

from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from highway.config import Settings

SETTINGS_KEY = "HIGHWAY_SETTINGS"


def create_app(settings: Settings) -> QuartTrio:
    """Build the app; `settings` are stored in `app.config[SETTINGS_KEY]` for routes to use."""
    app = QuartTrio("highway")
    app.config[SETTINGS_KEY] = settings

    @app.get("/health")
    async def health() -> dict[str, object]:
        # The pid tells which worker process answered when several share the port.
        return {"status": "ok", "worker": os.getpid()}

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> tuple[dict[str, str], int, dict[str, str]]:
        # The API speaks JSON (`{"error": ...}`), so its 404s and 405s should too. Keep
        # headers such as a 405's Allow, but not werkzeug's HTML content type.
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        return {"error": error.name}, error.code or 500, headers

    return app


def settings_of(app: QuartTrio) -> Settings:
    """The settings the app was created with."""
    settings: Settings = app.config[SETTINGS_KEY]
    return settings
