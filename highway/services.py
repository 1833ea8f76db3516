"""What the app's routes share: the settings, the store, the Twilio client, the event hub
and the live calls, opened when the server starts serving and closed when it stops.

In offline mode (no OPENAI_API_KEY) the model is Highway's own stand-in agent, served on
127.0.0.1 by this process, so that calls still run end to end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from quart import current_app

from highway.call.session import ModelEndpoint
from highway.config import Settings, redact_url
from highway.dashboard.fanout import PostgresFanout
from highway.dashboard.hub import EventHub
from highway.metrics import Meters, Snapshot, WorkerShare, merge_snapshots, render
from highway.store import Store, open_store
from highway.telephony.twilio_rest import TwilioCalls

if TYPE_CHECKING:
    from highway.call.session import CallSession

log = logging.getLogger(__name__)

EXTENSION_KEY = "highway"
# How often each worker writes its figures for the others (well within their staleness).
METRICS_SHARE_SECONDS = 1.0
# Past its call's longest life, a stream still counted means its worker died mid-call.
STALE_STREAM_MARGIN_SECONDS = 60.0


class Services:
    def __init__(self, settings: Settings, metrics_dir: Path | None = None) -> None:
        self.settings = settings
        self.meters = Meters()
        # Several workers share one port: each writes its figures here, and whichever
        # answers a scrape adds them all up.
        self._metrics_share = WorkerShare(metrics_dir) if metrics_dir is not None else None
        self._store: Store | None = None
        self.twilio: TwilioCalls | None = None  # None: Twilio credentials are not configured
        self.hub = EventHub()
        self.model: ModelEndpoint = _openai_endpoint(settings)
        self.live_calls: dict[int, CallSession] = {}

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the store is opened when the server starts serving")
        return self._store

    @property
    def stale_stream_seconds(self) -> float:
        """A stream counted for longer than this belongs to a worker that died mid-call."""
        return self.settings.max_call_seconds + STALE_STREAM_MARGIN_SECONDS

    async def at_capacity(self) -> bool:
        """True when HIGHWAY_MAX_CONCURRENT_CALLS calls are streaming, deployment-wide."""
        streaming = await self.store.streaming_calls(stale_after_seconds=self.stale_stream_seconds)
        return streaming >= self.settings.max_concurrent_calls

    @contextmanager
    def live_call(self, call_id: int, session: CallSession) -> Iterator[None]:
        """Count `session` as live while the block runs."""
        self.live_calls[call_id] = session
        try:
            yield
        finally:
            del self.live_calls[call_id]
            if self._metrics_share is not None:
                # At once, not at the next tick: a scrape answered by another worker then
                # already counts this call as ended by the time its end was published.
                # Blocking, but a few small file operations once per call.
                self._write_metrics(self._metrics_share)

    async def open(self, nursery: trio.Nursery) -> None:
        """Open everything; `nursery` runs what lasts as long as the server: the offline
        agent, the dashboards' PostgreSQL fan-out and the metrics sharing, as configured."""
        settings = self.settings
        log.info("database: %s", redact_url(settings.database_url))
        self._store = await open_store(settings.database_url, timeout=settings.db_timeout_seconds)
        if not settings.twilio_configured:
            log.warning("Twilio is not configured: outbound calls are disabled")
        else:
            assert settings.twilio_account_sid and settings.twilio_auth_token
            self.twilio = TwilioCalls(
                settings.twilio_account_sid,
                settings.twilio_auth_token.get_secret_value(),
                api_url=settings.twilio_api_url,
            )
        if not settings.uses_sqlite:
            # Several workers or hosts may share this database: dashboards on each must
            # see the calls carried by all of them.
            fanout = PostgresFanout(
                self.hub, self._store, settings.database_url, timeout=settings.db_timeout_seconds
            )
            await nursery.start(fanout.run)
        if settings.offline:
            self.model = await _start_offline_agent(nursery)
        if self._metrics_share is not None:
            nursery.start_soon(self._share_metrics, self._metrics_share)

    async def metrics(self) -> bytes:
        """The Prometheus text for this worker, or for all of them if there are several."""
        snapshot = self._metrics_snapshot()
        share = self._metrics_share
        if share is None:
            return render(snapshot)
        await trio.to_thread.run_sync(share.write, snapshot)
        snapshots = await trio.to_thread.run_sync(share.read_all)
        return render(merge_snapshots(snapshots, now=time.time()))

    def _metrics_snapshot(self) -> Snapshot:
        return self.meters.snapshot(active_calls=len(self.live_calls))

    async def _share_metrics(self, share: WorkerShare) -> None:
        while True:
            await trio.to_thread.run_sync(self._write_metrics, share)
            await trio.sleep(METRICS_SHARE_SECONDS)

    def _write_metrics(self, share: WorkerShare) -> None:
        try:
            share.write(self._metrics_snapshot())
        except OSError as error:
            # The other workers' scrapes miss this one's latest figures; nothing else.
            log.warning("metrics not shared with the other workers: %s", error)

    async def aclose(self) -> None:
        if self.twilio is not None:
            await self.twilio.aclose()
            self.twilio = None
        if self._store is not None:
            await self._store.aclose()
            self._store = None


def _openai_endpoint(settings: Settings) -> ModelEndpoint:
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    return ModelEndpoint(settings.openai_url, settings.openai_model, key)


async def _start_offline_agent(nursery: trio.Nursery) -> ModelEndpoint:
    # Imported here: only offline mode needs the stand-in.
    from highway.testing.offline_agent import offline_agent

    agent = await nursery.start(offline_agent().serve)
    log.warning("offline mode: calls are answered by the built-in stand-in agent at %s", agent.url)
    return ModelEndpoint(agent.url, "highway-offline-agent", None)


def services() -> Services:
    """The current app's services."""
    found: Services = current_app.extensions[EXTENSION_KEY]
    return found
