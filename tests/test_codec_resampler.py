"""The streaming resamplers: framing, state, the reference definition, and bad input."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import codec

PAIRS = codec.SUPPORTED_RATE_PAIRS
TAPS_HEADER = Path(codec.__file__).with_name("filter_taps.h")
PROTOTYPE_FOR_RATE = {24000: "HW_TAPS_8K_24K", 16000: "HW_TAPS_8K_16K", 48000: "HW_TAPS_16K_24K"}


def prototype(in_rate: int, out_rate: int) -> np.ndarray:
    """The committed prototype filter for a pair, as the C code sees it (float32)."""
    shared_rate = math.lcm(in_rate, out_rate)
    name = PROTOTYPE_FOR_RATE[shared_rate]
    body = re.search(rf"{name}\[\d+\] = \{{(.*?)\}};", TAPS_HEADER.read_text(), re.S).group(1)
    values = [float(v.strip().rstrip("f")) for v in body.split(",") if v.strip()]
    return np.array(values, dtype=np.float32).astype(np.float64)


def reference_resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """y[m] = sum_k L*h[m*M - k*L] * x[k], straight from the definition."""
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    stuffed = np.zeros(len(x) * up)
    stuffed[::up] = x
    y = np.convolve(stuffed, prototype(in_rate, out_rate) * up)[: len(stuffed)][::down]
    return np.clip(np.round(y), -32768, 32767)


def noise(rate: int, seconds: float = 0.5, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, 6000, int(rate * seconds)), -32768, 32767).astype("<i2")


def as_array(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int64)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_output_matches_the_polyphase_definition(in_rate, out_rate):
    x = noise(in_rate)
    out = as_array(codec.Resampler(in_rate, out_rate).process(x.tobytes()))
    expected = reference_resample(x.astype(np.float64), in_rate, out_rate)
    assert len(out) == len(expected)
    assert np.max(np.abs(out - expected)) <= 1


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_each_20ms_frame_in_gives_one_20ms_frame_out(in_rate, out_rate):
    resampler = codec.Resampler(in_rate, out_rate)
    frame = noise(in_rate, 0.02).tobytes()
    for _ in range(5):
        assert len(resampler.process(frame)) == 2 * out_rate // 50


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_frames_give_the_same_samples_as_the_whole_signal(in_rate, out_rate):
    x = noise(in_rate, 1.0).tobytes()
    whole = as_array(codec.Resampler(in_rate, out_rate).process(x))
    framed_resampler = codec.Resampler(in_rate, out_rate)
    frame = 2 * in_rate // 50
    framed = as_array(
        b"".join(framed_resampler.process(x[i : i + frame]) for i in range(0, len(x), frame))
    )
    assert len(framed) == len(whole)
    assert np.max(np.abs(framed - whole)) <= 1


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_any_chunking_gives_the_same_samples(in_rate, out_rate):
    x = noise(in_rate, 0.3).tobytes()
    whole = as_array(codec.Resampler(in_rate, out_rate).process(x))
    rng = np.random.default_rng(3)
    resampler, out, i = codec.Resampler(in_rate, out_rate), [], 0
    while i < len(x):
        size = 2 * int(rng.integers(0, 40))  # 0 to 39 samples, often not a whole block
        out.append(resampler.process(x[i : i + size]))
        i += size
    chunked = as_array(b"".join(out))
    assert len(chunked) == len(whole)
    assert np.max(np.abs(chunked - whole)) <= 1


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_flush_returns_the_tail_and_resets(in_rate, out_rate):
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    taps = len(prototype(in_rate, out_rate))
    resampler = codec.Resampler(in_rate, out_rate)
    x = noise(in_rate, 0.1)[:-1]  # one sample short: leaves input held back when down > 1
    head = resampler.process(x.tobytes())
    tail = resampler.flush()
    expected_tail = (
        math.ceil(len(x) * up / down) - len(head) // 2 + math.ceil((taps - 1) / 2 / down)
    )
    assert len(tail) // 2 == expected_tail
    # Everything that came out is the definition applied to the signal plus silence.
    padded = np.concatenate([x.astype(np.float64), np.zeros(taps)])
    expected = reference_resample(padded, in_rate, out_rate)[: (len(head) + len(tail)) // 2]
    assert np.max(np.abs(as_array(head + tail) - expected)) <= 1
    # Flushing resets: the next signal comes out as from a new resampler.
    assert resampler.process(x.tobytes()) == codec.Resampler(in_rate, out_rate).process(x.tobytes())


def test_flush_of_an_unused_resampler_is_empty():
    resampler = codec.Resampler(8000, 24000)
    assert resampler.flush() == b""


@pytest.mark.parametrize(
    "make",
    [
        lambda: codec.Resampler(24000, 16000),
        lambda: codec.UlawToPcm(24000),
        lambda: codec.PcmToUlaw(16000),
    ],
)
def test_reset_forgets_history(make):
    stream = make()
    data = noise(24000, 0.05).tobytes()
    fresh = make().process(data)
    stream.process(noise(24000, 0.05, seed=1).tobytes()[: 301 * 2])
    stream.reset()
    assert stream.process(data) == fresh


@pytest.mark.parametrize("rate", [16000, 24000])
def test_fused_ulaw_to_pcm_is_decode_then_resample(rate):
    ulaw = codec.ulaw_encode(noise(8000, 0.5).tobytes())
    fused, resampler = codec.UlawToPcm(rate), codec.Resampler(8000, rate)
    for i in range(0, len(ulaw), 160):
        frame = ulaw[i : i + 160]
        out = fused.process(frame)
        assert len(out) == 2 * rate // 50
        assert out == resampler.process(codec.ulaw_decode(frame))


@pytest.mark.parametrize("rate", [16000, 24000])
def test_fused_pcm_to_ulaw_is_resample_then_encode(rate):
    pcm = noise(rate, 0.5).tobytes()
    fused, resampler = codec.PcmToUlaw(rate), codec.Resampler(rate, 8000)
    frame = 2 * rate // 50
    for i in range(0, len(pcm), frame):
        out = fused.process(pcm[i : i + frame])
        assert len(out) == 160
        assert out == codec.ulaw_encode(resampler.process(pcm[i : i + frame]))


def test_delay_and_rates_are_reported():
    resampler = codec.Resampler(8000, 24000)
    assert (resampler.in_rate, resampler.out_rate) == (8000, 24000)
    assert 0 < resampler.delay <= 0.002
    assert repr(codec.UlawToPcm(16000)) == "UlawToPcm(16000)"


def test_empty_input_gives_empty_output_and_keeps_state():
    resampler = codec.Resampler(24000, 8000)
    x = noise(24000, 0.05).tobytes()
    expected = codec.Resampler(24000, 8000).process(x)
    assert resampler.process(b"") == b""
    assert resampler.process(x[:2]) == b""  # one sample: not yet a whole block
    assert resampler.process(x[2:]) == expected
    assert codec.UlawToPcm(24000).process(bytearray()) == b""


@pytest.mark.parametrize(
    "make", [lambda: codec.Resampler(16000, 8000), lambda: codec.PcmToUlaw(24000)]
)
def test_odd_pcm_byte_count_is_a_value_error(make):
    with pytest.raises(ValueError, match="whole number of 16-bit samples; got 321 bytes"):
        make().process(bytes(321))


@pytest.mark.parametrize(
    "make", [lambda: codec.Resampler(8000, 16000), lambda: codec.UlawToPcm(24000)]
)
@pytest.mark.parametrize("value", ["text", 1.5, None])
def test_non_bytes_input_is_a_type_error(make, value):
    with pytest.raises(TypeError, match="bytes-like object"):
        make().process(value)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 8000), (8000, 48000), (44100, 8000)])
def test_unsupported_rate_pair_is_a_value_error(in_rate, out_rate):
    with pytest.raises(ValueError, match=r"unsupported rate pair .*supported: 8000->16000"):
        codec.Resampler(in_rate, out_rate)


@pytest.mark.parametrize("cls", [codec.UlawToPcm, codec.PcmToUlaw])
def test_fused_paths_take_only_16k_or_24k(cls):
    with pytest.raises(ValueError, match="16000 or 24000"):
        cls(8000)


KERNEL_PROBE = """
import json, sys, numpy as np, codec
x = np.random.default_rng(5).normal(0, 6000, 24000).clip(-32768, 32767).astype("<i2").tobytes()
pairs = codec.SUPPORTED_RATE_PAIRS
out = {f"{a}-{b}": codec.Resampler(a, b).process(x[: 2 * a]).hex() for a, b in pairs}
json.dump({"kernel": codec.SIMD_KERNEL, "out": out}, sys.stdout)
"""


@pytest.mark.parametrize("kernel", ["avx2", "baseline"])
def test_every_simd_kernel_gives_the_same_samples(kernel):
    """The CPU picks one kernel; run the others too by capping it in a fresh process."""
    runs = {}
    for cap in ("", kernel):
        done = subprocess.run(
            [sys.executable, "-c", KERNEL_PROBE],
            env={**os.environ, "HIGHWAY_CODEC_KERNEL": cap},
            capture_output=True,
            text=True,
            check=True,
        )
        runs[cap] = json.loads(done.stdout)
    best, capped = runs[""], runs[kernel]
    if capped["kernel"] != kernel:
        pytest.skip(f"this CPU does not run the {kernel} kernel")
    for pair, hex_out in best["out"].items():
        a, b = as_array(bytes.fromhex(hex_out)), as_array(bytes.fromhex(capped["out"][pair]))
        assert len(a) == len(b)
        assert np.max(np.abs(a - b)) <= 1, pair
