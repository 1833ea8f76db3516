"""The load generator process: N simulated callers and the model they reach, on one core.

`e2e.py` runs it as a subprocess and talks to it over stdin and stdout, one JSON object a
line. It prints {"model_url"} first, so the bridge can be started against it, then reads
{"host", "port", "calls" ([CallSid, stream path] pairs), "warmup", "seconds", "tail",
"samples_file"}. It opens the calls one by one (call i reaches model session i), warms up,
marks the measured window with {"window": "start"} and {"window": "end"}, lets frames in
flight land, hangs up, and prints {"frames", "harness"}; the latency samples go to
`samples_file` (NumPy .npz, one array per leg, in ms). While calls open it prints
{"calls_up": n}.

    python -m benchmarks.load_generator --mode pcmu --delta-ms 100 --seed 20
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from dataclasses import dataclass
from functools import partial
from time import perf_counter
from typing import Any

import numpy as np

from benchmarks import lean_ws
from benchmarks.e2e_report import LEGS
from benchmarks.load_callers import SimulatedCaller
from benchmarks.load_loop import Loop
from benchmarks.load_model import ModelLoad, ModelSession
from benchmarks.stamps import STAMPS

SESSION_TIMEOUT_SECONDS = 30.0


@dataclass
class Harness:
    """Both simulated sides of one load point, on one loop."""

    mode: str
    loop: Loop
    model: ModelLoad
    callers: list[SimulatedCaller]

    def open_calls(self, host: str, port: int, calls: list[tuple[str, str]]) -> None:
        """Open each (CallSid, stream path) in turn, once the one before reached the model."""
        for index, (call_sid, path) in enumerate(calls):
            connection = lean_ws.connect(host, port, path)
            caller = SimulatedCaller(connection, self.loop, call_sid, stamped=self.mode == "pcmu")
            caller.start()
            self.callers.append(caller)
            deadline = perf_counter() + SESSION_TIMEOUT_SECONDS
            reached = partial(lambda calls: len(self.model.sessions) >= calls, index + 1)
            if not self.loop.run_until(deadline, reached):
                raise SystemExit(f"call {index}: the bridge never reached the model")
            _say(calls_up=index + 1)

    def stalls(self) -> int:
        connections = [c.connection for c in self.callers]
        connections += [s.connection for s in self.model.sessions]
        return sum(connection.stalls for connection in connections)


def collect(
    harness: Harness, start: float, end: float
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Latency samples (ms) of what was sent within [start, end), and frame counts.

    Audio frames both ways are counted: caller frames against the appends that reached the
    model, and the model's deltas against the media that reached the caller. In µ-law mode
    they are matched by stamp, so losses and reordering show; in pcm24k the audio is
    transcoded, so they are matched in order and a loss shows only as a shortfall."""
    legs: dict[str, list[float]] = {leg: [] for leg in LEGS}
    frames = {"sent": 0, "received": 0, "lost": 0, "reordered": 0}
    stamped = harness.mode == "pcmu"
    sessions: list[ModelSession] = harness.model.sessions
    for caller, session in zip(harness.callers, sessions, strict=True):
        directions = (
            ("caller_to_model", caller.sent, session.appends, session.append_stamps),
            ("model_to_caller", session.deltas, caller.media, caller.media_stamps),
        )
        for leg, sent, arrived, stamps in directions:
            matched, reordered = _match(len(sent), arrived, stamps if stamped else None)
            for number, at in enumerate(sent):
                if start <= at < end:
                    frames["sent"] += 1
                    if number in matched:
                        frames["received"] += 1
                        legs[leg].append(1000 * (matched[number] - at))
                    else:
                        frames["lost"] += 1
            frames["reordered"] += reordered
        legs["barge_in"] += _barge_ins(session.speech_started, caller.clears, start, end)
        if caller.media:
            legs["first_audio"].append(1000 * (caller.media[0] - caller.started_at))
    return legs, frames


def _match(
    sent: int, arrived: list[float], stamps: list[int] | None
) -> tuple[dict[int, float], int]:
    """{frame number: arrival time}, and how many arrived out of order."""
    if stamps is None:
        return dict(enumerate(arrived[:sent])), 0
    matched: dict[int, float] = {}
    reordered, number = 0, None
    for at, stamp in zip(arrived, stamps, strict=True):
        if number is None:
            number = stamp  # the first (numbering starts at 0, so it is below 65536)
        else:
            # Stamps are 16 bits: unwrap each to the number nearest the one before it.
            step = (stamp - number) % STAMPS
            if step > STAMPS // 2:
                step -= STAMPS
                reordered += 1
            number += step
        matched[number] = at
    return matched, reordered


def _barge_ins(started: list[float], clears: list[float], start: float, end: float) -> list[float]:
    """Each clear against the last speech_started before it."""
    samples, k = [], 0
    for clear in clears:
        while k + 1 < len(started) and started[k + 1] <= clear:
            k += 1
        if started and started[k] <= clear and start <= started[k] < end:
            samples.append(1000 * (clear - started[k]))
    return samples


def _say(**message: Any) -> None:
    print(json.dumps(message), flush=True)


def main(args: argparse.Namespace) -> None:
    loop = Loop()
    model = ModelLoad(args.mode, loop, args.delta_ms, args.seed, args.model_port)
    harness = Harness(args.mode, loop, model, [])
    _say(model_url=model.url)
    plan = json.loads(sys.stdin.readline())
    harness.open_calls(plan["host"], plan["port"], plan["calls"])
    # Objects made so far need no more collecting, and the run makes few: a collection
    # pass would only add pauses to the figures.
    gc.collect()
    gc.freeze()
    gc.disable()
    loop.run_until(perf_counter() + plan["warmup"])
    loop.late_max = 0.0
    cpu_start, start = time.process_time(), perf_counter()
    _say(window="start")
    loop.run_until(start + plan["seconds"])
    cpu_end, end = time.process_time(), perf_counter()
    _say(window="end")
    lag_ms = 1000 * loop.late_max
    loop.run_until(perf_counter() + plan["tail"])  # frames in flight land
    for caller in harness.callers:
        caller.hang_up()
    samples, frames = collect(harness, start, end)
    np.savez(plan["samples_file"], **{leg: np.asarray(values) for leg, values in samples.items()})
    _say(
        frames=frames,
        harness={
            "cpu_percent": 100 * (cpu_end - cpu_start) / (end - start),
            "lag_max_ms": lag_ms,
            "send_stalls": harness.stalls(),
            "seconds": end - start,
        },
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["pcmu", "pcm24k"], required=True)
    parser.add_argument("--delta-ms", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-port", type=int, default=0, help="0: any free port")
    main(parser.parse_args())
