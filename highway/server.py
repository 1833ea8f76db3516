"""Running the app under Hypercorn's trio worker, in this process or in several workers.

The listening sockets are bound here, before any worker starts, so that a bind failure is a
plain OSError the CLI can report in one line, `--port 0` yields one real port that every
worker shares, and the workers (spawned processes) inherit the sockets. That is why this
module drives `hypercorn.trio.run.worker_serve`, the function behind both
`hypercorn.trio.serve` and Hypercorn's own trio workers, which accepts ready sockets.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import re
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path

import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import LifespanFailureError, check_multiprocess_shutdown_event, wrap_app

from highway.app import create_app
from highway.config import Settings
from highway.log import configure_logging, current_log_settings

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_QUOTED = re.compile(r"'(.*)'$", re.DOTALL)


def hypercorn_config(host: str, port: int, shutdown_grace_seconds: float = 30) -> Config:
    """Hypercorn settings for serving on host:port, logging through the stdlib root logger.

    On shutdown Hypercorn stops accepting at once, lets live connections (calls) go on for
    `shutdown_grace_seconds`, then cancels them; a call then closes with 1001.
    """
    config = Config()
    config.graceful_timeout = shutdown_grace_seconds
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    # Passing Logger objects (not "-") stops Hypercorn adding its own handler and format.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = None
    # config.workers stays 1 even with several workers: above 1 Hypercorn sets SO_REUSEPORT,
    # which would let a second Highway silently share the port. Ours share one socket.
    return config


def bind_sockets(config: Config) -> Sockets:
    """Bind and listen on config.bind. Raises OSError (e.g. address in use)."""
    sockets = config.create_sockets()
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)
    return sockets


def close_sockets(sockets: Sockets) -> None:
    for sock in [*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets]:
        sock.close()


class StartupFailed(Exception):
    """The app could not start serving, e.g. its database is unreachable. One-line message."""


def serve(settings: Settings, config: Config, sockets: Sockets, workers: int) -> int:
    """Serve until SIGINT or SIGTERM, then shut down gracefully. Returns an exit code."""
    try:
        if workers == 1:
            try:
                trio.run(_serve_here, settings, config, sockets)
            except StartupFailed as failure:
                log.error("cannot start: %s", failure)
                return 1
            return 0
        # The workers share their metrics here, so that a scrape shows all of them.
        with tempfile.TemporaryDirectory(prefix="highway-metrics-") as metrics_dir:
            processes, stop = _start_workers(settings, config, sockets, workers, Path(metrics_dir))
            return trio.run(_supervise, processes, stop)
    finally:
        close_sockets(sockets)


async def _serve_here(
    settings: Settings,
    config: Config,
    sockets: Sockets,
    shared_stop: ProcessEvent | None = None,
    metrics_dir: Path | None = None,
) -> None:
    """Serve in this process until a stop signal, then let Hypercorn shut down gracefully.

    In a worker (`shared_stop` given) the parent decides on Ctrl-C, so SIGINT stays ignored;
    SIGTERM still stops the worker gracefully in case it is sent to the whole process group.
    """
    app = wrap_app(create_app(settings, metrics_dir), config.wsgi_max_body_size, "asgi")
    stop = trio.Event()
    watched = _STOP_SIGNALS if shared_stop is None else (signal.SIGTERM,)
    with _startup_failure_reported(), trio.open_signal_receiver(*watched) as signals:
        async with trio.open_nursery() as nursery:
            # A worker is forced by its parent (SIGKILL), not by a signal it handles.
            force = nursery.cancel_scope.cancel if shared_stop is None else None
            nursery.start_soon(_on_signals, signals, stop.set, force)
            if shared_stop is not None:
                nursery.start_soon(_wait_for_shared_stop, shared_stop, stop)
                nursery.start_soon(_stop_when_orphaned, stop)
            # Everything made so far (modules, the app) lives as long as the process: moved
            # out of the collector's sight, so full collections during calls scan far less.
            gc.collect()
            gc.freeze()
            await worker_serve(app, config, sockets=sockets, shutdown_trigger=stop.wait)
            nursery.cancel_scope.cancel()
    log.info("stopped")


@contextmanager
def _startup_failure_reported() -> Iterator[None]:
    """Turn Hypercorn's report of a failed start-up hook into StartupFailed."""
    message = None
    try:
        yield
    except* LifespanFailureError as group:
        failure = _leaves(group)[0]
        # Hypercorn quotes the app's message: "Lifespan failure in startup. '<message>'".
        quoted = _QUOTED.search(str(failure))
        message = quoted.group(1) if quoted else str(failure)
    # Raised here, not inside except*: before Python 3.11.4 that wrapped it in a group.
    if message is not None:
        raise StartupFailed(message)


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    leaves: list[BaseException] = []
    for error in group.exceptions:
        leaves.extend(_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return leaves


async def _wait_for_shared_stop(shared_stop: ProcessEvent, stop: trio.Event) -> None:
    # Hypercorn's own helper: polls the multiprocessing event every 0.1 s.
    await check_multiprocess_shutdown_event(shared_stop, trio.sleep)
    stop.set()


async def _stop_when_orphaned(stop: trio.Event) -> None:
    """Stop (gracefully) if the supervising process dies, say by SIGKILL: a worker left
    alone would go on holding the port and taking calls that no one supervises."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    await trio.lowlevel.wait_readable(parent.sentinel)
    log.error("the supervising process has gone: stopping")
    stop.set()


async def _on_signals(
    signals: AsyncIterator[int],
    graceful: Callable[[], object],
    force: Callable[[], object] | None,
) -> None:
    """First signal: `graceful()` (finish open requests). A later SIGINT: `force()`.

    A repeated SIGTERM is ignored: `timeout` and process-group kills deliver it twice, and
    process managers follow up with SIGKILL themselves; a second Ctrl-C is a person waiting.
    """
    first = True
    async for signum in signals:
        name = signal.Signals(signum).name
        if first:
            hint = " (press Ctrl-C again to stop at once)" if force is not None else ""
            log.info("%s received: shutting down%s", name, hint)
            graceful()
            first = False
        elif signum == signal.SIGINT and force is not None:
            log.warning("%s received again: stopping at once", name)
            force()
            return


def _start_workers(
    settings: Settings, config: Config, sockets: Sockets, workers: int, metrics_dir: Path
) -> tuple[list[BaseProcess], ProcessEvent]:
    """Spawn the worker processes; they share `sockets` and stop when the event is set."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    processes: list[BaseProcess] = []
    # A terminal's Ctrl-C reaches the whole process group. Workers start with SIGINT
    # ignored (spawned processes inherit that) so that this process alone decides.
    # Plain values, not handlers: each worker sets up its own logging the same way.
    log_level, log_format = current_log_settings()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for number in range(1, workers + 1):
            process = context.Process(
                target=_worker_main,
                args=(settings, config, sockets, stop, metrics_dir, log_level, log_format),
                name=f"highway-worker-{number}",
            )
            process.start()
            processes.append(process)
    except BaseException:
        for started in processes:
            started.kill()
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    log.info("started %d workers: %s", workers, ", ".join(str(p.pid) for p in processes))
    return processes, stop


async def _supervise(processes: list[BaseProcess], stop: ProcessEvent) -> int:
    """Relay a stop signal to the workers, and stop them all if one dies."""

    def stop_all_now() -> None:
        # SIGKILL: a worker treats SIGTERM as a request for a graceful stop.
        for process in processes:
            if process.exitcode is None:
                process.kill()

    failures: list[BaseProcess] = []

    async def wait_for_exit(process: BaseProcess) -> None:
        await trio.lowlevel.wait_readable(process.sentinel)
        process.join()
        if not stop.is_set():
            # A worker died on its own: stop the others rather than serve at part capacity.
            log.error("%s exited with code %s; stopping", process.name, process.exitcode)
            failures.append(process)
            stop.set()
        elif process.exitcode != 0:
            failures.append(process)

    with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_on_signals, signals, stop.set, stop_all_now)
            async with trio.open_nursery() as waiters:
                for process in processes:
                    waiters.start_soon(wait_for_exit, process)
            nursery.cancel_scope.cancel()
    log.info("stopped")
    return 1 if failures else 0


def _worker_main(
    settings: Settings,
    config: Config,
    sockets: Sockets,
    stop: ProcessEvent,
    metrics_dir: Path,
    log_level: int,
    log_format: str,
) -> None:
    """Entry point of a spawned worker process; logs like its parent (level, format)."""
    configure_logging(log_level, log_format)
    try:
        trio.run(_serve_here, settings, config, sockets, stop, metrics_dir)
    except StartupFailed as failure:
        log.error("cannot start: %s", failure)
        sys.exit(1)
