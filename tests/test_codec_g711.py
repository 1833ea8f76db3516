"""G.711 µ-law and A-law: bit-exact against the stdlib reference, any bytes-like input."""

import array
import warnings

import pytest

import codec

with warnings.catch_warnings():  # audioop is deprecated in 3.11-3.12; audioop-lts from 3.13
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_CODES = bytes(range(256))
ALL_SAMPLES = array.array("h", range(-32768, 32768)).tobytes()


@pytest.mark.parametrize(
    ("decode", "reference"),
    [(codec.ulaw_decode, audioop.ulaw2lin), (codec.alaw_decode, audioop.alaw2lin)],
)
def test_every_code_decodes_as_the_reference(decode, reference):
    assert decode(ALL_CODES) == reference(ALL_CODES, 2)


@pytest.mark.parametrize(
    ("encode", "reference"),
    [(codec.ulaw_encode, audioop.lin2ulaw), (codec.alaw_encode, audioop.lin2alaw)],
)
def test_every_sample_encodes_as_the_reference(encode, reference):
    assert encode(ALL_SAMPLES) == reference(ALL_SAMPLES, 2)


@pytest.mark.parametrize(
    ("decode", "encode"),
    [(codec.ulaw_decode, codec.ulaw_encode), (codec.alaw_decode, codec.alaw_encode)],
)
def test_decoded_codes_encode_back_to_a_code_of_the_same_value(decode, encode):
    # µ-law has two codes for zero (0x7F and 0xFF); compare values, not codes.
    assert decode(encode(decode(ALL_CODES))) == decode(ALL_CODES)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview, lambda b: array.array("h", b)])
def test_any_bytes_like_input_gives_bytes(wrap):
    pcm = ALL_SAMPLES[:320]
    encoded = codec.ulaw_encode(wrap(pcm))
    assert type(encoded) is bytes
    assert encoded == audioop.lin2ulaw(pcm, 2)
    decoded = codec.alaw_decode(wrap(encoded))
    assert type(decoded) is bytes
    assert decoded == audioop.alaw2lin(encoded, 2)


def test_pcm_at_an_odd_address_is_read_correctly():
    buffer = bytearray(b"\x00" + ALL_SAMPLES[:640])
    view = memoryview(buffer)[1:]  # starts one byte into the buffer
    assert codec.ulaw_encode(view) == audioop.lin2ulaw(ALL_SAMPLES[:640], 2)


@pytest.mark.parametrize(
    "function", [codec.ulaw_decode, codec.ulaw_encode, codec.alaw_decode, codec.alaw_encode]
)
def test_empty_input_gives_empty_bytes(function):
    assert function(b"") == b""


@pytest.mark.parametrize("function", [codec.ulaw_encode, codec.alaw_encode])
def test_odd_byte_count_is_a_value_error(function):
    with pytest.raises(ValueError, match="whole number of 16-bit samples; got 3 bytes"):
        function(b"\x00\x01\x02")


@pytest.mark.parametrize(
    "function", [codec.ulaw_decode, codec.ulaw_encode, codec.alaw_decode, codec.alaw_encode]
)
@pytest.mark.parametrize("value", ["text", 42, None, [1, 2]])
def test_non_bytes_input_is_a_type_error(function, value):
    with pytest.raises(TypeError, match="bytes-like object"):
        function(value)


def test_non_contiguous_buffer_is_a_type_error():
    strided = memoryview(ALL_SAMPLES)[::2]
    with pytest.raises(TypeError, match="contiguous"):
        codec.ulaw_decode(strided)
