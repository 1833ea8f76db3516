"""The API key, and the OpenAPI document."""

from __future__ import annotations

import httpx
import pytest

from tests.api_support import API_KEY, Highway

PROTECTED = [
    ("POST", "/verifications"),
    ("GET", "/verifications"),
    ("GET", "/verifications/1"),
    ("POST", "/call-customer"),
    ("GET", "/calls"),
    ("GET", "/calls/1"),
    ("GET", "/openapi.json"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    "authorization",
    [None, f"Bearer {API_KEY}x", f"Basic {API_KEY}"],
)
async def test_every_api_route_needs_the_api_key(
    highway: Highway, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=highway.url, trust_env=False) as anonymous:
        response = await anonymous.request(method, path, headers=headers, json={})
    assert response.status_code == 401
    assert response.json() == {"error": "Missing or invalid API key"}
    assert response.headers["WWW-Authenticate"] == "Bearer"
    # Nothing was done: no verification was created.
    assert (await highway.client.get("/verifications")).json() == {"verifications": []}


async def test_health_and_readiness_need_no_key(highway: Highway) -> None:
    async with httpx.AsyncClient(base_url=highway.url, trust_env=False) as anonymous:
        health, ready = await anonymous.get("/health"), await anonymous.get("/ready")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "worker": health.json()["worker"]}


async def test_the_openapi_document_describes_the_api(highway: Highway) -> None:
    response = await highway.client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["info"]["title"] == "Highway"
    paths = document["paths"]
    for path, method in [
        ("/verifications", "post"),
        ("/verifications", "get"),
        ("/verifications/{verification_id}", "get"),
        ("/call-customer", "post"),
        ("/calls", "get"),
        ("/calls/{call_id}", "get"),
        ("/twilio/status", "post"),
        ("/twilio/recording", "post"),
        ("/twilio/incoming", "post"),
    ]:
        assert method in paths[path], (path, method)
    call_customer = paths["/call-customer"]["post"]
    body_schema = call_customer["requestBody"]["content"]["application/json"]["schema"]
    schemas = document["components"]["schemas"]
    request_model = (
        schemas[body_schema["$ref"].rsplit("/", 1)[1]] if "$ref" in body_schema else body_schema
    )
    assert set(request_model["required"]) == {"to", "verification"}
    assert {"200", "400", "404", "500"} <= set(call_customer["responses"])
    # Twilio's webhooks carry Twilio's signature, not the API key.
    assert paths["/twilio/status"]["post"]["security"] == []
    assert document["security"] == [{"bearer": []}]


async def test_without_a_key_configured_the_api_is_open(
    clean_env: object, database_url: str, twilio: object
) -> None:
    """With no HIGHWAY_API_KEY, `highway serve` only binds loopback, and the API is open."""
    from highway.app import create_app
    from highway.config import Settings
    from highway.testing.serving import serve_on_loopback

    settings = Settings(HIGHWAY_DATABASE_URL=database_url)  # type: ignore[call-arg]
    async with (
        serve_on_loopback(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url, trust_env=False) as anonymous,
    ):
        response = await anonymous.get("/verifications")
    assert response.status_code == 200 and response.json() == {"verifications": []}
