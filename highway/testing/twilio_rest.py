"""A Twilio REST stand-in: a real HTTP server on 127.0.0.1 that answers as Twilio's Calls API.

For tests and benchmarks. It speaks the wire format the `twilio` SDK expects (form-encoded
requests, HTTP Basic auth, Call resource JSON, Twilio's legacy error JSON), and it plays
Twilio's side of the webhooks: signed status, recording and inbound-call callbacks.

    standin = TwilioRestStandIn(account_sid, auth_token)
    async with standin.serve() as base_url:
        ...  # TwilioCalls(account_sid, auth_token, api_url=base_url)

Behaviour worth knowing (chosen to match Twilio as far as it is known):

- Create validates in Twilio's order: To present (21201), From present (21603), Url or Twiml
  or ApplicationSid present (21205), To rejected by `reject_number`, To well-formed: E.164,
  `sip:` or `client:` (21211). Nothing else (From, callback URLs, Twiml size) is checked.
- Update with `Status=completed` ends a queued, ringing or answered call ("completed");
  `Status=canceled` ends a queued or ringing one ("canceled") and leaves an answered call
  alone, as Twilio documents. Updating a call that has already ended with a Status answers
  200 with the call unchanged, so ending a call twice is harmless (`TwilioCalls.hangup`
  gives True both times); redirecting one (Twiml or Url) answers 400 code 21220. A call
  dropped with `forget` is unknown: 404 code 20404, and `hangup` gives False.
- Calls never progress on their own: a test moves them with `set_status` or
  `send_status_callback`, which also updates the stored call (times and duration).
- Callbacks are always POSTed (Highway only asks for POST), whatever the call's
  StatusCallbackMethod says, and are sent whether or not the event was subscribed to.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
from quart import Response, request
from quart_trio import QuartTrio
from twilio.request_validator import RequestValidator
from werkzeug.exceptions import HTTPException

from highway.testing.serving import serve_on_loopback

log = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
LIVE_STATUSES = frozenset({"queued", "ringing", "in-progress"})
FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
# What a status callback's CallStatus may be: the call statuses, plus "initiated".
CALLBACK_STATUSES = LIVE_STATUSES | FINAL_STATUSES | {"initiated"}

_ACCOUNT_PATH = re.compile(rf"^/{API_VERSION}/Accounts/([^/]+)(?:/|$)")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_NANP = re.compile(r"^\+1(\d{3})(\d{3})(\d{4})$")

# Twilio's wording for a refused 'To' number, by error code, as far as it is known.
_REJECTION_MESSAGES = {
    21211: "The 'To' number {to} is not a valid phone number.",
    21214: "'To' phone number cannot be reached",
    21215: (
        "Account not authorized to call {to}. Perhaps you need to enable some international "
        "permissions: https://www.twilio.com/console/voice/calls/geo-permissions/low-risk"
    ),
    21216: "Account not allowed to call {to}",
    21217: "Phone number does not appear to be valid",
    21219: "'To' phone number not verified",
}

Form = dict[str, list[str]]


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stand-in received (form values as lists: keys may repeat)."""

    method: str
    path: str
    form: Form
    username: str | None


@dataclass
class CallRecord:
    """A call the stand-in created: the create form as sent, and its state now."""

    sid: str
    account_sid: str
    form: Form
    date_created: datetime
    status: str = "queued"
    date_updated: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration: int | None = None  # seconds, once the call has ended
    redirects: list[Form] = field(default_factory=list)  # update forms with Twiml or Url
    next_sequence: int = 0  # SequenceNumber of the next status callback
    recording_sid: str | None = None

    def value(self, name: str) -> str | None:
        """The first value of create parameter `name`, or None."""
        values = self.form.get(name)
        return values[0] if values else None

    @property
    def to(self) -> str:
        return self.value("To") or ""

    @property
    def from_(self) -> str:
        return self.value("From") or ""

    @property
    def status_callback(self) -> str | None:
        return self.value("StatusCallback")

    @property
    def recording_status_callback(self) -> str | None:
        return self.value("RecordingStatusCallback")

    @property
    def uri(self) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}.json"

    def move_to(self, status: str, *, duration: int | None = None) -> None:
        """Set the status as Twilio would, keeping start/end times and duration consistent."""
        now = _now()
        if status == "in-progress" and self.start_time is None:
            self.start_time = now
        if status in FINAL_STATUSES:
            self.end_time = self.end_time or now
            if duration is not None:
                self.duration = duration
            elif self.duration is None:
                answered = self.start_time
                self.duration = int((self.end_time - answered).total_seconds()) if answered else 0
        self.status = status
        self.date_updated = now

    def resource(self) -> dict[str, object]:
        """The call as Twilio's Call resource JSON."""
        base = self.uri.removesuffix(".json")
        return {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": rfc2822(self.date_created),
            "date_updated": rfc2822(self.date_updated or self.date_created),
            "direction": "outbound-api",
            "duration": None if self.duration is None else str(self.duration),
            "end_time": rfc2822(self.end_time),
            "forwarded_from": None,
            "from": self.from_,
            "from_formatted": formatted_number(self.from_),
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": self.sid,
            "start_time": rfc2822(self.start_time),
            "status": self.status,
            "subresource_uris": {
                name: f"{base}/{part}.json"
                for name, part in [
                    ("feedback", "Feedback"),
                    ("notifications", "Notifications"),
                    ("recordings", "Recordings"),
                    ("streams", "Streams"),
                    ("payments", "Payments"),
                    ("user_defined_message_subscriptions", "UserDefinedMessageSubscriptions"),
                    ("user_defined_messages", "UserDefinedMessages"),
                    ("events", "Events"),
                    ("siprec", "Siprec"),
                    ("transcriptions", "Transcriptions"),
                ]
            },
            "to": self.to,
            "to_formatted": formatted_number(self.to),
            "trunk_sid": None,
            "uri": self.uri,
        }


@dataclass(frozen=True)
class _Failure:
    status: int
    code: int
    message: str


class TwilioRestStandIn:
    """Twilio's Calls REST API for one account, served on 127.0.0.1 by `serve()`."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.requests: list[RecordedRequest] = []
        self.calls: dict[str, CallRecord] = {}
        self._failures: deque[_Failure] = deque()
        self._rejected: dict[str, int] = {}
        self._validator = RequestValidator(auth_token)
        self._client: httpx.AsyncClient | None = None
        self.base_url: str | None = None  # while serving
        self.app = self._build_app()

    # --- controls for tests -------------------------------------------------------------

    def fail_next_create(self, status: int, code: int, message: str) -> None:
        """Make the next (authenticated) create answer this Twilio error instead."""
        self._failures.append(_Failure(status, code, message))

    def reject_number(self, number: str, code: int = 21211) -> None:
        """Refuse calls to `number` with Twilio error `code` (HTTP 400)."""
        self._rejected[number] = code

    def forget(self, call_sid: str) -> None:
        """Drop a call: from now on Twilio does not know it (404, code 20404)."""
        del self.calls[call_sid]

    def set_status(self, call_sid: str, status: str, *, duration: int | None = None) -> None:
        """Move a call to `status` without sending a callback."""
        if status not in LIVE_STATUSES | FINAL_STATUSES:
            raise ValueError(f"not a call status: {status!r}")
        self.calls[call_sid].move_to(status, duration=duration)

    # --- serving --------------------------------------------------------------------------

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        """Serve on a free port of 127.0.0.1; yields the base URL ("http://127.0.0.1:PORT")."""
        async with (
            httpx.AsyncClient(trust_env=False, timeout=10) as client,
            serve_on_loopback(self.app) as base_url,
        ):
            self._client = client  # callbacks share its connections while serving
            self.base_url = base_url
            try:
                yield base_url
            finally:
                self._client = None
                self.base_url = None

    # --- Twilio's side of the webhooks ----------------------------------------------------

    async def send_status_callback(
        self,
        call_sid: str,
        status: str,
        *,
        deliver_to: str,
        duration: int | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Move the call to `status` and POST the status callback Twilio would send.

        `duration` (seconds) overrides the measured one on a final status; `extra` adds or
        replaces fields (e.g. AnsweredBy, SipResponseCode).
        """
        call = self.calls[call_sid]
        url = _required(call.status_callback, f"call {call_sid} has no StatusCallback")
        if status not in CALLBACK_STATUSES:
            raise ValueError(f"not a callback CallStatus: {status!r}")
        if status != "initiated":  # Twilio's resource stays "queued" while dialling starts
            call.move_to(status, duration=duration)
        params = {
            "AccountSid": call.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": call.sid,
            "CallStatus": status,
            "Called": call.to,
            "Caller": call.from_,
            "CallbackSource": "call-progress-events",
            "Direction": "outbound-api",
            "From": call.from_,
            "SequenceNumber": str(call.next_sequence),
            "Timestamp": rfc2822(_now()),
            "To": call.to,
        }
        call.next_sequence += 1
        if status in FINAL_STATUSES:
            seconds = call.duration or 0
            params["CallDuration"] = str(seconds)
            params["Duration"] = str(math.ceil(seconds / 60))  # billed minutes
        params.update(extra or {})
        return await self.post_signed(url, params, deliver_to=deliver_to)

    async def send_recording_callback(
        self,
        call_sid: str,
        *,
        deliver_to: str,
        recording_url: str | None = None,
        status: str = "completed",
    ) -> httpx.Response:
        """POST the recording status callback Twilio would send for the call's recording."""
        call = self.calls[call_sid]
        url = _required(
            call.recording_status_callback, f"call {call_sid} has no RecordingStatusCallback"
        )
        call.recording_sid = call.recording_sid or new_sid("RE")
        default_url = (
            f"https://api.twilio.com/{API_VERSION}/Accounts/{call.account_sid}"
            f"/Recordings/{call.recording_sid}"
        )
        dual = call.value("RecordingChannels") == "dual"
        params = {
            "AccountSid": call.account_sid,
            "CallSid": call.sid,
            "RecordingChannels": "2" if dual else "1",
            "RecordingDuration": str(call.duration or 0) if status == "completed" else "0",
            "RecordingSid": call.recording_sid,
            "RecordingSource": "OutboundAPI",
            "RecordingStartTime": rfc2822(call.start_time or call.date_created),
            "RecordingStatus": status,
            "RecordingUrl": recording_url or default_url,
        }
        return await self.post_signed(url, params, deliver_to=deliver_to)

    async def post_signed(
        self, url: str, params: Mapping[str, str], *, deliver_to: str
    ) -> httpx.Response:
        """POST `params` form-encoded, signed for `url`, but delivered to `deliver_to`.

        `url` is the public URL Twilio was given (what the signature covers); `deliver_to`
        ("http://127.0.0.1:PORT") replaces its scheme, host and port, as a tunnel or
        reverse proxy in front of a local server would.
        """
        signature = self._validator.compute_signature(url, dict(params))
        headers = {
            "X-Twilio-Signature": signature,
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
            "X-Home-Region": "us1",
            # One connection per callback: an idle keep-alive one would hold up the
            # graceful shutdown of the server under test.
            "Connection": "close",
        }
        target = delivered_url(url, deliver_to)
        if self._client is not None:
            return await self._client.post(target, data=dict(params), headers=headers)
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            return await client.post(target, data=dict(params), headers=headers)

    # --- the HTTP API -----------------------------------------------------------------------

    def _build_app(self) -> QuartTrio:
        app = QuartTrio(__name__)
        calls = f"/{API_VERSION}/Accounts/<account_sid>/Calls"
        app.before_request(self._record_and_authenticate)
        app.post(f"{calls}.json")(self._create)
        app.get(f"{calls}/<call_sid>.json")(self._fetch)
        app.post(f"{calls}/<call_sid>.json")(self._update)
        app.errorhandler(HTTPException)(self._http_error)
        return app

    async def _record_and_authenticate(self) -> Response | None:
        form: Form = (await request.form).to_dict(flat=False)
        auth = request.authorization
        username = auth.username if auth is not None else None
        self.requests.append(RecordedRequest(request.method, request.path, form, username))
        # Twilio checks credentials before anything else, for every path.
        account = _ACCOUNT_PATH.match(request.path)
        if (
            auth is None
            or auth.type != "basic"
            or (auth.username, auth.password) != (self.account_sid, self.auth_token)
            or account is None
            or account.group(1) != self.account_sid
        ):
            return twilio_error(
                401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'}
            )
        return None

    async def _create(self, account_sid: str) -> Response:
        if self._failures:
            failure = self._failures.popleft()
            return twilio_error(failure.status, failure.code, failure.message)
        form: Form = (await request.form).to_dict(flat=False)
        refusal = self._refusal(form)
        if refusal is not None:
            return refusal
        call = CallRecord(new_sid("CA"), account_sid, form, date_created=_now())
        self.calls[call.sid] = call
        log.debug("stand-in created call %s", call.sid)
        return twilio_json(call.resource(), 201)

    def _refusal(self, form: Form) -> Response | None:
        """Twilio's error answer for an invalid create form, or None if it is valid."""
        to, from_ = _first(form, "To"), _first(form, "From")
        if not to:
            return twilio_error(400, 21201, "No 'To' number is specified")
        if not from_:
            return twilio_error(400, 21603, "A 'From' phone number is required.")
        if not any(_first(form, name) for name in ("Url", "Twiml", "ApplicationSid")):
            return twilio_error(400, 21205, "Url parameter is required.")
        code = self._rejected.get(to)
        if code is None and not _valid_to(to):
            code = 21211
        if code is not None:
            template = _REJECTION_MESSAGES.get(code, "The 'To' number {to} was refused.")
            return twilio_error(400, code, template.format(to=to))
        return None

    async def _fetch(self, account_sid: str, call_sid: str) -> Response:
        call = self.calls.get(call_sid)
        if call is None:
            return not_found(request.path)
        return twilio_json(call.resource())

    async def _update(self, account_sid: str, call_sid: str) -> Response:
        call = self.calls.get(call_sid)
        if call is None:
            return not_found(request.path)
        form: Form = (await request.form).to_dict(flat=False)
        status = _first(form, "Status")
        redirect = _first(form, "Twiml") or _first(form, "Url")
        if status is not None and status not in ("completed", "canceled"):
            return twilio_error(400, 20001, f"Invalid Status: {status}")
        if call.status not in LIVE_STATUSES:
            if status is None and redirect:
                return twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
            return twilio_json(call.resource())  # ending an ended call changes nothing
        if status == "completed":
            call.move_to("completed")
        elif status == "canceled":
            if call.status != "in-progress":  # Twilio: canceling leaves answered calls be
                call.move_to("canceled")
        elif redirect:
            call.redirects.append(form)
        return twilio_json(call.resource())

    async def _http_error(self, error: HTTPException) -> Response:
        # Twilio answers unknown paths and methods with its own JSON, not HTML.
        if error.code == 405:
            return twilio_error(405, 20004, "Method not allowed")
        if error.code == 404:
            return not_found(request.path)
        return twilio_error(error.code or 500, 20500, error.description or "Internal error")


def twilio_json(
    body: dict[str, object], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A JSON answer the way Twilio sends it."""
    return Response(
        json.dumps(body),
        status=status,
        content_type="application/json; charset=utf-8",
        headers=headers,
    )


def twilio_error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    """Twilio's legacy error JSON: {"code", "message", "more_info", "status"}."""
    body: dict[str, object] = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return twilio_json(body, status, headers)


def not_found(path: str) -> Response:
    return twilio_error(404, 20404, f"The requested resource {path} was not found")


def delivered_url(url: str, deliver_to: str) -> str:
    """`url` with scheme, host and port taken from `deliver_to`; its path is a prefix."""
    public, local = urlsplit(url), urlsplit(deliver_to)
    path = local.path.rstrip("/") + public.path
    return urlunsplit((local.scheme, local.netloc, path, public.query, ""))


def new_sid(prefix: str) -> str:
    """A Twilio-style SID: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def rfc2822(moment: datetime | None) -> str | None:
    """Twilio's date format, e.g. "Tue, 31 Aug 2010 20:36:28 +0000"."""
    return None if moment is None else format_datetime(moment.replace(microsecond=0))


def formatted_number(number: str) -> str:
    """Twilio's *_formatted: "(415) 555-0100" for North American numbers, else as given."""
    match = _NANP.match(number)
    return f"({match[1]}) {match[2]}-{match[3]}" if match else number


def _valid_to(to: str) -> bool:
    return bool(_E164.match(to)) or to.startswith(("sip:", "client:"))


def _first(form: Form, name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def _required(value: str | None, problem: str) -> str:
    if not value:
        raise LookupError(problem)
    return value


def _now() -> datetime:
    return datetime.now(UTC)
