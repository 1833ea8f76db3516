"""Checking that a webhook or stream handshake really comes from Twilio.

Twilio signs the URL it was given (Highway's public URL, not the address a proxy forwards
to) together with the POSTed form, using the account's auth token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twilio.request_validator import RequestValidator


def public_request_url(public_url: str, path: str, query_string: str) -> str:
    """The URL Twilio requested, as seen from outside: `public_url` + path + query."""
    return public_url + path + (f"?{query_string}" if query_string else "")


class TwilioSignatureCheck:
    """Validates `X-Twilio-Signature` values with one account's auth token."""

    def __init__(self, auth_token: str) -> None:
        self._validator = RequestValidator(auth_token)

    def is_valid(self, url: str, params: Mapping[str, Any], signature: str | None) -> bool:
        """True if `signature` is Twilio's for `url` and the form `params` (a MultiDict keeps
        repeated keys, which Twilio signs too)."""
        return bool(signature) and self._validator.validate(url, params, signature)
