"""`GET /metrics` on the real server: open like /health, Prometheus text, and what the
bridge counted for real calls (Twilio simulated, OpenAI stood in for, SQLite): frames, the
bridge's own delay on both legs, ended calls by status and reason, barge-ins and
truncations, outcomes, refusals, reconnects, and the calls live at the moment."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from highway.metrics import CONTENT_TYPE
from highway.testing.realtime_standin import Reply
from highway.testing.twilio_rest import TwilioRestStandIn
from tests.api_support import CUSTOMER
from tests.bridge_support import Bridge, running_bridge
from tests.dashboard_support import Samples, sample, scrape
from tests.test_bridge import VERIFY_AND_HANG_UP

GREETING = Reply(text="Hello Ada, this is Highway.", audio_ms=600)
LONG_GREETING = Reply(text="A long greeting that the caller talks over.", audio_ms=3000)
LEGS = ("caller_to_model", "model_to_caller")

OpenBridge = Callable[..., AbstractAsyncContextManager[Bridge]]


@pytest.fixture
def open_bridge(clean_env: Path, twilio: TwilioRestStandIn) -> OpenBridge:
    """`open_bridge(replies=..., SETTING=value)`: a Bridge on SQLite with those changes."""
    return partial(running_bridge, f"sqlite:///{clean_env / 'highway.db'}", twilio)


@pytest.fixture
async def anonymous() -> AsyncIterator[httpx.AsyncClient]:
    """A client without the API key: /metrics needs none."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        yield client


def labelled(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample of `name`, by its labels."""
    return {labels: value for (found, labels), value in samples.items() if found == name}


async def test_metrics_are_open_prometheus_text_and_start_at_zero(
    open_bridge: OpenBridge, anonymous: httpx.AsyncClient
) -> None:
    """Without the API key, a fresh Highway shows every family at zero: no calls, no
    frames, empty delay histograms for both legs, nothing ended or refused."""
    async with open_bridge() as bridge:
        response = await anonymous.get(f"{bridge.highway.url}/metrics")
        samples = await scrape(anonymous, bridge.highway.url)

    assert response.status_code == 200
    # The Prometheus text format, as prometheus_client names it.
    assert response.headers["content-type"] == CONTENT_TYPE
    assert CONTENT_TYPE.startswith("text/plain; version=")
    assert sample(samples, "highway_active_calls") == 0
    assert sample(samples, "highway_frames_total", direction="in") == 0
    assert sample(samples, "highway_frames_total", direction="out") == 0
    for leg in LEGS:
        assert sample(samples, "highway_bridge_delay_seconds_count", leg=leg) == 0
        assert sample(samples, "highway_bridge_delay_seconds_bucket", leg=leg, le="+Inf") == 0
    assert sample(samples, "highway_barge_ins_total") == 0
    assert sample(samples, "highway_truncations_total") == 0
    assert labelled(samples, "highway_calls_ended_total") == {}
    assert labelled(samples, "highway_calls_refused_total") == {}


async def test_a_bridged_call_with_a_barge_in_is_counted(
    open_bridge: OpenBridge, anonymous: httpx.AsyncClient
) -> None:
    """One live call while it runs, none after; frames both ways; the bridge's delay
    observed on both legs; one barge-in that truncated the agent's answer; the call ended
    once, completed because the caller hung up; no errors."""
    async with open_bridge(replies=[LONG_GREETING]) as bridge:
        url = bridge.highway.url
        call = await bridge.place_call()
        async with bridge.dial(call) as caller:
            model = await bridge.model_session()
            with trio.fail_after(5):
                await caller.wait_played(1130)
            during = await scrape(anonymous, url)
            caller.say_speech(400)
            with trio.fail_after(5):
                await caller.wait_for_clear()
                await model.wait_for_event("conversation.item.truncate")
                await bridge.events.wait_for("bargeIn", call.call_id)
            await caller.hang_up()
        await bridge.ended_call(call.call_id)
        after = await scrape(anonymous, url)

    assert sample(during, "highway_active_calls") == 1
    assert sample(after, "highway_active_calls") == 0
    assert sample(after, "highway_frames_total", direction="in") > 0
    assert sample(after, "highway_frames_total", direction="out") > 0
    for leg in LEGS:
        count = sample(after, "highway_bridge_delay_seconds_count", leg=leg)
        assert count > 0, leg
        assert sample(after, "highway_bridge_delay_seconds_bucket", leg=leg, le="+Inf") == count
        assert sample(after, "highway_bridge_delay_seconds_sum", leg=leg) >= 0
    # Counts only grow between scrapes of one process.
    for direction in ("in", "out"):
        assert sample(after, "highway_frames_total", direction=direction) >= sample(
            during, "highway_frames_total", direction=direction
        )
    assert sample(after, "highway_barge_ins_total") == 1
    assert sample(after, "highway_truncations_total") == 1
    assert labelled(after, "highway_calls_ended_total") == {
        frozenset({("status", "completed"), ("reason", "caller_hung_up")}): 1
    }
    assert labelled(after, "highway_errors_total") == {}


async def test_an_outcome_and_the_agents_hang_up_are_counted(
    open_bridge: OpenBridge, anonymous: httpx.AsyncClient
) -> None:
    """A call the agent verified and ended: one `verified` outcome, ended as agent_hung_up."""
    async with open_bridge(replies=VERIFY_AND_HANG_UP) as bridge:
        call = await bridge.place_call()
        await bridge.verify_and_hang_up(call)
        await bridge.ended_call(call.call_id)
        samples = await scrape(anonymous, bridge.highway.url)

    assert labelled(samples, "highway_verification_outcomes_total") == {
        frozenset({("outcome", "verified")}): 1
    }
    assert labelled(samples, "highway_calls_ended_total") == {
        frozenset({("status", "completed"), ("reason", "agent_hung_up")}): 1
    }


async def test_refusals_are_counted_by_their_reason(
    open_bridge: OpenBridge, anonymous: httpx.AsyncClient
) -> None:
    """With the one place taken, a refused API call counts as at_capacity; a stream with a
    forged signature counts as invalid_signature; neither is counted as a call ended."""
    async with open_bridge(replies=[GREETING], HIGHWAY_MAX_CONCURRENT_CALLS="1") as bridge:
        first = await bridge.place_call()
        async with bridge.dial(first) as caller:
            with trio.fail_after(5):
                await caller.wait_played(600)
            verification = await bridge.highway.create_verification()
            refused = await bridge.highway.client.post(
                "/call-customer", json={"to": CUSTOMER, "verification": verification["id"]}
            )
            async with bridge.dial(first, auth_token="not-the-token") as forged:
                with trio.fail_after(5):
                    await forged.wait_closed()
            samples = await scrape(anonymous, bridge.highway.url)
            await caller.hang_up()
        await bridge.ended_call(first.call_id)

    assert refused.status_code == 503
    assert forged.close_code == 1008
    assert labelled(samples, "highway_calls_refused_total") == {
        frozenset({("reason", "at_capacity")}): 1,
        frozenset({("reason", "invalid_signature")}): 1,
    }
    assert labelled(samples, "highway_calls_ended_total") == {}
    assert sample(samples, "highway_active_calls") == 1


async def test_a_dropped_openai_session_counts_as_a_reconnect(
    open_bridge: OpenBridge, anonymous: httpx.AsyncClient
) -> None:
    """OpenAI dropping mid-call: the new session for the same call is one reconnect."""
    async with open_bridge(replies=[GREETING]) as bridge:
        call = await bridge.place_call()
        async with bridge.dial(call) as caller:
            first = await bridge.model_session(0)
            with trio.fail_after(5):
                await caller.wait_played(600)
            await first.drop()
            second = await bridge.model_session(1)
            with trio.fail_after(5):
                await second.wait_for_event("session.update")
            await caller.hang_up()
        await bridge.ended_call(call.call_id)
        samples = await scrape(anonymous, bridge.highway.url)

    assert sample(samples, "highway_openai_reconnects_total") == 1
    assert labelled(samples, "highway_calls_ended_total") == {
        frozenset({("status", "completed"), ("reason", "caller_hung_up")}): 1
    }
