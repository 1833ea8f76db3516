"""`highway serve --workers 2` on PostgreSQL: one deployment, whichever worker answers.

A dashboard connected to one worker must see a call carried by the other (events travel
through PostgreSQL LISTEN/NOTIFY), and /metrics must add up every worker's figures.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import trio
import trio_websocket
from prometheus_client.parser import text_string_to_metric_families

from tests.cli_support import STARTUP_TIMEOUT, log_records, serving, stop

API_KEY = "workers-test-key-5b1e"
# Connections are spread over the workers by the kernel, not in turn: enough tries that
# missing one of two workers every time is (1/2)^40, i.e. never.
MAX_DASHBOARDS = 40
CALL_TIMEOUT = 60


class Dashboard:
    """One dashboard connection: the worker it reached and every event it was sent."""

    def __init__(self, connection: trio_websocket.WebSocketConnection, worker: int) -> None:
        self.connection = connection
        self.worker = worker
        self.events: list[dict[str, Any]] = []
        self._changed = trio.Event()

    async def read(self) -> None:
        """Collect events until the connection closes."""
        while True:
            try:
                message = await self.connection.get_message()
            except trio_websocket.ConnectionClosed:
                return
            self.events.append(orjson.loads(message))
            self._changed.set()
            self._changed = trio.Event()

    def of_call(self, call_id: int) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("callId") == call_id]

    async def wait_for(self, kind: str, call_id: int) -> dict[str, Any]:
        while True:
            for event in self.of_call(call_id):
                if event["type"] == kind:
                    return event
            await self._changed.wait()


@asynccontextmanager
async def dashboards_on_every_worker(port: int, workers: int) -> AsyncIterator[list[Dashboard]]:
    """Open dashboards until each of `workers` workers has one; they read in the background."""
    url = f"ws://127.0.0.1:{port}/dashboard/events"
    opened: list[Dashboard] = []
    async with trio.open_nursery() as nursery:
        for _ in range(MAX_DASHBOARDS):
            connection = await trio_websocket.connect_websocket_url(nursery, url)
            await connection.send_message(orjson.dumps({"type": "auth", "apiKey": API_KEY}))
            snapshot = orjson.loads(await connection.get_message())
            assert snapshot["type"] == "snapshot"
            dashboard = Dashboard(connection, snapshot["worker"])
            opened.append(dashboard)
            nursery.start_soon(dashboard.read)
            if len({d.worker for d in opened}) == workers:
                break
        assert len({d.worker for d in opened}) == workers, "the kernel never chose one worker"
        yield opened
        for dashboard in opened:
            await dashboard.connection.aclose()


async def metrics(client: httpx.AsyncClient, port: int) -> dict[tuple[str, tuple], float]:
    response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def test_a_call_on_one_worker_reaches_dashboards_on_every_worker(
    tmp_path: Path, postgres_url: str
):
    async with serving(
        tmp_path, "--workers", "2", HIGHWAY_DATABASE_URL=postgres_url, HIGHWAY_API_KEY=API_KEY
    ) as (process, output, port):
        with trio.fail_after(STARTUP_TIMEOUT):
            await output.wait_for(re.compile(rb"(?s)Running on.*Running on.*\n"))
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with (
            httpx.AsyncClient(trust_env=False, timeout=10, headers=headers) as client,
            dashboards_on_every_worker(port, workers=2) as dashboards,
        ):
            # Offline mode: the Twilio simulator rings in, the stand-in agent answers.
            started = await client.post(f"http://127.0.0.1:{port}/dashboard/simulate-call")
            assert started.status_code == 202, started.text
            call_id = started.json()["callId"]
            with trio.fail_after(CALL_TIMEOUT):
                for dashboard in dashboards:
                    await dashboard.wait_for("clientDisconnected", call_id)

            carrier = dashboards[0].of_call(call_id)[-1]["worker"]
            assert any(dashboard.worker != carrier for dashboard in dashboards)
            seen = [
                [(event["type"], event.get("eventId")) for event in dashboard.of_call(call_id)]
                for dashboard in dashboards
            ]
            # Every dashboard, on either worker, saw the same events in the same order.
            assert all(events == seen[0] for events in seen)
            kinds = [kind for kind, _ in seen[0]]
            for kind in ("callUpdated", "clientConnected", "ava_response", "user_transcript"):
                assert kind in kinds
            assert kinds.index("clientConnected") < kinds.index("clientDisconnected")
            stored = (await client.get(f"http://127.0.0.1:{port}/calls/{call_id}")).json()
            said = [event["id"] for event in stored["events"] if event["kind"] == "assistant"]
            assert said == [id_ for kind, id_ in seen[0] if kind == "ava_response"]

            # Whichever worker answers the scrape, it counts the other's call too.
            for _ in range(6):
                figures = await metrics(client, port)
                labels = (("reason", "caller_hung_up"), ("status", "completed"))
                assert figures[("highway_calls_ended_total", labels)] == 1
                assert figures[("highway_frames_total", (("direction", "in"),))] > 0
                assert figures[("highway_active_calls", ())] == 0

        returncode = await stop(process, output, signal.SIGTERM)

    assert returncode == 0, output.text
    # The call's own lines carry its id and its stream's SID, in the worker that carried it.
    ended_lines = [
        record
        for record in log_records(output.text)
        if str(record["event"]).startswith(f"call {call_id} ended")
    ]
    assert len(ended_lines) == 1
    assert ended_lines[0]["call_id"] == call_id
    assert str(ended_lines[0]["stream_sid"]).startswith("MZ")
    assert ended_lines[0]["worker"] == carrier


async def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path, postgres_url: str):
    """A worker left without its parent (SIGKILL, say) stops rather than go on alone."""
    async with serving(tmp_path, "--workers", "2", HIGHWAY_DATABASE_URL=postgres_url) as (
        process,
        output,
        _,
    ):
        with trio.fail_after(STARTUP_TIMEOUT):
            started = await output.wait_for(re.compile(rb"started 2 workers: (\d+), (\d+)"))
        workers = [os.pidfd_open(int(pid)) for pid in started.groups()]
        try:
            process.kill()
            with trio.fail_after(STARTUP_TIMEOUT):
                for pidfd in workers:
                    await trio.lowlevel.wait_readable(pidfd)  # readable once it has exited
        finally:
            for pidfd in workers:
                os.close(pidfd)
