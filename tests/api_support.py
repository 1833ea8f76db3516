"""Shared parts of the API tests: a served Highway wired to the Twilio REST stand-in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from highway.testing.twilio_rest import TwilioRestStandIn

API_KEY = "hw-test-key-7c1e"
ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "twilio-test-token-5b9d"
# What Twilio is told; requests really arrive at the local server (as behind a proxy).
PUBLIC_URL = "https://highway.example.test"
HIGHWAY_NUMBER = "+15005550006"
CUSTOMER = "+14155550100"

VERIFICATION = {
    "customerName": "Ada Lovelace",
    "phone": CUSTOMER,
    "purpose": "Confirm the details of a new account",
    "fields": [
        {"name": "date_of_birth", "expected": "1815-12-10"},
        {"name": "postcode", "expected": "W1J 7NT"},
    ],
}


def api_client(base_url: str) -> httpx.AsyncClient:
    """A client for a served Highway that sends the API key (and ignores any proxy)."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {API_KEY}"},
        trust_env=False,
        timeout=10,
    )


@dataclass
class Highway:
    """A running Highway and what surrounds it."""

    url: str  # where it really listens
    client: httpx.AsyncClient  # sends the API key
    twilio: TwilioRestStandIn

    async def create_verification(self, **changes: Any) -> dict[str, Any]:
        response = await self.client.post("/verifications", json=VERIFICATION | changes)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def place_call(self, verification_id: int, to: str = CUSTOMER) -> dict[str, Any]:
        response = await self.client.post(
            "/call-customer", json={"to": to, "verification": verification_id}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def call(self, call_id: int) -> dict[str, Any]:
        response = await self.client.get(f"/calls/{call_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body
