/* G.711 µ-law and A-law, bit-exact with the ITU reference (and CPython's audioop). */
#ifndef HW_G711_H
#define HW_G711_H

#include <stddef.h>
#include <stdint.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "codec assumes a little-endian host: PCM16 is read and written in place"
#endif

/* Lookup tables, filled once by hw_g711_init(). Encoders index by the sample's top
 * 14 (µ-law) or 13 (A-law) bits, exactly the bits G.711 looks at. */
extern int16_t hw_ulaw_to_pcm[256];
extern float hw_ulaw_to_float[256];
extern uint8_t hw_pcm_to_ulaw[1 << 14];
extern int16_t hw_alaw_to_pcm[256];
extern uint8_t hw_pcm_to_alaw[1 << 13];

void hw_g711_init(void);

static inline uint8_t hw_ulaw_encode_sample(int16_t sample)
{
    return hw_pcm_to_ulaw[(sample >> 2) + (1 << 13)];
}

static inline uint8_t hw_alaw_encode_sample(int16_t sample)
{
    return hw_pcm_to_alaw[(sample >> 3) + (1 << 12)];
}

void hw_ulaw_decode(const uint8_t *in, size_t n, int16_t *out);
void hw_ulaw_encode(const int16_t *in, size_t n, uint8_t *out);
void hw_alaw_decode(const uint8_t *in, size_t n, int16_t *out);
void hw_alaw_encode(const int16_t *in, size_t n, uint8_t *out);

#endif
