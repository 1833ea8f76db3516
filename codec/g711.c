/* G.711 µ-law and A-law through lookup tables.
 *
 * The tables are computed at import from the ITU reference algorithm (the same code
 * CPython's audioop uses), so every code and every 16-bit input maps bit-exactly.
 * A table lookup is one load per sample; the 16 KiB µ-law encode table stays in L1/L2.
 */
#include "g711.h"

int16_t hw_ulaw_to_pcm[256];
float hw_ulaw_to_float[256];
uint8_t hw_pcm_to_ulaw[1 << 14];
int16_t hw_alaw_to_pcm[256];
uint8_t hw_pcm_to_alaw[1 << 13];

enum { SIGN_BIT = 0x80, QUANT_MASK = 0x0F, SEG_SHIFT = 4, SEG_MASK = 0x70 };
enum { ULAW_BIAS = 0x84, ULAW_CLIP = 8159 };

static const int16_t ulaw_segment_ends[8] = {0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF};
static const int16_t alaw_segment_ends[8] = {0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF};

static int segment_of(int value, const int16_t *ends)
{
    int segment = 0;
    while (segment < 8 && value > ends[segment])
        segment++;
    return segment;
}

/* Reference µ-law encoder for a 14-bit sample (the 16-bit sample shifted right by 2). */
static uint8_t ulaw_from_14bit(int value)
{
    int mask = 0xFF;
    if (value < 0) {
        value = -value;
        mask = 0x7F;
    }
    if (value > ULAW_CLIP)
        value = ULAW_CLIP;
    value += ULAW_BIAS >> 2;
    int segment = segment_of(value, ulaw_segment_ends);
    if (segment >= 8)
        return (uint8_t)(0x7F ^ mask);
    return (uint8_t)(((segment << 4) | ((value >> (segment + 1)) & 0xF)) ^ mask);
}

static int16_t ulaw_to_linear(uint8_t code)
{
    code = (uint8_t)~code;
    int t = ((code & QUANT_MASK) << 3) + ULAW_BIAS;
    t <<= (code & SEG_MASK) >> SEG_SHIFT;
    return (int16_t)((code & SIGN_BIT) ? (ULAW_BIAS - t) : (t - ULAW_BIAS));
}

/* Reference A-law encoder for a 13-bit sample (the 16-bit sample shifted right by 3). */
static uint8_t alaw_from_13bit(int value)
{
    int mask = 0xD5;
    if (value < 0) {
        mask = 0x55;
        value = -value - 1;
    }
    int segment = segment_of(value, alaw_segment_ends);
    if (segment >= 8)
        return (uint8_t)(0x7F ^ mask);
    int code = segment << SEG_SHIFT;
    code |= (segment < 2 ? (value >> 1) : (value >> segment)) & QUANT_MASK;
    return (uint8_t)(code ^ mask);
}

static int16_t alaw_to_linear(uint8_t code)
{
    code ^= 0x55;
    int t = (code & QUANT_MASK) << 4;
    int segment = (code & SEG_MASK) >> SEG_SHIFT;
    if (segment == 0)
        t += 8;
    else
        t = (t + 0x108) << (segment - 1);
    return (int16_t)((code & SIGN_BIT) ? t : -t);
}

void hw_g711_init(void)
{
    for (int code = 0; code < 256; code++) {
        hw_ulaw_to_pcm[code] = ulaw_to_linear((uint8_t)code);
        hw_ulaw_to_float[code] = (float)hw_ulaw_to_pcm[code];
        hw_alaw_to_pcm[code] = alaw_to_linear((uint8_t)code);
    }
    for (int index = 0; index < (1 << 14); index++)
        hw_pcm_to_ulaw[index] = ulaw_from_14bit(index - (1 << 13));
    for (int index = 0; index < (1 << 13); index++)
        hw_pcm_to_alaw[index] = alaw_from_13bit(index - (1 << 12));
}

void hw_ulaw_decode(const uint8_t *in, size_t n, int16_t *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = hw_ulaw_to_pcm[in[i]];
}

void hw_ulaw_encode(const int16_t *in, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = hw_ulaw_encode_sample(in[i]);
}

void hw_alaw_decode(const uint8_t *in, size_t n, int16_t *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = hw_alaw_to_pcm[in[i]];
}

void hw_alaw_encode(const int16_t *in, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = hw_alaw_encode_sample(in[i]);
}
