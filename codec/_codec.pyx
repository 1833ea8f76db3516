"""Compiled G.711 codecs and streaming polyphase resamplers (see codec/__init__.py)."""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int16_t, uint8_t, uintptr_t


cdef extern from "g711.h":
    void hw_g711_init()
    void hw_ulaw_decode(const uint8_t *data, size_t n, int16_t *out) noexcept
    void hw_ulaw_encode(const int16_t *data, size_t n, uint8_t *out) noexcept
    void hw_alaw_decode(const uint8_t *data, size_t n, int16_t *out) noexcept
    void hw_alaw_encode(const int16_t *data, size_t n, uint8_t *out) noexcept


cdef extern from "polyphase.h":
    ctypedef enum hw_format:
        HW_PCM16
        HW_ULAW
    ctypedef struct hw_resampler:
        pass
    const char *hw_polyphase_init(const char *wanted)
    hw_resampler *hw_resampler_new(int in_rate, int out_rate)
    int hw_resampler_supported(int in_rate, int out_rate)
    void hw_resampler_free(hw_resampler *r)
    void hw_resampler_reset(hw_resampler *r)
    size_t hw_resampler_output_len(const hw_resampler *r, size_t n)
    size_t hw_resampler_process(hw_resampler *r, const void *data, size_t n, hw_format fin,
                                void *out, hw_format fout)
    size_t hw_resampler_flush_len(const hw_resampler *r)
    size_t hw_resampler_flush(hw_resampler *r, void *out, hw_format fout)
    double hw_resampler_delay(const hw_resampler *r)


import os

hw_g711_init()

# Which SIMD kernel resamples: the best this CPU runs, unless HIGHWAY_CODEC_KERNEL caps it
# ("avx2" or "baseline"), which lets the tests check every kernel on one machine.
SIMD_KERNEL = hw_polyphase_init(os.environ.get("HIGHWAY_CODEC_KERNEL", "").encode()).decode()

SUPPORTED_RATE_PAIRS = tuple(
    (a, b) for a in (8000, 16000, 24000) for b in (8000, 16000, 24000)
    if hw_resampler_supported(a, b)
)
FUSED_RATES = (16000, 24000)


cdef int acquire(object data, Py_buffer *view) except -1:
    """Borrow any contiguous bytes-like object's memory, or raise TypeError."""
    try:
        PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    except BufferError as error:  # e.g. a non-contiguous memoryview
        raise TypeError(f"expected a contiguous bytes-like object: {error}") from None
    except TypeError:
        raise TypeError(
            f"expected a bytes-like object, not {type(data).__name__!r}"
        ) from None
    return 0


cdef int acquire_pcm(object data, Py_buffer *view) except -1:
    """Borrow PCM16 input: an even number of bytes."""
    acquire(data, view)
    if view.len & 1:
        PyBuffer_Release(view)
        raise ValueError(
            f"PCM16 input must be a whole number of 16-bit samples; got {view.len} bytes"
        )
    if (<uintptr_t>view.buf) & 1:  # int16 reads need 2-byte alignment: borrow an aligned copy
        aligned = PyBytes_FromStringAndSize(<const char *>view.buf, view.len)
        PyBuffer_Release(view)
        acquire(aligned, view)
    return 0


ctypedef void (*g711_decoder)(const uint8_t *data, size_t n, int16_t *out) noexcept
ctypedef void (*g711_encoder)(const int16_t *data, size_t n, uint8_t *out) noexcept


cdef bytes decode_with(g711_decoder decode, object data):
    cdef Py_buffer view
    acquire(data, &view)
    try:
        out = PyBytes_FromStringAndSize(NULL, view.len * 2)
        decode(<const uint8_t *>view.buf, view.len, <int16_t *>PyBytes_AS_STRING(out))
        return out
    finally:
        PyBuffer_Release(&view)


cdef bytes encode_with(g711_encoder encode, object pcm):
    cdef Py_buffer view
    acquire_pcm(pcm, &view)
    try:
        out = PyBytes_FromStringAndSize(NULL, view.len // 2)
        encode(<const int16_t *>view.buf, view.len // 2, <uint8_t *>PyBytes_AS_STRING(out))
        return out
    finally:
        PyBuffer_Release(&view)


def ulaw_decode(data) -> bytes:
    """Decode G.711 µ-law bytes to 16-bit little-endian PCM."""
    return decode_with(hw_ulaw_decode, data)


def alaw_decode(data) -> bytes:
    """Decode G.711 A-law bytes to 16-bit little-endian PCM."""
    return decode_with(hw_alaw_decode, data)


def ulaw_encode(pcm) -> bytes:
    """Encode 16-bit little-endian PCM to G.711 µ-law bytes."""
    return encode_with(hw_ulaw_encode, pcm)


def alaw_encode(pcm) -> bytes:
    """Encode 16-bit little-endian PCM to G.711 A-law bytes."""
    return encode_with(hw_alaw_encode, pcm)


cdef class _Stream:
    """One streaming polyphase FIR, fed and drained in the formats a subclass picks."""

    cdef hw_resampler *engine
    cdef hw_format input_format
    cdef hw_format output_format
    cdef readonly int in_rate
    cdef readonly int out_rate

    def __dealloc__(self):
        hw_resampler_free(self.engine)

    cdef int open(self, int in_rate, int out_rate, hw_format fin, hw_format fout) except -1:
        if not hw_resampler_supported(in_rate, out_rate):
            pairs = ", ".join(f"{a}->{b}" for a, b in SUPPORTED_RATE_PAIRS)
            raise ValueError(f"unsupported rate pair {in_rate}->{out_rate}; supported: {pairs}")
        self.engine = hw_resampler_new(in_rate, out_rate)
        if self.engine == NULL:
            raise MemoryError()
        self.in_rate, self.out_rate = in_rate, out_rate
        self.input_format, self.output_format = fin, fout
        return 0

    @property
    def delay(self) -> float:
        """The filter's group delay in seconds."""
        return hw_resampler_delay(self.engine)

    def process(self, data) -> bytes:
        """Resample one chunk; the filter state carries over to the next call."""
        cdef Py_buffer view
        cdef size_t n
        if self.input_format == HW_PCM16:
            acquire_pcm(data, &view)
            n = view.len // 2
        else:
            acquire(data, &view)
            n = view.len
        try:
            out = PyBytes_FromStringAndSize(
                NULL, hw_resampler_output_len(self.engine, n) * self.output_size()
            )
            hw_resampler_process(self.engine, view.buf, n, self.input_format,
                                 PyBytes_AS_STRING(out), self.output_format)
            return out
        finally:
            PyBuffer_Release(&view)

    def reset(self) -> None:
        """Forget all history, as if newly made (for example at the start of a new call)."""
        hw_resampler_reset(self.engine)

    cdef inline size_t output_size(self):
        return 1 if self.output_format == HW_ULAW else 2


cdef class Resampler(_Stream):
    """Streaming PCM16 resampler between 8, 16 and 24 kHz.

    A 20 ms frame in gives exactly one 20 ms frame out; the output lags the input by the
    filter's group delay (`delay`, under 2 ms). `flush()` returns the held-back tail.
    """

    def __init__(self, int in_rate, int out_rate):
        self.open(in_rate, out_rate, HW_PCM16, HW_PCM16)

    def flush(self) -> bytes:
        """Return what the filter still holds (input short of a block, then its delay's
        worth of tail, as if silence followed) and reset."""
        cdef size_t n = hw_resampler_flush_len(self.engine)
        out = PyBytes_FromStringAndSize(NULL, n * 2)
        if hw_resampler_flush(self.engine, PyBytes_AS_STRING(out), HW_PCM16) != n:
            raise MemoryError()
        return out

    def __repr__(self) -> str:
        return f"Resampler({self.in_rate}, {self.out_rate})"


cdef int check_fused_rate(int rate) except -1:
    if rate not in FUSED_RATES:
        raise ValueError(f"rate must be 16000 or 24000, not {rate}")
    return 0


cdef class UlawToPcm(_Stream):
    """µ-law at 8 kHz to PCM16 at `rate` (16000 or 24000) in one call per frame."""

    def __init__(self, int rate):
        check_fused_rate(rate)
        self.open(8000, rate, HW_ULAW, HW_PCM16)

    def __repr__(self) -> str:
        return f"UlawToPcm({self.out_rate})"


cdef class PcmToUlaw(_Stream):
    """PCM16 at `rate` (16000 or 24000) to µ-law at 8 kHz in one call per frame."""

    def __init__(self, int rate):
        check_fused_rate(rate)
        self.open(rate, 8000, HW_PCM16, HW_ULAW)

    def __repr__(self) -> str:
        return f"PcmToUlaw({self.in_rate})"
