"""Highway's audio codec core, compiled: G.711 µ-law/A-law and streaming resampling.

Every function and `process()` takes any bytes-like object and returns `bytes`. PCM is
16-bit little-endian mono. The resamplers are streaming polyphase FIRs whose state
carries between calls; a 20 ms frame in gives exactly one 20 ms frame out.

- `ulaw_decode`, `ulaw_encode`, `alaw_decode`, `alaw_encode`: G.711, bit-exact.
- `Resampler(in_rate, out_rate)`: PCM16 between 8000, 16000 and 24000 Hz.
- `UlawToPcm(rate)`, `PcmToUlaw(rate)`: the telephone hot paths fused into one call,
  µ-law 8 kHz <-> PCM16 at 16000 or 24000 Hz.
- `SIMD_KERNEL`: the instruction set the resampling kernel runs on ("avx512", "avx2" or
  "baseline"); the environment variable HIGHWAY_CODEC_KERNEL caps it.
"""

from codec._codec import (
    SIMD_KERNEL,
    SUPPORTED_RATE_PAIRS,
    PcmToUlaw,
    Resampler,
    UlawToPcm,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)

__all__ = [
    "SIMD_KERNEL",
    "SUPPORTED_RATE_PAIRS",
    "PcmToUlaw",
    "Resampler",
    "UlawToPcm",
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]
