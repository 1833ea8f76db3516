"""End-to-end benchmark: the delay Highway adds to each leg of a call, its CPU and memory.

Runs N simulated Twilio calls (20 ms µ-law frames, paced in real time) through Highway to
the OpenAI Realtime stand-in, all on 127.0.0.1. The harness (simulator and stand-in) runs
in this process on one CPU core; the server runs in its own process, pinned to another.
Each load point runs twice: against a bare relay (the floor: the harness's own delays) and
against Highway; figures are reported absolute and over the floor.

Legs, matched call by call in order (Highway forwards frames one for one):
- caller_to_model: Twilio frame sent -> the stand-in received its input_audio_buffer.append
- model_to_caller: the stand-in sent an audio delta -> the simulator received the media
- barge_in: the stand-in sent speech_started -> the simulator received `clear`
- first_audio: Twilio `start` -> the first media back (the stand-in answers at once)

Each call's caller barges in on every answer (4 s of audio, sent in real time) after
0.8-2 s, so all four legs are exercised continuously. Lost and reordered frames are found
from a stamp in each frame (µ-law mode only; in pcm24k the audio is transcoded).

    python benchmarks/e2e.py                      # the sweep, both modes (make bench)
    python benchmarks/e2e.py --calls 20 --mode pcmu --seconds 20
    python benchmarks/e2e.py --soak               # 100 calls for 10 minutes
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import platform
import random
import re
import sys
import tempfile
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio
from rich.progress import Progress

from benchmarks import e2e_report
from highway.testing.realtime_standin import RealtimeStandIn, Reply, StandInSession
from highway.testing.twilio_media import (
    CallClosedError,
    SimulatedCall,
    open_simulated_call,
    read_stamp,
)

ROOT = Path(__file__).resolve().parents[1]
REPLY = Reply(text="A four second answer from the stand-in.", audio_ms=4000)
SWEEP = (1, 20, 50, 100, 150, 200)
HARNESS_CORE, SERVER_CORE = 0, 1
HARNESS = psutil.Process()
RUNNING_ON = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")
LISTENING = re.compile(r"listening on (\d+)")


@dataclass(frozen=True)
class LoadPoint:
    target: str  # "highway" or "floor"
    mode: str  # "pcmu" or "pcm24k"
    calls: int
    seconds: float  # the measured window
    warmup: float = 3.0


@dataclass
class Server:
    """The process under test and where it listens."""

    process: trio.Process
    url: str
    ps: psutil.Process
    log: bytearray = field(default_factory=bytearray)


@asynccontextmanager
async def serve(target: str, mode: str, model_url: str, workdir: Path):  # type: ignore[no-untyped-def]
    """Start Highway (or the floor relay) pinned to SERVER_CORE; yields a Server."""
    if target == "highway":
        command = [sys.executable, "-P", "-m", "highway", "serve", "--port", "0"]
        ready = RUNNING_ON
    else:
        command = [sys.executable, "-P", str(ROOT / "benchmarks" / "relay_floor.py")]
        command += ["--model-url", model_url]
        ready = LISTENING
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HIGHWAY_", "TWILIO_"))}
    env |= {
        "PYTHONPATH": str(ROOT),
        "HIGHWAY_DATABASE_URL": f"sqlite:///{workdir / f'{mode}.db'}",
        "OPENAI_API_KEY": "sk-bench",
        "HIGHWAY_OPENAI_URL": model_url,
        "HIGHWAY_AUDIO_MODE": mode,
        "HIGHWAY_MAX_CALL_SECONDS": "7200",
        "HIGHWAY_MAX_CONCURRENT_CALLS": "10000",
    }
    process = await trio.lowlevel.open_process(
        command, env=env, cwd=workdir, stdout=sys.stderr.fileno(), stderr=-1
    )
    server = Server(process, "", psutil.Process(process.pid))
    with suppress(psutil.Error, OSError):  # a machine with one core, or no affinity
        server.ps.cpu_affinity([SERVER_CORE % (os.cpu_count() or 1)])
    try:
        assert process.stderr is not None
        with trio.fail_after(30):
            while (found := ready.search(server.log.decode(errors="replace"))) is None:
                chunk = await process.stderr.receive_some()
                if not chunk:
                    raise RuntimeError(f"{target} did not start:\n{server.log.decode()}")
                server.log += chunk
        host = "http" if target == "highway" else "ws"
        server.url = f"{host}://127.0.0.1:{found[1]}"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, process.stderr, server.log)
            yield server
            nursery.cancel_scope.cancel()
    finally:
        process.terminate()
        with trio.move_on_after(10):
            await process.wait()
        process.kill()


async def _drain(stream: trio.abc.ReceiveStream, log: bytearray) -> None:
    # The server's log must be read, or a full pipe would stall it; keep the tail only.
    while chunk := await stream.receive_some():
        log += chunk
        del log[: max(0, len(log) - 200_000)]


async def stream_paths(server: Server, target: str, calls: int) -> list[str]:
    """Each call's stream path: from Highway's /twilio/incoming TwiML, like Twilio."""
    if target == "floor":
        return [f"/media-stream/0/{n}" for n in range(1, calls + 1)]
    paths = []
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=30) as client:
        for n in range(calls):
            answer = await client.post(
                "/twilio/incoming",
                data={"CallSid": f"CA{n:032x}", "From": "+15005550199", "To": "+15005550006"},
            )
            answer.raise_for_status()
            found = re.search(r'url="[a-z]+://[^/]+(/media-stream/[^"]+)"', answer.text)
            assert found is not None, answer.text
            paths.append(found[1])
    return paths


async def caller_script(call: SimulatedCall, rng: random.Random) -> None:
    """Barge in on every answer part-way through, forever."""
    try:
        while True:
            await call.wait_received(call.received_ms + 1)
            await trio.sleep(rng.uniform(0.8, 2.0))
            call.say_speech(600)
            await call.wait_said()
    except CallClosedError:
        return


@dataclass
class CallRecord:
    call: SimulatedCall
    session: StandInSession | None = None  # the stand-in's side, once it has connected


async def run_point(point: LoadPoint, workdir: Path, progress: Progress) -> dict[str, Any]:
    agent = RealtimeStandIn(
        default_reply=REPLY, realtime_factor=1.0, record_events=False, record_timings=True
    )
    rng = random.Random(point.calls)
    records: list[CallRecord] = []
    task = progress.add_task(f"{point.target} {point.mode} ×{point.calls}", total=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.serve)
        async with serve(point.target, point.mode, agent.url, workdir) as server:
            paths = await stream_paths(server, point.target, point.calls)
            base = server.url.replace("http://", "ws://")
            hang_up = trio.Event()
            async with trio.open_nursery() as calls:
                for index, path in enumerate(paths):
                    opened = await calls.start(_hold_call, base + path, rng, hang_up, records)
                    assert opened is not None
                    records[-1].session = await agent.wait_for_session(index)
                    progress.update(task, description=_label(point, f"{index + 1} calls up"))
                # The harness's own objects, made so far, need no more collecting.
                gc.collect()
                gc.freeze()
                await _sleep_with_progress(progress, task, point, "warming up", point.warmup)
                window_start = trio.current_time()
                cpu_start, rss_start = _usage(server.ps)
                harness_start = _usage(HARNESS)[0]
                await _sleep_with_progress(progress, task, point, "measuring", point.seconds)
                window_end = trio.current_time()
                cpu_end, rss_end = _usage(server.ps)
                harness_end = _usage(HARNESS)[0]
                hang_up.set()
            finalised = await _finalised(server, point, len(paths))
        nursery.cancel_scope.cancel()
    progress.remove_task(task)
    seconds = window_end - window_start
    samples, frames = collect(records, point.mode, window_start, window_end)
    return e2e_report.make_run(
        target=point.target,
        mode=point.mode,
        calls=point.calls,
        seconds=seconds,
        samples=samples,
        frames=frames,
        server={
            "cpu_percent": 100 * (cpu_end - cpu_start) / seconds,
            "rss_mb": rss_end / 2**20,
            "rss_growth_mb": (rss_end - rss_start) / 2**20,
            # Not the server's: when this nears 100 %, the harness is what limits the figures.
            "harness_cpu_percent": 100 * (harness_end - harness_start) / seconds,
        },
        calls_started=len(paths),
        calls_finalised=finalised,
    )


async def _hold_call(
    url: str,
    rng: random.Random,
    hang_up: trio.Event,
    records: list[CallRecord],
    *,
    task_status: trio.TaskStatus[bool] = trio.TASK_STATUS_IGNORED,
) -> None:
    sid = f"CA{len(records):032x}"
    async with open_simulated_call(url, call_sid=sid, timing=True) as call:
        records.append(CallRecord(call))
        task_status.started(True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller_script, call, rng)
            await hang_up.wait()
            nursery.cancel_scope.cancel()
        await call.hang_up()


def _label(point: LoadPoint, what: str) -> str:
    return f"{point.target} {point.mode} ×{point.calls}: {what}"


async def _sleep_with_progress(
    progress: Progress, task: Any, point: LoadPoint, what: str, seconds: float
) -> None:
    progress.update(task, description=_label(point, what), total=seconds, completed=0)
    end = trio.current_time() + seconds
    while (left := end - trio.current_time()) > 0:
        await trio.sleep(min(0.5, left))
        progress.update(task, completed=seconds - max(0.0, end - trio.current_time()))
        progress.refresh()


def _usage(ps: psutil.Process) -> tuple[float, int]:
    """CPU seconds so far and resident memory, of the server and its children."""
    processes = [ps, *ps.children(recursive=True)]
    cpu = sum(p.cpu_times().user + p.cpu_times().system for p in processes)
    return cpu, sum(p.memory_info().rss for p in processes)


async def _finalised(server: Server, point: LoadPoint, calls: int) -> int:
    """How many calls Highway recorded as ended (the floor keeps no records)."""
    if point.target != "highway":
        return calls
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, timeout=30) as client:
        with trio.move_on_after(15):
            while True:
                listed = (await client.get("/calls", params={"limit": calls})).json()["calls"]
                ended = sum(1 for call in listed if call["endedAt"] is not None)
                if ended >= calls:
                    break
                await trio.sleep(0.2)
    return ended


def collect(
    records: list[CallRecord], mode: str, start: float, end: float
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Latency samples (ms) of events sent within [start, end), and frame counts."""
    legs: dict[str, list[float]] = {
        "caller_to_model": [],
        "model_to_caller": [],
        "barge_in": [],
        "first_audio": [],
    }
    frames = {"sent": 0, "received": 0, "lost": 0, "reordered": 0}
    for record in records:
        assert record.session is not None
        call, timings = record.call, record.session.timings
        assert call.frames_sent_at is not None and timings is not None
        sent, arrived = call.frames_sent_at, timings.appends
        counted = [k for k, at in enumerate(sent) if start <= at < end]
        frames["sent"] += len(counted)
        frames["received"] += sum(1 for k in counted if k < len(arrived))
        frames["lost"] += sum(1 for k in counted if k >= len(arrived))
        legs["caller_to_model"] += [
            1000 * (arrived[k] - sent[k]) for k in counted if k < len(arrived)
        ]
        if mode == "pcmu":
            stamps = [read_stamp(head) for head in timings.heads]
            frames["reordered"] += sum(
                1 for a, b in itertools.pairwise(stamps) if (b - a) % 65536 > 32768
            )
        deltas, media = timings.deltas, call.media_received
        legs["model_to_caller"] += [
            1000 * (media[k][0] - deltas[k])
            for k in range(min(len(deltas), len(media)))
            if start <= deltas[k] < end
        ]
        legs["barge_in"] += _barge_ins(
            timings.speech_started, [c.at for c in call.clears], start, end
        )
        if call.started_at is not None and media:
            legs["first_audio"].append(1000 * (media[0][0] - call.started_at))
    return legs, frames


def _barge_ins(started: list[float], clears: list[float], start: float, end: float) -> list[float]:
    """Each clear against the last speech_started before it."""
    samples, k = [], 0
    for clear in clears:
        while k + 1 < len(started) and started[k + 1] <= clear:
            k += 1
        if started and started[k] <= clear and start <= started[k] < end:
            samples.append(1000 * (clear - started[k]))
    return samples


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


async def main(args: argparse.Namespace) -> None:
    modes = ["pcmu", "pcm24k"] if args.mode == "both" else [args.mode]
    counts = [args.calls] if args.calls else list(SWEEP)
    seconds = args.seconds
    if args.soak:
        counts, seconds = [100], 600.0
    with suppress(OSError):
        os.sched_setaffinity(0, {HARNESS_CORE % (os.cpu_count() or 1)})
    runs = []
    # No refresh thread: rendering on another thread would hold the GIL at random moments
    # and show up as harness delay; the sleep loops refresh it twice a second instead.
    with tempfile.TemporaryDirectory() as workdir, Progress(auto_refresh=False) as progress:
        for mode in modes:
            for calls in counts:
                for target in ("floor", "highway"):
                    point = LoadPoint(target, mode, calls, seconds)
                    runs.append(await run_point(point, Path(workdir), progress))
    results = {"machine": machine(), "command": " ".join(sys.argv), "runs": runs}
    written = e2e_report.write_outputs(results, Path(args.out))
    print((Path(args.out) / "results.md").read_text())
    print("wrote " + ", ".join(str(path) for path in written.values()))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Highway's end-to-end delay, capacity and soak benchmark."
    )
    parser.add_argument("--calls", type=int, help="one load point of this many calls")
    parser.add_argument("--mode", choices=["pcmu", "pcm24k", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window (s)")
    parser.add_argument("--soak", action="store_true", help="100 calls for 10 minutes")
    parser.add_argument("--out", default="bench-results", help="output directory")
    return parser


if __name__ == "__main__":
    trio.run(main, _parser().parse_args())
