/* Streaming rational resampler (L/M) as a block polyphase FIR.
 *
 * With the prototype h at the shared rate F = L*in_rate = M*out_rate, output sample
 * y[m] = sum_k L*h[m*M - k*L] * x[k]. Grouping outputs in blocks of L (y_j[q] = y[L*q+j])
 * and inputs in blocks of M (x_i[r] = x[M*r+i]) turns this into L*M plain FIRs over
 * de-interleaved input streams, each with contiguous memory access:
 *
 *     y_j[q] = sum_i sum_t g_ji[t] * x_i[q - o_ji - t],   g_ji[t] = L*h[L*M*(o_ji+t) + j*M - i*L]
 *
 * An input block in means an output block out, so a 20 ms frame in yields exactly one
 * 20 ms frame out and nothing is held back beyond the filter's own history. The kernel
 * is vectorised across consecutive outputs (every lane accumulates in the same order
 * as the scalar tail), so output does not depend on how the input was split into calls.
 */
#include "polyphase.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filter_taps.h"
#include "g711.h"

enum {
    CHUNK_BLOCKS = 512, /* input blocks per kernel pass; a 20 ms frame is 160 */
    MAX_UP = 3,
    MAX_DOWN = 3,
};

/* SIMD without -march=native: the FIR kernel is compiled for AVX-512, AVX2+FMA and the
 * baseline, each at its own vector width, and hw_resampler_new() picks one from the CPU's
 * features. The lighter loops use GCC's function multi-versioning for the same effect. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define HW_X86_DISPATCH 1
#define HW_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HW_X86_DISPATCH 0
#define HW_MULTIVERSION
#endif

typedef void (*fir_function)(const float *streams, size_t stride, const float *coeffs, int L,
                             int M, int K, int Q, float *planar);

#define FIR_NAME fir_baseline
#define FIR_TARGET
#define FIR_WIDTH 4
#define FIR_FMA 0
#include "fir_kernel.h"
#undef FIR_NAME
#undef FIR_TARGET
#undef FIR_WIDTH
#undef FIR_FMA

#if HW_X86_DISPATCH
#define FIR_NAME fir_avx2
#define FIR_TARGET __attribute__((target("avx2,fma")))
#define FIR_WIDTH 8
#define FIR_FMA 1
#include "fir_kernel.h"
#undef FIR_NAME
#undef FIR_TARGET
#undef FIR_WIDTH
#undef FIR_FMA

#define FIR_NAME fir_avx512
#define FIR_TARGET __attribute__((target("avx512f,avx512vl,avx2,fma")))
#define FIR_WIDTH 16
#define FIR_FMA 1
#include "fir_kernel.h"
#undef FIR_NAME
#undef FIR_TARGET
#undef FIR_WIDTH
#undef FIR_FMA
#endif

static fir_function fir_kernel = fir_baseline;
static const char *fir_kernel_name = "baseline";

const char *hw_polyphase_init(const char *wanted)
{
#if HW_X86_DISPATCH
    /* The cap: 0 the baseline only, 1 up to AVX2, 2 anything. An unknown name caps
     * nothing, so a misspelt setting never slows a call down. */
    int cap = 2;
    if (wanted && strcmp(wanted, "baseline") == 0)
        cap = 0;
    else if (wanted && strcmp(wanted, "avx2") == 0)
        cap = 1;
    __builtin_cpu_init();
    if (cap >= 2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) {
        fir_kernel = fir_avx512;
        fir_kernel_name = "avx512";
    } else if (cap >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        fir_kernel = fir_avx2;
        fir_kernel_name = "avx2";
    }
#else
    (void)wanted;
#endif
    return fir_kernel_name;
}

typedef struct {
    int in_rate, out_rate, up, down;
    const float *prototype;
    int prototype_len;
} rate_pair;

#define TAPS(name) name, (int)(sizeof(name) / sizeof(name[0]))
static const rate_pair RATE_PAIRS[] = {
    {8000, 24000, 3, 1, TAPS(HW_TAPS_8K_24K)},  {24000, 8000, 1, 3, TAPS(HW_TAPS_8K_24K)},
    {8000, 16000, 2, 1, TAPS(HW_TAPS_8K_16K)},  {16000, 8000, 1, 2, TAPS(HW_TAPS_8K_16K)},
    {16000, 24000, 3, 2, TAPS(HW_TAPS_16K_24K)}, {24000, 16000, 2, 3, TAPS(HW_TAPS_16K_24K)},
};

struct hw_resampler {
    const rate_pair *pair;
    int up, down;      /* L and M */
    int taps;          /* K: taps per sub-filter, also the history kept per stream */
    float *coeffs;     /* [L][M][K], time-reversed so the kernel walks memory forwards */
    float *streams;    /* M de-interleaved input streams, each `stride` floats: history, then chunk */
    size_t stride;
    float *planar;     /* L output streams of CHUNK_BLOCKS floats */
    float pending[MAX_DOWN]; /* input samples short of a whole block */
    int npending;
    int primed;        /* any input since the last reset */
};

static const rate_pair *find_pair(int in_rate, int out_rate)
{
    for (size_t n = 0; n < sizeof(RATE_PAIRS) / sizeof(RATE_PAIRS[0]); n++)
        if (RATE_PAIRS[n].in_rate == in_rate && RATE_PAIRS[n].out_rate == out_rate)
            return &RATE_PAIRS[n];
    return NULL;
}

int hw_resampler_supported(int in_rate, int out_rate)
{
    return find_pair(in_rate, out_rate) != NULL;
}

/* o_ji: sub-filter g_ji starts one block later where its phase j*M - i*L is negative. */
static int first_block(int phase)
{
    return phase < 0 ? 1 : 0;
}

/* Split the prototype into the L*M sub-filters g_ji (see the top of this file), each
 * padded to the longest one's K taps. */
static int split_prototype(hw_resampler *r)
{
    const int L = r->up, M = r->down, N = r->pair->prototype_len;
    int K = 0;
    for (int j = 0; j < L; j++)
        for (int i = 0; i < M; i++) {
            int phase = j * M - i * L;
            int count = (N - 1 - phase) / (L * M) - first_block(phase) + 1;
            K = count > K ? count : K;
        }
    r->taps = K;
    r->coeffs = calloc((size_t)L * M * K, sizeof(float));
    if (!r->coeffs)
        return -1;
    for (int j = 0; j < L; j++)
        for (int i = 0; i < M; i++) {
            int phase = j * M - i * L;
            float *g = r->coeffs + (size_t)(j * M + i) * K;
            for (int t = 0; t < K; t++) {
                int index = L * M * (first_block(phase) + t) + phase;
                g[K - 1 - t] = index < N ? (float)L * r->pair->prototype[index] : 0.0f;
            }
        }
    return 0;
}

hw_resampler *hw_resampler_new(int in_rate, int out_rate)
{
    const rate_pair *pair = find_pair(in_rate, out_rate);
    if (!pair)
        return NULL;
    hw_resampler *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->pair = pair;
    r->up = pair->up;
    r->down = pair->down;
    if (split_prototype(r) != 0) {
        hw_resampler_free(r);
        return NULL;
    }
    r->stride = (size_t)r->taps + CHUNK_BLOCKS;
    r->streams = calloc((size_t)r->down * r->stride, sizeof(float));
    r->planar = calloc((size_t)r->up * CHUNK_BLOCKS, sizeof(float));
    if (!r->streams || !r->planar) {
        hw_resampler_free(r);
        return NULL;
    }
    return r;
}

void hw_resampler_free(hw_resampler *r)
{
    if (!r)
        return;
    free(r->coeffs);
    free(r->streams);
    free(r->planar);
    free(r);
}

void hw_resampler_reset(hw_resampler *r)
{
    memset(r->streams, 0, (size_t)r->down * r->stride * sizeof(float));
    r->npending = 0;
    r->primed = 0;
}

double hw_resampler_delay(const hw_resampler *r)
{
    const rate_pair *p = r->pair;
    return (p->prototype_len - 1) / 2.0 / ((double)p->in_rate * p->up);
}

size_t hw_resampler_output_len(const hw_resampler *r, size_t n)
{
    return ((size_t)r->npending + n) / (size_t)r->down * (size_t)r->up;
}

/* ---- the hot loops ---------------------------------------------------------------- */

/* Round to nearest (ties to even) and saturate. Adding then subtracting 1.5 * 2^23 leaves
 * the float rounded to an integer; unlike lrintf (which returns a 64-bit long) this
 * vectorises on every instruction set. Exact because |value| <= 32768 after clamping. */
static inline int16_t float_to_pcm(float value)
{
    const float round_magic = 12582912.0f;
    value = value < -32768.0f ? -32768.0f : value;
    value = value > 32767.0f ? 32767.0f : value;
    return (int16_t)(int32_t)((value + round_magic) - round_magic);
}

/* De-interleave `count` input blocks into the streams, starting at chunk block q0.
 * M is a constant at every call, so GCC vectorises the strided reads. */
static inline __attribute__((always_inline)) void load_pcm_m(hw_resampler *r, const int16_t *in,
                                                            int q0, int count, const int M)
{
    float *base = r->streams + r->taps + q0;
    for (int b = 0; b < count; b++)
        for (int i = 0; i < M; i++)
            base[i * r->stride + b] = (float)in[b * M + i];
}

HW_MULTIVERSION
static void load_blocks(hw_resampler *r, const void *in, int q0, int count, hw_format format)
{
    if (format == HW_ULAW) { /* µ-law input is always 8 kHz, the lowest rate: M == 1 */
        const uint8_t *src = in;
        float *dst = r->streams + r->taps + q0;
        for (int b = 0; b < count; b++)
            dst[b] = hw_ulaw_to_float[src[b]];
        return;
    }
    switch (r->down) {
    case 1: load_pcm_m(r, in, q0, count, 1); break;
    case 2: load_pcm_m(r, in, q0, count, 2); break;
    case 3: load_pcm_m(r, in, q0, count, 3); break;
    }
}

/* Interleave the L planar output streams into `out`; L is a constant at every call. */
static inline __attribute__((always_inline)) void store_pcm_l(const float *restrict planar, int Q,
                                                             int16_t *restrict out, const int L)
{
    for (int q = 0; q < Q; q++)
        for (int j = 0; j < L; j++)
            out[q * L + j] = float_to_pcm(planar[j * CHUNK_BLOCKS + q]);
}

HW_MULTIVERSION
static void store_blocks(const hw_resampler *r, int Q, void *out, hw_format format)
{
    if (format == HW_ULAW) { /* µ-law output is always 8 kHz, the lowest rate: L == 1 */
        int16_t pcm[CHUNK_BLOCKS]; /* rounding vectorises only apart from the table look-ups */
        store_pcm_l(r->planar, Q, pcm, 1);
        uint8_t *dst = out;
        for (int q = 0; q < Q; q++)
            dst[q] = hw_ulaw_encode_sample(pcm[q]);
        return;
    }
    switch (r->up) {
    case 1: store_pcm_l(r->planar, Q, out, 1); break;
    case 2: store_pcm_l(r->planar, Q, out, 2); break;
    case 3: store_pcm_l(r->planar, Q, out, 3); break;
    }
}

/* ---- streaming ---------------------------------------------------------------------- */

static size_t format_size(hw_format format)
{
    return format == HW_ULAW ? 1 : 2;
}

static float input_sample(const void *in, size_t index, hw_format format)
{
    return format == HW_ULAW ? hw_ulaw_to_float[((const uint8_t *)in)[index]]
                             : (float)((const int16_t *)in)[index];
}

/* Run one chunk: the streams hold Q fresh blocks after their history. */
static void run_chunk(hw_resampler *r, int Q, void *out, hw_format fout)
{
    fir_kernel(r->streams, r->stride, r->coeffs, r->up, r->down, r->taps, Q, r->planar);
    store_blocks(r, Q, out, fout);
    for (int i = 0; i < r->down; i++) {
        float *stream = r->streams + i * r->stride;
        memmove(stream, stream + Q, (size_t)r->taps * sizeof(float));
    }
}

size_t hw_resampler_process(hw_resampler *r, const void *in, size_t n, hw_format fin, void *out,
                            hw_format fout)
{
    const size_t M = (size_t)r->down, L = (size_t)r->up;
    size_t blocks = ((size_t)r->npending + n) / M, used = 0, written = 0;
    if (n > 0)
        r->primed = 1;

    while (blocks > 0) {
        int Q = blocks < CHUNK_BLOCKS ? (int)blocks : CHUNK_BLOCKS, q0 = 0;
        if (r->npending > 0) { /* complete the block begun by an earlier call */
            for (size_t i = 0; i < M; i++) {
                float sample = (int)i < r->npending ? r->pending[i] : input_sample(in, used++, fin);
                r->streams[i * r->stride + r->taps] = sample;
            }
            r->npending = 0;
            q0 = 1;
        }
        load_blocks(r, (const char *)in + used * format_size(fin), q0, Q - q0, fin);
        used += (size_t)(Q - q0) * M;
        run_chunk(r, Q, (char *)out + written * format_size(fout), fout);
        written += (size_t)Q * L;
        blocks -= (size_t)Q;
    }
    while (used < n)
        r->pending[r->npending++] = input_sample(in, used++, fin);
    return written;
}

/* Output samples still owed: those of the held-back input, then the delay's worth. */
size_t hw_resampler_flush_len(const hw_resampler *r)
{
    if (!r->primed)
        return 0;
    const rate_pair *p = r->pair;
    size_t held = ((size_t)r->npending * r->up + r->down - 1) / r->down;
    size_t tail = (size_t)ceil((p->prototype_len - 1) / 2.0 / r->down);
    return held + tail;
}

size_t hw_resampler_flush(hw_resampler *r, void *out, hw_format fout)
{
    size_t wanted = hw_resampler_flush_len(r);
    if (wanted == 0)
        return 0;
    /* Feed zeros for whole blocks, then keep only the samples owed. */
    size_t blocks = (wanted + r->up - 1) / r->up;
    size_t zeros = blocks * r->down - r->npending;
    int16_t *silence = calloc(zeros, sizeof(int16_t));
    char *scratch = malloc(blocks * r->up * format_size(fout));
    size_t written = 0;
    if (silence && scratch) {
        hw_resampler_process(r, silence, zeros, HW_PCM16, scratch, fout);
        memcpy(out, scratch, wanted * format_size(fout));
        written = wanted;
    }
    free(silence);
    free(scratch);
    hw_resampler_reset(r);
    return written;
}
