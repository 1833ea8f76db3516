"""Generated test audio: "speech" loud enough for any energy VAD, and telephone silence.

No numpy: the stand-in agent that uses this also runs inside `highway serve` in offline
mode, where only the run-time dependencies are installed.
"""

from __future__ import annotations

import math
from array import array
from functools import cache

import codec

ULAW_SILENCE_BYTE = 0xFF  # µ-law code for a zero sample
ULAW_BYTES_PER_MS = 8  # 8000 Hz, one byte per sample
PCM24K_BYTES_PER_MS = 48  # 24000 Hz, 16-bit samples
# A voice-like tone: 180 Hz with harmonics, its loudness swelling 4 times a second.
_PERIOD_MS = 250
_AMPLITUDE = 9000


@cache
def _speech_period(rate: int) -> bytes:
    """One 250 ms period of the speech-like signal as PCM16 at `rate`."""
    count = rate * _PERIOD_MS // 1000
    samples = array("h")
    for n in range(count):
        t = n / rate
        envelope = 0.6 + 0.4 * math.sin(2 * math.pi * 4 * t)
        voice = (
            math.sin(2 * math.pi * 180 * t)
            + 0.5 * math.sin(2 * math.pi * 360 * t)
            + 0.25 * math.sin(2 * math.pi * 720 * t)
        ) / 1.75
        samples.append(int(_AMPLITUDE * envelope * voice))
    return samples.tobytes()


def _repeat(period: bytes, size: int) -> bytes:
    copies = -(-size // len(period))
    return (period * copies)[:size]


def speech_pcm16(ms: int, rate: int = 24000) -> bytes:
    """`ms` milliseconds of speech-like PCM16 (little-endian, mono) at `rate` Hz."""
    return _repeat(_speech_period(rate), ms * rate // 1000 * 2)


def speech_ulaw(ms: int) -> bytes:
    """`ms` milliseconds of speech-like µ-law at 8 kHz."""
    return _repeat(_speech_ulaw_period(), ms * ULAW_BYTES_PER_MS)


@cache
def _speech_ulaw_period() -> bytes:
    return codec.ulaw_encode(_speech_period(8000))


def silence_ulaw(ms: int) -> bytes:
    """`ms` milliseconds of µ-law silence at 8 kHz."""
    return bytes([ULAW_SILENCE_BYTE]) * (ms * ULAW_BYTES_PER_MS)
