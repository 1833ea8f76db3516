"""Telephone-quality resampling: flat passband, no images or aliases, short delay.

The fused µ-law paths are the same filters (test_codec_resampler proves them equal to
decode-then-resample and resample-then-encode), so their quality is measured here on the
PCM resamplers, where µ-law's own quantisation noise does not hide the filter's.
"""

import pytest

import codec
from highway.testing.audio_quality import (
    measure_tone,
    passband_tones,
    stopband_tones,
    streaming_delay_ms,
)

PAIRS = codec.SUPPORTED_RATE_PAIRS
DOWN_PAIRS = [(a, b) for a, b in PAIRS if b < a]

PASSBAND_RIPPLE_DB = 0.05
SPUR_LIMIT_DB = -75.0
MAX_DELAY_MS = 2.0


def stream(in_rate, out_rate):
    return codec.Resampler(in_rate, out_rate).process


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
@pytest.mark.parametrize("freq", passband_tones())
def test_passband_is_flat_and_clean(in_rate, out_rate, freq):
    """Gain within ±0.05 dB, and every image or alias of the tone at or below -75 dB."""
    result = measure_tone(stream(in_rate, out_rate), in_rate, out_rate, freq)
    assert abs(result.gain_db) <= PASSBAND_RIPPLE_DB
    assert result.worst_spur_db <= SPUR_LIMIT_DB


@pytest.mark.parametrize(("in_rate", "out_rate"), [(16000, 24000), (24000, 16000)])
@pytest.mark.parametrize("freq", [4000.37, 5500.37, 7000.0])
def test_wideband_pairs_keep_speech_up_to_7khz(in_rate, out_rate, freq):
    result = measure_tone(stream(in_rate, out_rate), in_rate, out_rate, freq)
    assert abs(result.gain_db) <= PASSBAND_RIPPLE_DB
    assert result.worst_spur_db <= SPUR_LIMIT_DB


@pytest.mark.parametrize(("in_rate", "out_rate"), DOWN_PAIRS)
def test_downsampling_rejects_what_would_alias(in_rate, out_rate):
    for freq in stopband_tones(in_rate, out_rate):
        result = measure_tone(stream(in_rate, out_rate), in_rate, out_rate, freq)
        assert result.worst_spur_db <= SPUR_LIMIT_DB, f"{freq:.0f} Hz"


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_delay_is_the_filters_group_delay_and_under_2ms(in_rate, out_rate):
    measured = streaming_delay_ms(stream(in_rate, out_rate), in_rate, out_rate)
    assert 0 < measured <= MAX_DELAY_MS
    assert measured == pytest.approx(codec.Resampler(in_rate, out_rate).delay * 1000, abs=0.05)
