"""GET /health and error responses, through a real Hypercorn server in this process."""

from __future__ import annotations

import os

import httpx
from quart_trio import QuartTrio

from highway.app import settings_of
from highway.config import Settings


async def test_health_reports_ok_and_worker_pid(base_url: str, http_client: httpx.AsyncClient):
    response = await http_client.get(f"{base_url}/health")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    # In-process server, so the worker is this very process.
    assert response.json() == {"status": "ok", "worker": os.getpid()}


async def test_base_url_is_loopback_with_a_real_port(base_url: str):
    assert base_url.startswith("http://127.0.0.1:")
    assert int(base_url.rsplit(":", 1)[1]) > 0


async def test_unknown_path_is_a_json_404(base_url: str, http_client: httpx.AsyncClient):
    response = await http_client.get(f"{base_url}/no-such-page")

    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}


async def test_wrong_method_is_a_405_that_keeps_allow(
    base_url: str, http_client: httpx.AsyncClient
):
    response = await http_client.post(f"{base_url}/health")

    assert response.status_code == 405
    assert response.json() == {"error": "Method Not Allowed"}
    assert "GET" in response.headers["allow"]


def test_app_keeps_its_settings(app: QuartTrio, settings: Settings):
    assert settings_of(app) is settings
