"""The Quart-Trio application: the REST API, Twilio's webhooks and health."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from quart import Response
from quart_schema import QuartSchema
from quart_trio import QuartTrio

from highway import __version__
from highway.api import calls, twilio_webhooks, verifications
from highway.api.auth import register_api_key_check
from highway.api.errors import JsonRequest, register_error_handlers
from highway.api.media_streams import MediaStreamRoute
from highway.config import Settings
from highway.dashboard import routes as dashboard
from highway.dashboard import simulated_calls
from highway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from highway.services import EXTENSION_KEY, Services
from highway.store import StoreError

log = logging.getLogger(__name__)

SETTINGS_KEY = "HIGHWAY_SETTINGS"
# Generous for a verification or a webhook, small enough that no one can fill memory.
MAX_REQUEST_BYTES = 1 << 20


class HighwayApp(QuartTrio):
    request_class = JsonRequest

    def log_exception(self, exception_info: Any) -> None:
        # A database that cannot be opened is reported in one line by whoever started the
        # server (see highway.server); a traceback would only bury it.
        if not isinstance(exception_info[1], StoreError):
            super().log_exception(exception_info)


def create_app(settings: Settings, metrics_dir: Path | None = None) -> QuartTrio:
    """Build the app. The store and the Twilio client open when it starts serving.

    `metrics_dir` is shared by the worker processes of one server, so that /metrics shows
    all of theirs; None for a server of one process.
    """
    app = HighwayApp("highway")
    app.config[SETTINGS_KEY] = settings
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    shared = app.extensions[EXTENSION_KEY] = Services(settings, metrics_dir)
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        # The interactive pages would load scripts from a CDN; the document is what matters.
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        info={"title": "Highway", "version": __version__},
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        security=[{"bearer": []}],
        pydantic_dump_options={"by_alias": True, "mode": "json"},
    )
    register_error_handlers(app)
    register_api_key_check(app, settings)
    twilio_webhooks.register_signature_check(app, settings)
    for module in (verifications, calls, twilio_webhooks, dashboard, simulated_calls):
        app.register_blueprint(module.blueprint)

    @app.get("/health")
    async def health() -> dict[str, object]:
        # The pid tells which worker process answered when several share the port.
        return {"status": "ok", "worker": os.getpid()}

    @app.get("/ready")
    async def ready() -> tuple[dict[str, object], int]:
        """Readiness, for a load balancer: the database answers. /health is liveness."""
        try:
            await shared.store.ping()
        except StoreError as error:
            # The cause goes to the log only: it may name hosts and users.
            log.warning("not ready: database unavailable: %s", error)
            unavailable = {"status": "unavailable", "worker": os.getpid()}
            return {**unavailable, "error": "Database unavailable"}, 503
        return {"status": "ready", "worker": os.getpid()}, 200

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format: calls, frames, the bridge's added delay, errors, outcomes."""
        return Response(await shared.metrics(), content_type=METRICS_CONTENT_TYPE)

    app.asgi_app = MediaStreamRoute(app.asgi_app, settings, shared)  # type: ignore[method-assign]

    async def open_services() -> None:
        await shared.open(app.nursery)

    app.before_serving(open_services)
    app.after_serving(shared.aclose)
    return app


def settings_of(app: QuartTrio) -> Settings:
    """The settings the app was created with."""
    settings: Settings = app.config[SETTINGS_KEY]
    return settings
