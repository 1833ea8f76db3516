"""Codec speed and quality: Highway's codec against stdlib audioop and soxr, in one run.

    make bench-codec        (or: .venv/bin/python benchmarks/codec_bench.py --help)

For each direction of a phone call's audio (µ-law 8 kHz <-> PCM16 16/24 kHz) it times one
20 ms frame through each variant, state carried from frame to frame as in a call, and
measures the variant's resampling quality: the worst image or alias of a tone (dB below
it) and the streaming delay (group delay plus any audio the resampler holds back).
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import codec
from highway.testing.audio_quality import (
    measure_tone,
    passband_tones,
    stopband_tones,
    streaming_delay_ms,
)

with warnings.catch_warnings():  # deprecated in 3.11-3.12; audioop-lts from 3.13
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

try:
    import soxr
except ImportError:  # a benchmark extra: without it, soxr's rows are left out
    soxr = None

GOAL_NS_PER_FRAME = 1000
GOAL_SPEEDUP_OVER_SOXR_HQ = 7.0
GOAL_ALIAS_DB = -75.0

Frame = Callable[[bytes], bytes]


@dataclass(frozen=True)
class Direction:
    """One leg of the call: µ-law 8 kHz up to PCM at `rate`, or PCM at `rate` down to µ-law."""

    rate: int
    up: bool

    @property
    def name(self) -> str:
        khz = self.rate // 1000
        return f"µ-law→{khz}k" if self.up else f"{khz}k→µ-law"

    @property
    def rates(self) -> tuple[int, int]:
        return (8000, self.rate) if self.up else (self.rate, 8000)


@dataclass(frozen=True)
class Variant:
    """A way to do a direction: `frame()` makes a fresh per-frame function (µ-law or PCM
    in and out, as the direction says); `pcm()` a fresh PCM-to-PCM resampler for quality."""

    name: str
    frame: Callable[[Direction], Frame]
    pcm: Callable[[int, int], Frame]


def highway_frame(d: Direction) -> Frame:
    return (codec.UlawToPcm(d.rate) if d.up else codec.PcmToUlaw(d.rate)).process


def highway_pcm(in_rate: int, out_rate: int) -> Frame:
    return codec.Resampler(in_rate, out_rate).process


def audioop_pcm(in_rate: int, out_rate: int) -> Frame:
    state = None

    def process(pcm: bytes) -> bytes:
        nonlocal state
        out, state = audioop.ratecv(pcm, 2, 1, in_rate, out_rate, state)
        return out

    return process


def audioop_frame(d: Direction) -> Frame:
    resample = audioop_pcm(*d.rates)
    if d.up:
        return lambda ulaw: resample(audioop.ulaw2lin(ulaw, 2))
    return lambda pcm: audioop.lin2ulaw(resample(pcm), 2)


def soxr_pcm(quality: str) -> Callable[[int, int], Frame]:
    def make(in_rate: int, out_rate: int) -> Frame:
        stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        return lambda pcm: stream.resample_chunk(np.frombuffer(pcm, dtype=np.int16)).tobytes()

    return make


def soxr_frame(quality: str) -> Callable[[Direction], Frame]:
    def make(d: Direction) -> Frame:
        resample = soxr_pcm(quality)(*d.rates)
        if d.up:
            return lambda ulaw: resample(audioop.ulaw2lin(ulaw, 2))
        return lambda pcm: audioop.lin2ulaw(resample(pcm), 2)

    return make


VARIANTS = [
    Variant("highway codec", highway_frame, highway_pcm),
    Variant("audioop", audioop_frame, audioop_pcm),
]
if soxr is not None:
    VARIANTS += [
        Variant("soxr HQ", soxr_frame("HQ"), soxr_pcm("HQ")),
        Variant("soxr VHQ", soxr_frame("VHQ"), soxr_pcm("VHQ")),
    ]
DIRECTIONS = [
    Direction(24000, True),
    Direction(24000, False),
    Direction(16000, True),
    Direction(16000, False),
]


def call_audio(d: Direction, frames: int) -> list[bytes]:
    """Speech-like input (band-limited noise with a syllable-rate envelope), in 20 ms frames."""
    rng = np.random.default_rng(1)
    rate = 8000 if d.up else d.rate
    n = rate // 50 * frames
    t = np.arange(n) / rate
    noise = np.convolve(rng.normal(0, 1, n), np.hanning(9), mode="same")
    pcm = (4000 * noise * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).clip(-32768, 32767)
    data = pcm.astype("<i2").tobytes()
    if d.up:
        data = audioop.lin2ulaw(data, 2)
    size = len(data) // frames
    return [data[i : i + size] for i in range(0, len(data), size)]


def time_variants(d: Direction, frames: list[bytes], repeats: int) -> dict[str, float]:
    """Best mean ns per frame of each variant. Repeats run round-robin across variants so
    that a noisy moment on the machine does not land on one variant only."""
    best = {v.name: float("inf") for v in VARIANTS}
    gc.disable()
    try:
        for _ in range(repeats):
            for variant in VARIANTS:
                process = variant.frame(d)
                start = time.perf_counter_ns()
                for frame in frames:
                    process(frame)
                elapsed = (time.perf_counter_ns() - start) / len(frames)
                best[variant.name] = min(best[variant.name], elapsed)
    finally:
        gc.enable()
    return best


def worst_alias_db(variant: Variant, in_rate: int, out_rate: int) -> float:
    """The strongest image or alias: of passband tones, and of stopband tones going down."""
    tones = list(passband_tones(6))
    if out_rate < in_rate:
        tones += list(stopband_tones(in_rate, out_rate))
    return max(
        measure_tone(variant.pcm(in_rate, out_rate), in_rate, out_rate, f).worst_spur_db
        for f in tones
    )


@dataclass(frozen=True)
class Row:
    direction: Direction
    variant: str
    ns: float
    alias_db: float
    delay_ms: float


def run(frames: int, repeats: int) -> list[Row]:
    rows = []
    for d in DIRECTIONS:
        timings = time_variants(d, call_audio(d, frames), repeats)
        for variant in VARIANTS:
            rows.append(
                Row(
                    d,
                    variant.name,
                    timings[variant.name],
                    worst_alias_db(variant, *d.rates),
                    streaming_delay_ms(variant.pcm(*d.rates), *d.rates),
                )
            )
    return rows


def markdown(rows: list[Row]) -> str:
    lines = [
        "| direction | variant | ns per 20 ms frame | vs soxr HQ | vs audioop "
        "| worst image/alias | delay |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        same = {r.variant: r.ns for r in rows if r.direction == row.direction}
        soxr_ratio = f"{same['soxr HQ'] / row.ns:.1f}×" if "soxr HQ" in same else "–"
        lines.append(
            f"| {row.direction.name} | {row.variant} | {row.ns:,.0f} | {soxr_ratio} "
            f"| {same['audioop'] / row.ns:.1f}× | {row.alias_db:.1f} dB | {row.delay_ms:.2f} ms |"
        )
    return "\n".join(lines)


def goals(rows: list[Row]) -> list[tuple[str, bool]]:
    ours = [r for r in rows if r.variant == "highway codec"]
    checks = [
        (
            f"≤ {GOAL_NS_PER_FRAME} ns per frame per direction "
            f"(worst: {max(r.ns for r in ours):.0f} ns)",
            all(r.ns <= GOAL_NS_PER_FRAME for r in ours),
        ),
        (
            f"images and aliases ≤ {GOAL_ALIAS_DB:.0f} dB "
            f"(worst: {max(r.alias_db for r in ours):.1f} dB)",
            all(r.alias_db <= GOAL_ALIAS_DB for r in ours),
        ),
    ]
    soxr_hq = {r.direction: r.ns for r in rows if r.variant == "soxr HQ"}
    if soxr_hq:
        speedup = min(soxr_hq[r.direction] / r.ns for r in ours)
        checks.append(
            (
                f"≥ {GOAL_SPEEDUP_OVER_SOXR_HQ:.0f}× faster than soxr HQ (least: {speedup:.1f}×)",
                speedup >= GOAL_SPEEDUP_OVER_SOXR_HQ,
            )
        )
    return checks


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return f"{cpu}; Python {platform.python_version()}; codec kernel {codec.SIMD_KERNEL}" + (
        f"; soxr {soxr.__version__}" if soxr else "; soxr not installed"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--frames", type=int, default=5000, help="frames per timing pass (default 5000)"
    )
    parser.add_argument(
        "--repeats", type=int, default=7, help="timing passes; the best counts (default 7)"
    )
    args = parser.parse_args(argv)
    if args.frames < 1 or args.repeats < 1:
        parser.error("--frames and --repeats must be at least 1")

    rows = run(args.frames, args.repeats)
    print(f"Machine: {machine()}")
    print(
        f"Timing: best of {args.repeats} passes of {args.frames} frames each; quality measured "
        "on each variant's resampling stage, fed in 20 ms frames.\n"
    )
    print(markdown(rows))
    print()
    for text, met in goals(rows):
        print(f"{'PASS' if met else 'FAIL'}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
