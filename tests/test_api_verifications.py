"""POST /verifications, GET /verifications/{id}, GET /verifications."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import trio

from tests.api_support import API_KEY, CUSTOMER, VERIFICATION, Highway


async def test_a_verification_is_created_and_read_back(highway: Highway) -> None:
    created = await highway.create_verification(
        language="pt-BR", instructions="Speak slowly.", voice="cedar"
    )
    assert created["id"] >= 1
    assert created["customerName"] == "Ada Lovelace" and created["phone"] == CUSTOMER
    assert created["fields"] == [
        {"name": "date_of_birth", "expected": "1815-12-10", "status": "pending", "heard": None},
        {"name": "postcode", "expected": "W1J 7NT", "status": "pending", "heard": None},
    ]
    assert (created["language"], created["instructions"], created["voice"]) == (
        "pt-BR",
        "Speak slowly.",
        "cedar",
    )
    assert created["status"] == "pending" and created["outcome"] is None
    assert datetime.fromisoformat(created["createdAt"]).tzinfo is not None

    fetched = await highway.client.get(f"/verifications/{created['id']}")
    assert fetched.status_code == 200 and fetched.json() == created


async def test_defaults_for_language_instructions_and_voice(highway: Highway) -> None:
    created = await highway.create_verification()
    assert (created["language"], created["instructions"], created["voice"]) == ("en", None, None)


async def test_an_unknown_verification_is_404(highway: Highway) -> None:
    response = await highway.client.get("/verifications/999")
    assert response.status_code == 404
    assert response.json() == {"error": "Verification 999 not found"}


async def test_verifications_are_listed_newest_first_and_by_status(highway: Highway) -> None:
    first = await highway.create_verification()
    second = await highway.create_verification(customerName="Charles Babbage")
    listed = (await highway.client.get("/verifications")).json()["verifications"]
    assert [v["id"] for v in listed] == [second["id"], first["id"]]

    pending = await highway.client.get("/verifications", params={"status": "pending"})
    assert len(pending.json()["verifications"]) == 2
    done = await highway.client.get("/verifications", params={"status": "completed"})
    assert done.json() == {"verifications": []}
    page = await highway.client.get("/verifications", params={"limit": 1, "offset": 1})
    assert [v["id"] for v in page.json()["verifications"]] == [first["id"]]


@pytest.mark.parametrize(
    ("path", "query", "message"),
    [
        (
            "/verifications",
            {"status": "done"},
            '"status" must be one of [pending, in_progress, completed]',
        ),
        ("/verifications", {"limit": "0"}, '"limit" must be greater than or equal to 1'),
        ("/verifications", {"limit": "many"}, '"limit" must be a number'),
        ("/verifications", {"offset": "-1"}, '"offset" must be greater than or equal to 0'),
        ("/calls", {"verification": "abc"}, '"verification" must be a number'),
        ("/calls", {"status": "done"}, '"status" must be one of ['),
        ("/calls", {"limit": "1001"}, '"limit" must be less than or equal to 1000'),
    ],
)
async def test_bad_list_queries_are_400(
    highway: Highway, path: str, query: dict, message: str
) -> None:
    response = await highway.client.get(path, params=query)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)


def _without(key: str) -> dict:
    return {k: v for k, v in VERIFICATION.items() if k != key}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_without("customerName"), '"customerName" is required'),
        (_without("phone"), '"phone" is required'),
        (_without("fields"), '"fields" is required'),
        (VERIFICATION | {"phone": "415-555-0100"}, '"phone" must be a valid E.164 phone number'),
        (VERIFICATION | {"customerName": ""}, '"customerName" is not allowed to be empty'),
        (VERIFICATION | {"customerName": 7}, '"customerName" must be a string'),
        (VERIFICATION | {"fields": []}, '"fields" must contain at least 1 items'),
        (VERIFICATION | {"fields": "dob"}, '"fields" must be an array'),
        (VERIFICATION | {"fields": [{"name": "dob"}]}, '"fields[0].expected" is required'),
        (
            VERIFICATION | {"fields": [{"name": "a", "expected": "1"}] * 2},
            '"fields" must not name a field twice ("a")',
        ),
        (VERIFICATION | {"language": "english!"}, '"language" has an invalid format'),
        (VERIFICATION | {"voice": "Not A Voice"}, '"voice" has an invalid format'),
        (VERIFICATION | {"nickname": "Ada"}, '"nickname" is not allowed'),
        (["not", "an", "object"], "Request body must be a JSON object"),
    ],
)
async def test_invalid_verifications_are_400_in_the_seeds_words(
    highway: Highway, body: object, message: str
) -> None:
    response = await highway.client.post("/verifications", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == message
    assert message in response.json()["details"]
    assert (await highway.client.get("/verifications")).json() == {"verifications": []}


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        ("{not json", "application/json"),
        ("customerName=Ada", "application/x-www-form-urlencoded"),
        # What a page of another site can post without the browser asking first (CORS):
        # refused even when it is valid JSON, so no such page can use a keyless Highway.
        (json.dumps(VERIFICATION), "text/plain"),
    ],
)
async def test_a_body_that_is_not_json_is_400(
    highway: Highway, content: str, content_type: str
) -> None:
    response = await highway.client.post(
        "/verifications", content=content, headers={"Content-Type": content_type}
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("Request body must be")


async def test_an_oversized_body_is_413_before_it_is_read(highway: Highway) -> None:
    """Refused on its declared length alone: the server does not wait for 2 MiB to arrive."""
    port = int(highway.url.rsplit(":", 1)[1])
    head = (
        "POST /verifications HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {2 << 20}\r\nConnection: close\r\n\r\n{{"
    )
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(head.encode())
            answer = b""
            while b"\r\n\r\n" not in answer and (chunk := await stream.receive_some()):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 413")
