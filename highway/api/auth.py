"""The API key: every route needs `Authorization: Bearer $HIGHWAY_API_KEY`, except the
Twilio webhooks (they carry Twilio's signature instead), /health, /ready, /metrics, and the
dashboard's page and files (its event stream checks the key itself).

With no key configured the check is off; `highway serve` then refuses to bind anything but
loopback, so only this machine can reach the API.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit

from quart import Quart, request

from highway.api.errors import ApiError
from highway.config import Settings

# The dashboard's page and files hold no data: what it shows comes through the key.
TWILIO_PREFIX = "/twilio/"
OPEN_PATHS = frozenset({"/", "/health", "/ready", "/metrics"})
OPEN_PREFIXES = (TWILIO_PREFIX, "/dashboard/static/")


def needs_api_key(path: str) -> bool:
    return path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)


def is_cross_site(headers: Mapping[str, str]) -> bool:
    """True for a browser's request made by a page of another site (its Origin names
    another host). Browsers apply no CORS to WebSockets or to plain form posts, so without
    this any page a user visits could use a Highway on their machine that has no key."""
    origin = headers.get("Origin")
    return bool(origin) and urlsplit(origin).netloc.lower() != headers.get("Host", "").lower()


def register_api_key_check(app: Quart, settings: Settings) -> None:
    if settings.api_key is None:
        return
    expected = f"Bearer {settings.api_key.get_secret_value()}".encode()

    @app.before_request
    async def require_api_key() -> None:
        if not needs_api_key(request.path):
            return
        given = request.headers.get("Authorization", "").encode()
        # compare_digest: the time taken must not tell how much of the key was right.
        if not hmac.compare_digest(given, expected):
            raise ApiError(
                401, "Missing or invalid API key", headers={"WWW-Authenticate": "Bearer"}
            )
