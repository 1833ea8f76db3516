"""The live dashboard: the page (`GET /`), its files, and `WS /dashboard/events`.

The page and its files hold no data and are open; everything it shows comes through the
API key: the event stream, and the REST API it calls. A browser cannot set headers on a
WebSocket, so the stream also takes the key as its first message, `{"type": "auth",
"apiKey": "…"}`; a key in the URL would end up in proxies' logs.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any

import orjson
import trio
from quart import Blueprint, Response, send_from_directory, websocket

from highway.api.auth import is_cross_site
from highway.call.session import POLICY_VIOLATION, TRY_AGAIN_LATER
from highway.config import Settings
from highway.dashboard.events import call_json
from highway.dashboard.hub import FeedInterrupted
from highway.services import Services, services
from highway.store import StoreError, call_status

__all__ = ["blueprint"]

log = logging.getLogger(__name__)

blueprint = Blueprint("dashboard", __name__)

STATIC = Path(__file__).parent / "static"
# The page loads nothing from elsewhere and runs no inline script.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:;"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SNAPSHOT_CALLS = 50
AUTH_TIMEOUT_SECONDS = 10.0


@blueprint.get("/")
async def page() -> Response:
    """The live dashboard."""
    return _secured(await send_from_directory(STATIC, "index.html"))


@blueprint.get("/dashboard/static/<path:name>")
async def static_file(name: str) -> Response:
    """The dashboard's script and style sheet."""
    return _secured(await send_from_directory(STATIC, name))


def _secured(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    # Small files that change with each release: always check, never serve stale.
    response.headers["Cache-Control"] = "no-cache"
    return response


@blueprint.websocket("/dashboard/events")
async def events() -> None:
    """Every call's events, after a snapshot of the current state; needs the API key."""
    state = services()
    await websocket.accept()
    if is_cross_site(websocket.headers):
        log.warning("dashboard events: refused a page of another site")
        await websocket.close(POLICY_VIOLATION, "Cross-site request refused")
        return
    if not await _authorised(state.settings):
        log.warning("dashboard events: refused a missing or invalid API key")
        await websocket.close(POLICY_VIOLATION, "Missing or invalid API key")
        return
    async with state.hub.subscribe() as subscriber:
        # Subscribed first, so that nothing happening while the snapshot is read is lost;
        # the page tells repeats apart by their event ids.
        try:
            snapshot = await _snapshot(state)
        except StoreError as error:
            log.warning("dashboard events: no snapshot: %s", error)
            await websocket.close(TRY_AGAIN_LATER, "Database unavailable")
            return
        await websocket.send(orjson.dumps(snapshot).decode())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_ignore_incoming, nursery.cancel_scope)
            try:
                async for event in subscriber:
                    await websocket.send(orjson.dumps(event).decode())
            except FeedInterrupted as interrupted:
                log.info("dashboard events: closing a feed that %s", interrupted)
                await websocket.close(TRY_AGAIN_LATER, "Events were missed; reconnect")
            nursery.cancel_scope.cancel()


async def _authorised(settings: Settings) -> bool:
    """The key from the Authorization header, or else from the first message."""
    if settings.api_key is None:
        return True
    expected = settings.api_key.get_secret_value().encode()
    header = websocket.headers.get("Authorization", "")
    if header:
        # As the REST API takes it: `Bearer <key>`, not the bare key.
        if not header.startswith("Bearer "):
            return False
        given = header.removeprefix("Bearer ").encode()
    else:
        given = b""
        with trio.move_on_after(AUTH_TIMEOUT_SECONDS):
            given = _api_key_in(await websocket.receive())
    # compare_digest: the time taken must not tell how much of the key was right.
    return bool(given) and hmac.compare_digest(given, expected)


def _api_key_in(message: str | bytes) -> bytes:
    try:
        parsed = orjson.loads(message)
    except orjson.JSONDecodeError:
        return b""
    if not isinstance(parsed, dict) or parsed.get("type") != "auth":
        return b""
    key = parsed.get("apiKey")
    return key.encode() if isinstance(key, str) else b""


async def _ignore_incoming(done: trio.CancelScope) -> None:
    """Read (and drop) what the page sends, so it never piles up; a close ends the feed."""
    try:
        while True:
            await websocket.receive()
    finally:
        done.cancel()


async def _snapshot(state: Services) -> dict[str, Any]:
    """The latest calls; for the ones still going, their events so far."""
    store = state.store
    calls = await store.list_calls(limit=SNAPSHOT_CALLS)
    outcomes = await store.outcomes([call.verification_id for call in calls])
    live = [c.id for c in calls if c.answered_at and not call_status.is_terminal(c.status)]
    histories = await store.events_of_calls(live)
    listed = [
        call_json(
            call,
            outcomes.get(call.verification_id),
            histories.get(call.id, []) if call.id in live else None,
        )
        for call in calls
    ]
    return {
        "type": "snapshot",
        "worker": state.hub.worker,
        "offline": state.settings.offline,
        "maxConcurrentCalls": state.settings.max_concurrent_calls,
        "calls": listed,
    }
