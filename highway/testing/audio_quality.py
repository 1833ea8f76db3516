"""Measure a streaming resampler's quality: passband gain, spurious tones, and delay.

Used by the codec tests and `benchmarks/codec_bench.py`. Needs numpy (a test and
benchmark dependency, never a runtime one). A resampler is given as a callable that takes
PCM16 bytes at `in_rate` and returns PCM16 bytes at `out_rate`, keeping state between
calls; the signal is always fed in 20 ms frames, as a phone call feeds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

PcmStream = Callable[[bytes], bytes]

FRAME_SECONDS = 0.02
TELEPHONE_BAND_HZ = (300.0, 3400.0)
# Tone level for the measurements: -6 dBFS leaves room for passband ripple overshoot.
AMPLITUDE = 16384.0
# Kaiser window sidelobes sit near -120 dB, so a -75 dB spur is not lost in leakage.
KAISER_BETA = 16.0
# Bins either side of a tone that belong to the tone itself (the window's main lobe).
MAIN_LOBE_BINS = 12


@dataclass(frozen=True)
class ToneResult:
    """What came out for one input tone."""

    gain_db: float  # output level of the tone relative to its input level
    worst_spur_db: float  # strongest other component, relative to the input tone's level


def tone(freq_hz: float, rate: int, seconds: float, amplitude: float = AMPLITUDE) -> np.ndarray:
    """A sine as int16 samples."""
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


def feed_frames(stream: PcmStream, samples: np.ndarray, rate: int) -> np.ndarray:
    """Push samples through `stream` in 20 ms frames; return everything that came out."""
    frame = int(rate * FRAME_SECONDS)
    pcm = samples.astype("<i2").tobytes()
    out = b"".join(stream(pcm[i : i + 2 * frame]) for i in range(0, len(pcm), 2 * frame))
    return np.frombuffer(out, dtype="<i2").astype(np.float64)


def _amplitude_spectrum(samples: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Windowed spectrum scaled so a sine of amplitude A shows as A at its bin."""
    window = np.kaiser(len(samples), KAISER_BETA)
    spectrum = np.abs(np.fft.rfft(samples * window)) * 2 / window.sum()
    return np.fft.rfftfreq(len(samples), 1 / rate), spectrum


def measure_tone(
    stream: PcmStream, in_rate: int, out_rate: int, freq_hz: float, seconds: float = 1.0
) -> ToneResult:
    """Feed one tone; return its gain and the strongest spurious component.

    The first 100 ms of output is dropped, so the filter's start-up is not measured.
    """
    out = feed_frames(stream, tone(freq_hz, in_rate, seconds + 0.1), in_rate)
    out = out[int(0.1 * out_rate) :]
    freqs, spectrum = _amplitude_spectrum(out, out_rate)
    tone_bin = int(np.argmin(np.abs(freqs - freq_hz)))
    in_band = freq_hz < out_rate / 2
    lobe = slice(max(tone_bin - MAIN_LOBE_BINS, 0), tone_bin + MAIN_LOBE_BINS + 1)
    others = spectrum.copy()
    if in_band:
        others[lobe] = 0.0
    gain = _db(_tone_amplitude(out, out_rate, freq_hz) / AMPLITUDE) if in_band else -np.inf
    return ToneResult(gain_db=gain, worst_spur_db=_db(others.max() / AMPLITUDE))


def _tone_amplitude(samples: np.ndarray, rate: int, freq_hz: float) -> float:
    """Least-squares amplitude of one sinusoid: exact, unlike reading an FFT bin."""
    t = np.arange(len(samples)) / rate
    basis = np.column_stack([np.sin(2 * np.pi * freq_hz * t), np.cos(2 * np.pi * freq_hz * t)])
    (sin_part, cos_part), *_ = np.linalg.lstsq(basis, samples, rcond=None)
    return float(np.hypot(sin_part, cos_part))


def streaming_delay_ms(stream: PcmStream, in_rate: int, out_rate: int) -> float:
    """How late a click reaches the caller, fed in 20 ms frames.

    Two parts add up. The shift: a 1 kHz tone burst under a Hann envelope comes out with
    its envelope peak moved by the filter's group delay. The hold-back: audio a resampler
    keeps in its buffer instead of returning (the output runs short of the input by it),
    which the listener waits for even when the resampler trims its own filter delay.
    """
    seconds, at = 1.0, 0.2
    t = np.arange(int(in_rate * seconds)) / in_rate
    burst = np.where(
        np.abs(t - at) < 0.004, 0.5 + 0.5 * np.cos(np.pi * (t - at) / 0.004), 0.0
    ) * np.sin(2 * np.pi * 1000 * (t - at))
    out = feed_frames(stream, np.round(AMPLITUDE * burst).astype(np.int16), in_rate)
    shift = _envelope_peak(out) / out_rate - at
    held_back = seconds - len(out) / out_rate
    return (shift + held_back) * 1000


def _envelope_peak(samples: np.ndarray) -> float:
    """Where the analytic signal's magnitude peaks, to a fraction of a sample."""
    spectrum = np.fft.fft(samples)
    half = np.zeros(len(samples))
    half[0] = 1.0
    half[1 : (len(samples) + 1) // 2] = 2.0
    if len(samples) % 2 == 0:
        half[len(samples) // 2] = 1.0
    envelope = np.abs(np.fft.ifft(spectrum * half))
    i = int(np.argmax(envelope))
    if 0 < i < len(envelope) - 1:  # parabolic interpolation between neighbours
        a, b, c = envelope[i - 1], envelope[i], envelope[i + 1]
        return i + 0.5 * (a - c) / (a - 2 * b + c)
    return float(i)


def _db(ratio: float) -> float:
    return float(20 * np.log10(max(ratio, 1e-12)))


def passband_tones(count: int = 12) -> np.ndarray:
    """Test frequencies across the telephone band, off any simple ratio of the rates."""
    low, high = TELEPHONE_BAND_HZ
    return np.linspace(low, high, count) + 0.37


def stopband_tones(in_rate: int, out_rate: int) -> np.ndarray:
    """Input tones a downsampler must reject: from 4.6 kHz (the lowest that aliases into
    the telephone band at 8 kHz) or the out-rate's image edge, up to the input Nyquist."""
    start = 4600.0 if out_rate == 8000 else out_rate - 7000.0
    return np.linspace(start, in_rate / 2 - 100, 10) + 0.37
