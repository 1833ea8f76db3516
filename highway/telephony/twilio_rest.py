"""Highway's narrow async client for Twilio's Calls REST API, on the official SDK under Trio.

The `twilio` package builds the requests and parses the answers; `HttpxTwilioHttpClient`
carries them over httpx, which runs under Trio (the SDK's own async client is aiohttp,
asyncio only). Every failure, from Twilio or from the network, is a `TwilioError`.

Nothing here logs request bodies, phone numbers or credentials: the SDK's own HTTP clients
log at INFO, so they are not used.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import SplitResult, urlencode, urlsplit, urlunsplit

import httpx
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client

log = logging.getLogger(__name__)

TWILIO_API_URL = "https://api.twilio.com"
STATUS_CALLBACK_EVENTS = ("initiated", "ringing", "answered", "completed")
RECORDING_STATUS_CALLBACK_EVENTS = ("completed", "absent")

# Twilio codes meaning "no live call to act on": 20404 the call is unknown (or deleted),
# 21220 the call is not in a state that can be updated (it has already ended).
_CALL_GONE_CODES = frozenset({20404, 21220})
# The SDK prefixes Twilio's message with what it was doing ("Unable to create record: ...").
_SDK_PREFIX = re.compile(r"^Unable to (?:create|fetch|update|delete) record(?:: )?")
_CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")


class TwilioError(Exception):
    """A Twilio request failed.

    `message` is Twilio's own message, `code` its error code (e.g. 21211), `status` the HTTP
    status; `code` and `status` are None when Twilio could not be reached or did not say.
    """

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"TwilioError({self.message!r}, code={self.code!r}, status={self.status!r})"


@dataclass(frozen=True)
class PlacedCall:
    """A call Twilio accepted: its SID and the status Twilio reported (usually "queued")."""

    sid: str
    status: str


class HttpxTwilioHttpClient(AsyncHttpClient):
    """The SDK's async HTTP client interface on one shared `httpx.AsyncClient`.

    With an `api_url` other than Twilio's, every request goes to that scheme and host
    instead (path and query kept), whatever Twilio domain the SDK addressed: this is how a
    local stand-in takes Twilio's place.
    """

    def __init__(
        self,
        *,
        api_url: str = TWILIO_API_URL,
        timeout: float = 10.0,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(logger or log, is_async=True, timeout=timeout)
        self._base = None if api_url.rstrip("/") == TWILIO_API_URL else urlsplit(api_url)
        # trust_env=False: a proxy or netrc in the environment must not see our credentials.
        self._client = httpx.AsyncClient(trust_env=False, timeout=timeout)

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """Send one request; network failures and timeouts raise `TwilioError` (status None)."""
        target = self.rewrite(url)
        limit = timeout or self.timeout
        try:
            response = await self._client.request(
                method,
                target,
                params=params,  # the SDK's query values: strings or lists of them
                content=form_body(data),
                headers=headers,
                auth=auth,
                timeout=limit,
                follow_redirects=allow_redirects,
            )
        except httpx.TimeoutException as exc:
            raise TwilioError(
                f"Twilio did not answer {method} {_origin(target)} within {limit:g} s"
            ) from exc
        except httpx.HTTPError as exc:
            # The message names the host only: paths carry SIDs, bodies carry numbers.
            detail = str(exc) or type(exc).__name__
            raise TwilioError(f"cannot reach Twilio at {_origin(target)}: {detail}") from exc
        return Response(response.status_code, response.text, dict(response.headers))

    def rewrite(self, url: str) -> str:
        """`url` with scheme and host replaced by `api_url`'s (unchanged for real Twilio)."""
        if self._base is None:
            return url
        parts = urlsplit(url)
        path = self._base.path.rstrip("/") + parts.path
        return urlunsplit((self._base.scheme, self._base.netloc, path, parts.query, ""))

    async def aclose(self) -> None:
        await self._client.aclose()


def form_body(data: Mapping[str, object] | None) -> bytes | None:
    """Form-encode `data`; a list value becomes repeated keys, as Twilio expects."""
    if not data:
        return None
    pairs: list[tuple[str, str]] = []
    for key, value in data.items():
        items = value if isinstance(value, list | tuple) else [value]
        pairs.extend((key, _form_text(item)) for item in items)
    return urlencode(pairs).encode("ascii")


def _form_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _origin(url: str) -> str:
    parts: SplitResult = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class TwilioCalls:
    """Place, inspect and end calls through Twilio's Calls REST API. Use as `async with`."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        api_url: str = TWILIO_API_URL,
        timeout: float = 10.0,
    ) -> None:
        self._http = HttpxTwilioHttpClient(api_url=api_url, timeout=timeout)
        # A non-empty mapping: an empty one falls back to os.environ, whose TWILIO_EDGE or
        # TWILIO_REGION would rewrite the host (and mangle a stand-in's 127.0.0.1).
        self._client = Client(
            account_sid,
            auth_token,
            http_client=self._http,
            environment={"TWILIO_EDGE": "", "TWILIO_REGION": ""},
        )

    async def place_call(
        self,
        *,
        to: str,
        from_: str,
        twiml: str,
        status_callback: str,
        recording_status_callback: str | None,
        time_limit: int | None = None,
    ) -> PlacedCall:
        """Create an outbound call running `twiml`, with every progress event reported.

        With `recording_status_callback`, the call is recorded and the recording's
        completion (or absence) is reported there.
        """
        options: dict[str, Any] = {
            "status_callback": status_callback,
            "status_callback_event": list(STATUS_CALLBACK_EVENTS),
            "status_callback_method": "POST",
        }
        if recording_status_callback is not None:
            options |= {
                "record": True,
                "recording_status_callback": recording_status_callback,
                "recording_status_callback_event": list(RECORDING_STATUS_CALLBACK_EVENTS),
                "recording_status_callback_method": "POST",
            }
        if time_limit is not None:
            options["time_limit"] = time_limit
        with _as_twilio_error():
            call = await self._client.calls.create_async(to=to, from_=from_, twiml=twiml, **options)
        if not call.sid or not call.status:
            raise TwilioError("Twilio accepted the call but answered without its sid or status")
        log.debug("placed call %s (%s)", call.sid, call.status)
        return PlacedCall(sid=call.sid, status=call.status)

    async def fetch_status(self, call_sid: str) -> str:
        """The call's current status, e.g. "ringing", "in-progress", "completed"."""
        _check_call_sid(call_sid)
        with _as_twilio_error():
            call = await self._client.calls(call_sid).fetch_async()
        if not call.status:
            raise TwilioError(f"Twilio answered without a status for call {call_sid}")
        return call.status

    async def hangup(self, call_sid: str) -> bool:
        """End the call whatever its state. False if Twilio no longer has a live call."""
        return await self._end(call_sid, "completed")

    async def cancel(self, call_sid: str) -> bool:
        """End a queued or ringing call. False if Twilio no longer has a live call.

        Twilio accepts this for an answered call too but leaves it up: use `hangup` there.
        """
        return await self._end(call_sid, "canceled")

    async def _end(self, call_sid: str, status: str) -> bool:
        _check_call_sid(call_sid)
        try:
            with _as_twilio_error():
                await self._client.calls(call_sid).update_async(status=status)
        except TwilioError as err:
            # Ending a call that is already gone is not a failure: callers retry and race
            # the caller's own hangup.
            if err.code in _CALL_GONE_CODES:
                log.debug("call %s already gone (Twilio %s)", call_sid, err.code)
                return False
            raise
        log.debug("asked Twilio to set call %s %s", call_sid, status)
        return True

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _check_call_sid(call_sid: str) -> None:
    # The SID is put into the URL path unquoted by the SDK; refuse anything that is not one.
    if not _CALL_SID.fullmatch(call_sid):
        raise TwilioError(f"not a Twilio Call SID: {call_sid!r}")


@contextmanager
def _as_twilio_error() -> Iterator[None]:
    """Turn the SDK's exceptions (and an unreadable success body) into `TwilioError`."""
    try:
        yield
    except TwilioException as exc:
        raise _from_sdk(exc) from exc
    except json.JSONDecodeError as exc:
        raise TwilioError(f"Twilio answered with a body that is not JSON: {exc}") from exc


def _from_sdk(exc: TwilioException) -> TwilioError:
    if isinstance(exc, TwilioRestException):
        message = _SDK_PREFIX.sub("", str(exc.msg), count=1)
        # Without a code in the body the SDK fills in the HTTP status: that is no Twilio code.
        code = exc.code if isinstance(exc.code, int) and exc.code != exc.status else None
        return TwilioError(
            message or f"Twilio answered HTTP {exc.status}", code=code, status=exc.status
        )
    if isinstance(exc, TwilioServiceException):
        return TwilioError(exc.detail or exc.title, code=exc.code, status=exc.status)
    return TwilioError(str(exc) or type(exc).__name__)
