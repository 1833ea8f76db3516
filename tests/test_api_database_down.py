"""A database that is down or stuck: a clear 503, no traceback, and nothing half-written."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio

from highway.testing.postgres import PostgresCluster
from highway.testing.twilio_rest import TwilioRestStandIn
from tests.api_support import CUSTOMER, PUBLIC_URL, VERIFICATION, Highway
from tests.conftest import api_settings, running_highway

UNAVAILABLE = {"error": "Database unavailable, try again shortly"}


async def _assert_every_route_is_503(highway: Highway) -> None:
    requests = [
        highway.client.get("/verifications/1"),
        highway.client.get("/verifications"),
        highway.client.post("/verifications", json=VERIFICATION),
        highway.client.post("/call-customer", json={"to": CUSTOMER, "verification": 1}),
        highway.client.get("/calls"),
        highway.client.get("/calls/1"),
        highway.twilio.post_signed(
            f"{PUBLIC_URL}/twilio/status",
            {"CallSid": "CA" + "a" * 32, "CallStatus": "ringing"},
            deliver_to=highway.url,
        ),
    ]
    for request in requests:
        with trio.fail_after(10):
            response = await request
        assert response.status_code == 503, response.text
        assert response.json() == UNAVAILABLE
        assert response.headers["Retry-After"] == "5"
        assert "Traceback" not in response.text


async def test_postgres_down_is_503_and_recovers(
    clean_env: Path, own_postgres_cluster: PostgresCluster, twilio: TwilioRestStandIn
) -> None:
    assert twilio.base_url is not None
    settings = api_settings(
        own_postgres_cluster.url(), twilio.base_url, HIGHWAY_DB_TIMEOUT_SECONDS="0.5"
    )
    async with running_highway(settings, twilio) as highway:
        created = await highway.create_verification()
        await trio.to_thread.run_sync(own_postgres_cluster.stop, "fast")

        await _assert_every_route_is_503(highway)
        assert twilio.requests == []  # no call was placed without a record
        # Not ready (a load balancer sends traffic elsewhere), but alive.
        with trio.fail_after(10):
            not_ready = await highway.client.get("/ready")
        assert not_ready.status_code == 503
        assert not_ready.json()["status"] == "unavailable"
        assert not_ready.json()["error"] == "Database unavailable"
        assert (await highway.client.get("/health")).status_code == 200

        await trio.to_thread.run_sync(own_postgres_cluster.start)
        with trio.fail_after(10):
            while (response := await highway.client.get("/verifications/1")).status_code == 503:
                await trio.sleep(0.05)
        assert response.json() == created  # nothing was lost
        assert (await highway.client.get("/ready")).json()["status"] == "ready"


async def test_a_locked_sqlite_database_is_503(
    clean_env: Path, tmp_path: Path, twilio: TwilioRestStandIn
) -> None:
    assert twilio.base_url is not None
    path = tmp_path / "highway.db"
    settings = api_settings(f"sqlite:///{path}", twilio.base_url, HIGHWAY_DB_TIMEOUT_SECONDS="0.3")
    async with running_highway(settings, twilio) as highway:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # e.g. a backup tool holding the database
        try:
            await _assert_every_route_is_503(highway)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # Nothing was half-written while it was locked.
        assert (await highway.client.get("/verifications")).json() == {"verifications": []}
        assert (await highway.create_verification())["id"] == 1
