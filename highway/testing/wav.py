"""WAV files to and from telephone µ-law (8 kHz mono), with the stdlib `wave` module.

For the call simulator: a caller's words come from a WAV file, and what the caller heard
goes back to one. No numpy: this also runs from the `highway` command.
"""

from __future__ import annotations

import os
import wave
from array import array

import codec

TELEPHONE_RATE = 8000
SUPPORTED_RATES = (8000, 16000, 24000)


def load_wav_ulaw(path: str | os.PathLike[str]) -> bytes:
    """Read a 16-bit PCM WAV (mono or stereo; 8, 16 or 24 kHz) as µ-law 8 kHz mono.

    Stereo is averaged to mono. Raises ValueError for any other format.
    """
    try:
        with wave.open(os.fspath(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except wave.Error as error:
        raise ValueError(f"{path}: not a PCM WAV file ({error})") from error
    if width != 2:
        raise ValueError(f"{path}: {8 * width}-bit samples; only 16-bit PCM is supported")
    if channels not in (1, 2):
        raise ValueError(f"{path}: {channels} channels; only mono or stereo is supported")
    if rate not in SUPPORTED_RATES:
        rates = ", ".join(str(r) for r in SUPPORTED_RATES)
        raise ValueError(f"{path}: sample rate {rate} Hz; supported rates are {rates} Hz")
    pcm = _downmix(frames) if channels == 2 else frames
    return codec.ulaw_encode(_to_telephone_rate(pcm, rate))


def write_wav_ulaw(path: str | os.PathLike[str], ulaw: bytes) -> None:
    """Write µ-law 8 kHz audio as a 16-bit PCM mono WAV at 8 kHz."""
    with wave.open(os.fspath(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(TELEPHONE_RATE)
        wav.writeframes(codec.ulaw_decode(ulaw))


def _downmix(frames: bytes) -> bytes:
    samples = array("h", frames)
    left, right = samples[0::2], samples[1::2]
    return array("h", [(a + b) // 2 for a, b in zip(left, right, strict=True)]).tobytes()


def _to_telephone_rate(pcm: bytes, rate: int) -> bytes:
    if rate == TELEPHONE_RATE:
        return pcm
    resampler = codec.Resampler(rate, TELEPHONE_RATE)
    resampled = resampler.process(pcm) + resampler.flush()
    # Drop the filter's delay so the audio starts on time, and keep the exact duration.
    skip = round(resampler.delay * TELEPHONE_RATE)
    count = len(pcm) // 2 * TELEPHONE_RATE // rate
    return resampled[2 * skip : 2 * (skip + count)]
