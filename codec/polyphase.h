/* Streaming rational resampler: a polyphase FIR whose state carries across calls. */
#ifndef HW_POLYPHASE_H
#define HW_POLYPHASE_H

#include <stddef.h>

/* Sample formats at either end: 16-bit little-endian PCM, or G.711 µ-law bytes. */
typedef enum { HW_PCM16 = 0, HW_ULAW = 1 } hw_format;

typedef struct hw_resampler hw_resampler;

/* Pick the FIR kernel: the best the CPU runs, capped by `wanted` ("avx2" or "baseline";
 * anything else, or NULL, caps nothing). Returns the name of the kernel picked. */
const char *hw_polyphase_init(const char *wanted);

/* A resampler for one supported rate pair, or NULL (unsupported pair, or out of memory:
 * hw_resampler_supported() tells the two apart). */
hw_resampler *hw_resampler_new(int in_rate, int out_rate);
int hw_resampler_supported(int in_rate, int out_rate);
void hw_resampler_free(hw_resampler *r);

/* Forget all history, as if newly made. */
void hw_resampler_reset(hw_resampler *r);

/* Output samples that hw_resampler_process() will give for n more input samples. */
size_t hw_resampler_output_len(const hw_resampler *r, size_t n);

/* Resample n input samples of format fin into out (room for output_len samples of fout).
 * Returns the number of samples written. */
size_t hw_resampler_process(hw_resampler *r, const void *in, size_t n, hw_format fin,
                            void *out, hw_format fout);

/* Output samples that hw_resampler_flush() will give. */
size_t hw_resampler_flush_len(const hw_resampler *r);

/* Push the held-back input and the filter's tail out (zeros follow the last sample),
 * then reset. Returns the number of samples written. */
size_t hw_resampler_flush(hw_resampler *r, void *out, hw_format fout);

/* The filter's group delay, in seconds. */
double hw_resampler_delay(const hw_resampler *r);

#endif
