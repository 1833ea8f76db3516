"""Shared parts of the bridge tests: Highway served on 127.0.0.1 with the OpenAI stand-in,
the Twilio REST stand-in, and simulated Twilio media streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from highway.app import create_app
from highway.dashboard.hub import EventHub
from highway.services import EXTENSION_KEY, Services
from highway.store import Store
from highway.telephony.twiml import stream_url
from highway.testing.realtime_standin import RealtimeStandIn, Reply, StandInSession
from highway.testing.serving import serve_on_loopback
from highway.testing.twilio_media import SimulatedCall, open_simulated_call
from highway.testing.twilio_rest import TwilioRestStandIn
from tests.api_support import ACCOUNT_SID, AUTH_TOKEN, PUBLIC_URL, Highway, api_client
from tests.conftest import api_settings

OPENAI_KEY = "sk-test-bridge-31f0"


@dataclass
class PlacedCall:
    verification_id: int
    call_id: int
    call_sid: str

    @property
    def path(self) -> str:
        return f"/media-stream/{self.verification_id}/{self.call_id}"


@dataclass
class Bridge:
    """Highway with an agent behind it, and a way to ring it like Twilio does."""

    highway: Highway
    agent: RealtimeStandIn
    services: Services
    events: HubWatcher

    @property
    def store(self) -> Store:
        return self.services.store

    async def place_call(self, **verification: Any) -> PlacedCall:
        """A verification and an outbound call to it, through the REST API."""
        created = await self.highway.create_verification(**verification)
        placed = await self.highway.place_call(created["id"])
        return PlacedCall(created["id"], placed["callId"], placed["callSid"])

    def ws_url(self, path: str) -> str:
        return self.highway.url.replace("http://", "ws://") + path

    @asynccontextmanager
    async def dial(
        self, call: PlacedCall, *, auth_token: str | None = AUTH_TOKEN, **options: Any
    ) -> AsyncIterator[SimulatedCall]:
        """Twilio's side of `call`'s media stream, signed as Twilio signs it."""
        signed = stream_url(PUBLIC_URL, call.verification_id, call.call_id)
        async with open_simulated_call(
            self.ws_url(call.path),
            auth_token=auth_token,
            signed_url=signed,
            call_sid=call.call_sid,
            account_sid=ACCOUNT_SID,
            custom_parameters={
                "verificationId": str(call.verification_id),
                "callId": str(call.call_id),
            },
            **options,
        ) as simulated:
            yield simulated

    async def verify_and_hang_up(self, call: PlacedCall) -> None:
        """Answer `call` and speak once after the greeting: with the stand-in scripted with
        VERIFY_AND_HANG_UP (tests/test_bridge.py), the agent verifies and hangs up."""
        async with self.dial(call) as caller:
            with trio.fail_after(5):
                await caller.wait_played(300)
            caller.say_speech(400)
            with trio.fail_after(10):
                await caller.wait_closed()

    async def model_session(self, index: int = 0) -> StandInSession:
        with trio.fail_after(5):
            return await self.agent.wait_for_session(index)

    async def call_record(self, call_id: int) -> dict[str, Any]:
        return await self.highway.call(call_id)

    async def ended_call(self, call_id: int, timeout: float = 5) -> dict[str, Any]:
        """The call's record once the bridge has finalised it."""
        with trio.fail_after(timeout):
            await self.events.wait_for("clientDisconnected", call_id)
        return await self.highway.call(call_id)


class HubWatcher:
    """Collects everything published on Highway's event hub, for tests to wait on."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self.events: list[dict[str, Any]] = []
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self.hub.subscribe() as subscriber:
            task_status.started()
            async for event in subscriber:
                self.events.append(event)
                self._changed.set()
                self._changed = trio.Event()

    def of(self, kind: str, call_id: int) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind and e["callId"] == call_id]

    async def wait_for(self, kind: str, call_id: int, count: int = 1) -> dict[str, Any]:
        """Wait until `count` events of `kind` for the call were published; the last one."""
        while len(found := self.of(kind, call_id)) < count:
            await self._changed.wait()
        return found[count - 1]


@asynccontextmanager
async def running_bridge(
    database_url: str,
    twilio: TwilioRestStandIn,
    *,
    replies: Iterable[Reply] = (),
    agent_options: Mapping[str, Any] | None = None,
    **overrides: str,
) -> AsyncIterator[Bridge]:
    """Highway on `database_url`, its model the OpenAI stand-in scripted with `replies`."""
    agent = RealtimeStandIn(replies, api_key=OPENAI_KEY, **(agent_options or {}))
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.serve)
        assert twilio.base_url is not None
        settings = api_settings(
            database_url,
            twilio.base_url,
            OPENAI_API_KEY=OPENAI_KEY,
            HIGHWAY_OPENAI_URL=agent.url,
            **overrides,
        )
        app = create_app(settings)
        services: Services = app.extensions[EXTENSION_KEY]
        watcher = HubWatcher(services.hub)
        await nursery.start(watcher.run)
        async with (
            serve_on_loopback(app) as url,
            api_client(url) as client,
        ):
            yield Bridge(Highway(url, client, twilio), agent, services, watcher)
        nursery.cancel_scope.cancel()
    # Every event Highway sent was valid for the openai SDK's types, with no unknown field.
    assert [s.invalid_events for s in agent.sessions if s.invalid_events] == []
