"""Barge-in accuracy: how close Highway's truncation lands to what the caller really heard.

Runs Highway in-process on 127.0.0.1 with the OpenAI stand-in (a 4 s greeting) and the
Twilio simulator. For each position, the simulated caller starts talking once that much of
the greeting has played; the simulator records exactly how much it had played when
Twilio's `clear` arrived, and the stand-in records `conversation.item.truncate`. The error
is `audio_end_ms - heard_ms` (positive: Highway said more was heard than was).

    python benchmarks/barge_in.py [--calls 40] [--mode pcmu|pcm24k|both]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
from pathlib import Path

import httpx
import trio

from highway.app import create_app
from highway.config import Settings
from highway.testing.realtime_standin import RealtimeStandIn, Reply
from highway.testing.serving import serve_on_loopback
from highway.testing.twilio_media import open_simulated_call

GREETING_MS = 4000


async def measure(mode: str, positions: list[int], workdir: Path) -> list[float]:
    agent = RealtimeStandIn(default_reply=Reply(text="A long greeting.", audio_ms=GREETING_MS))
    errors = []
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.serve)
        settings = Settings(  # type: ignore[call-arg]
            HIGHWAY_DATABASE_URL=f"sqlite:///{workdir / f'{mode}.db'}",
            OPENAI_API_KEY="sk-bench",
            HIGHWAY_OPENAI_URL=agent.url,
            HIGHWAY_AUDIO_MODE=mode,
        )
        async with (
            serve_on_loopback(create_app(settings)) as url,
            httpx.AsyncClient(base_url=url, trust_env=False) as client,
        ):
            for number, position in enumerate(positions):
                sid = f"CA{number:032x}"
                twiml = await client.post(
                    "/twilio/incoming",
                    data={"CallSid": sid, "From": "+15005550199", "To": "+15005550006"},
                )
                path = twiml.text.split("/media-stream/", 1)[1].split('"', 1)[0]
                stream = url.replace("http://", "ws://") + "/media-stream/" + path
                async with open_simulated_call(stream, call_sid=sid) as caller:
                    session = await agent.wait_for_session(number)
                    await caller.wait_played(position)
                    caller.say_speech(400)
                    clear = await caller.wait_for_clear()
                    truncate = await session.wait_for_event("conversation.item.truncate")
                    errors.append(truncate["audio_end_ms"] - clear.played_ms)
                    await caller.hang_up()
        nursery.cancel_scope.cancel()
    return errors


def report(mode: str, errors: list[float]) -> str:
    absolute = sorted(abs(e) for e in errors)
    p95 = absolute[max(0, round(0.95 * len(absolute)) - 1)]
    return (
        f"| {mode} | {len(errors)} | {statistics.mean(errors):+.1f} | "
        f"{statistics.median(absolute):.1f} | {p95:.1f} | {absolute[-1]:.1f} |"
    )


async def main(calls: int, modes: list[str]) -> None:
    rng = random.Random(4)
    positions = [rng.randrange(100, GREETING_MS - 300) for _ in range(calls)]
    print("| mode | calls | mean error ms | median abs ms | p95 abs ms | max abs ms |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as workdir:
        for mode in modes:
            print(report(mode, await measure(mode, positions, Path(workdir))))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40, help="barge-ins per mode (default 40)")
    parser.add_argument("--mode", choices=["pcmu", "pcm24k", "both"], default="both")
    args = parser.parse_args()
    trio.run(main, args.calls, ["pcmu", "pcm24k"] if args.mode == "both" else [args.mode])
