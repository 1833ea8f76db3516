"""Every error the API gives is JSON `{"error": ...}` with the right status, never a
traceback: bad input is 400, a database that is down is 503, and anything unexpected is a
logged 500."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from quart import Quart
from quart_schema import RequestSchemaValidationError
from quart_trio.wrappers.request import TrioRequest
from werkzeug.exceptions import HTTPException

from highway.api.validation import joi_messages
from highway.store import DatabaseUnavailable

log = logging.getLogger(__name__)

Reply = tuple[dict[str, Any], int, dict[str, str]]


class ApiError(Exception):
    """Answer the request with `status`, `headers` and `{"error": message, **extra}`."""

    def __init__(
        self, status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra


class JsonRequest(TrioRequest):
    """Quart's request, with a clear error for a body that is not valid JSON."""

    def on_json_loading_failed(self, error: Exception) -> Any:
        raise ApiError(400, "Request body must be valid JSON")


def register_error_handlers(app: Quart) -> None:
    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Reply:
        return {"error": error.message, **error.extra}, error.status, error.headers

    @app.errorhandler(RequestSchemaValidationError)
    async def invalid_request(error: RequestSchemaValidationError) -> Reply:
        cause = error.validation_error
        if isinstance(cause, ValidationError):
            messages = joi_messages(cause)
            return {"error": messages[0], "details": messages}, 400, {}
        # quart-schema could not even start validating, e.g. the body was not JSON at all.
        return {"error": "Request body must be a JSON object"}, 400, {}

    @app.errorhandler(DatabaseUnavailable)
    async def database_unavailable(error: DatabaseUnavailable) -> Reply:
        log.warning("database unavailable: %s", error)
        return {"error": "Database unavailable, try again shortly"}, 503, {"Retry-After": "5"}

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Reply:
        # 404s, 405s and the like in JSON too. Keep headers such as a 405's Allow, but not
        # werkzeug's HTML content type.
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        return {"error": error.name}, error.code or 500, headers

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Reply:
        log.exception("unexpected error answering a request")
        return {"error": "Internal server error"}, 500, {}
