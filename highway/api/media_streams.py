"""`WS /media-stream/{verification_id}/{call_id}`: Twilio's media stream, admitted and run.

This route is served as plain ASGI, ahead of Quart: Quart's WebSocket layer adds a task hop
and a queue per message, which the per-frame path does not need (see the stack notes). The
handshake is checked before anything is opened upstream: the signature when a Twilio auth
token is set, and a call that exists, belongs to that verification, has not ended and has
no stream yet. Otherwise the socket is accepted and closed at once with 1008 (policy
violation). With HIGHWAY_MAX_CONCURRENT_CALLS streams live across the deployment, it is
closed with 1013 (try again later) and the reason "at capacity"; Twilio then goes on to the
TwiML's <Hangup/>.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from highway.call.session import POLICY_VIOLATION, TRY_AGAIN_LATER, CallSession
from highway.config import Settings
from highway.log import call_log_context
from highway.services import Services
from highway.store import Admission, Call, DatabaseUnavailable, StoreError, call_status
from highway.telephony.twilio_signature import TwilioSignatureCheck
from highway.telephony.twiml import stream_url

__all__ = ["MEDIA_STREAM_PREFIX", "AsgiCallerSocket", "MediaStreamRoute"]

log = logging.getLogger(__name__)

MEDIA_STREAM_PREFIX = "/media-stream/"
_PATH = re.compile(r"/media-stream/(\d{1,18})/(\d{1,18})/?")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Refused(Exception):
    """The handshake is not admitted; the message says why (for the log)."""

    def __init__(
        self, message: str, kind: str, code: int = POLICY_VIOLATION, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.kind = kind  # for the metrics: invalid_request, invalid_signature, …
        self.code = code
        self.reason = reason  # the close frame's reason, for the peer


class AsgiCallerSocket:
    """Twilio's WebSocket through raw ASGI messages (a `CallerSocket`)."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.closed = False

    async def accept(self) -> None:
        await self._send({"type": "websocket.accept"})

    async def receive(self) -> str | bytes | None:
        if self.closed:
            return None
        message = await self._receive()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            return text if text is not None else (message.get("bytes") or b"")
        self.closed = True  # websocket.disconnect
        return None

    async def send(self, text: str) -> None:
        # After the client has gone, Hypercorn drops what the app sends.
        if not self.closed:
            await self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


class MediaStreamRoute:
    """ASGI middleware: media streams are run here, everything else goes to `app`."""

    def __init__(self, app: AsgiApp, settings: Settings, services: Services) -> None:
        self.app = app
        self.settings = settings
        self.services = services
        token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
        self._signatures = TwilioSignatureCheck(token) if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or not scope["path"].startswith(MEDIA_STREAM_PREFIX):
            await self.app(scope, receive, send)
            return
        if (await receive())["type"] != "websocket.connect":
            return
        caller = AsgiCallerSocket(receive, send)
        try:
            call = await self._admit(scope)
        except Refused as refusal:
            log.warning("media stream %s refused: %s", scope["path"], refusal)
            self.services.meters.refused(refusal.kind)
            await caller.accept()
            await caller.close(refusal.code, refusal.reason)
            return
        session = CallSession(
            call=call,
            caller=caller,
            settings=self.settings,
            store=self.services.store,
            hub=self.services.hub,
            model=self.services.model,
            twilio=self.services.twilio,
            meters=self.services.meters,
        )
        # Every line logged for this call, by any of its tasks, carries its id.
        with call_log_context(call.id), self.services.live_call(call.id, session):
            await caller.accept()
            await session.run()

    async def _admit(self, scope: Scope) -> Call:
        match = _PATH.fullmatch(scope["path"])
        if match is None:
            raise Refused("not a /media-stream/{verification_id}/{call_id} path", "invalid_request")
        verification_id, call_id = int(match[1]), int(match[2])
        if self._signatures is not None:
            signature = _header(scope, b"x-twilio-signature")
            signed_url = stream_url(self.settings.public_url, verification_id, call_id)
            if not self._signatures.is_valid(signed_url, {}, signature):
                raise Refused("invalid or missing Twilio signature", "invalid_signature")
        store = self.services.store
        try:
            call = await store.get_call(call_id)
            if call is None:
                raise Refused(f"call {call_id} does not exist", "invalid_request")
            if (call.verification_id or 0) != verification_id:
                raise Refused(
                    f"call {call_id} does not belong to verification {verification_id}",
                    "invalid_request",
                )
            if call_status.is_terminal(call.status):
                raise Refused(
                    f"call {call_id} has already ended ({call.status})", "invalid_request"
                )
            admission = await store.admit_stream(
                call_id,
                limit=self.settings.max_concurrent_calls,
                stale_after_seconds=self.services.stale_stream_seconds,
            )
        except DatabaseUnavailable as error:
            raise Refused(f"database unavailable: {error}", "database", TRY_AGAIN_LATER) from None
        except StoreError as error:
            raise Refused(f"store error: {error}", "database", TRY_AGAIN_LATER) from None
        if admission is Admission.AT_CAPACITY:
            raise Refused(
                f"at capacity ({self.settings.max_concurrent_calls} concurrent calls)",
                "at_capacity",
                TRY_AGAIN_LATER,
                reason="Highway is at capacity; try again later",
            )
        if admission is Admission.UNKNOWN_CALL:  # deleted since it was read
            raise Refused(f"call {call_id} does not exist", "invalid_request")
        if admission is Admission.ALREADY_STREAMING:
            raise Refused(f"call {call_id} already has a stream", "invalid_request")
        return call


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None
