/* The polyphase FIR kernel, written once and compiled once per instruction set.
 *
 * polyphase.c includes this file several times, each time defining
 *   FIR_NAME    the function's name,
 *   FIR_TARGET  a GCC target attribute (or nothing),
 *   FIR_WIDTH   floats per vector register on that target,
 *   FIR_FMA     1 where the target has fused multiply-add.
 * Vectors run across consecutive outputs; every lane, and the scalar tail, sums in the
 * same order (t, then i), so the output does not depend on how input was chunked.
 */

#define FIR_CAT_(a, b) a##b
#define FIR_CAT(a, b) FIR_CAT_(a, b)
#define FIR_VEC FIR_CAT(FIR_NAME, _vector)
#define FIR_LM FIR_CAT(FIR_NAME, _lm)

typedef float FIR_VEC __attribute__((vector_size(FIR_WIDTH * sizeof(float))));

/* One sub-filter's input offset o_ji, as first_block() in polyphase.c, but a
 * compile-time constant here so the loads it selects are shared or dropped. */
#define FIR_OFFSET(j, i, L, M) ((j) * (M) - (i) * (L) < 0 ? 1 : 0)

/* L and M are compile-time constants at every call: the j and i loops unroll, the
 * accumulators live in registers, and for upsampling one load feeds all L phases. */
FIR_TARGET static inline __attribute__((always_inline)) void FIR_LM(
    const float *restrict streams, size_t stride, const float *restrict coeffs, int K, int Q,
    float *restrict planar, const int L, const int M)
{
    enum { VECTORS = 2, BLOCK = VECTORS * FIR_WIDTH };
    int q = 0;
    for (; q + BLOCK <= Q; q += BLOCK) {
        FIR_VEC acc[MAX_UP][MAX_DOWN][VECTORS];
        for (int j = 0; j < L; j++)
            for (int i = 0; i < M; i++)
                for (int v = 0; v < VECTORS; v++)
                    acc[j][i][v] = (FIR_VEC){0};
        for (int t = 0; t < K; t++)
            for (int i = 0; i < M; i++) {
                const float *x = streams + i * stride + q + t;
                FIR_VEC x0[VECTORS], x1[VECTORS]; /* the stream at offset 1 - o: o = 0, o = 1 */
                for (int v = 0; v < VECTORS; v++) {
                    __builtin_memcpy(&x0[v], x + 1 + v * FIR_WIDTH, sizeof(FIR_VEC));
                    __builtin_memcpy(&x1[v], x + v * FIR_WIDTH, sizeof(FIR_VEC));
                }
                for (int j = 0; j < L; j++) {
                    float g = coeffs[(size_t)(j * M + i) * K + t];
                    for (int v = 0; v < VECTORS; v++)
                        acc[j][i][v] += g * (FIR_OFFSET(j, i, L, M) ? x1[v] : x0[v]);
                }
            }
        for (int j = 0; j < L; j++)
            for (int v = 0; v < VECTORS; v++) {
                FIR_VEC sum = acc[j][0][v];
                for (int i = 1; i < M; i++)
                    sum += acc[j][i][v];
                __builtin_memcpy(planar + (size_t)j * CHUNK_BLOCKS + q + v * FIR_WIDTH, &sum,
                                 sizeof sum);
            }
    }
    for (; q < Q; q++)
        for (int j = 0; j < L; j++) {
            float sum = 0.0f;
            for (int i = 0; i < M; i++) {
                const float *x = streams + i * stride + q + 1 - FIR_OFFSET(j, i, L, M);
                const float *g = coeffs + (size_t)(j * M + i) * K;
                float acc = 0.0f;
                /* Explicit fma: GCC would otherwise vectorise the products and add them
                 * unfused, rounding differently from the vector lanes. */
                for (int t = 0; t < K; t++)
                    acc = FIR_FMA ? __builtin_fmaf(g[t], x[t], acc) : acc + g[t] * x[t];
                sum = i == 0 ? acc : sum + acc;
            }
            planar[(size_t)j * CHUNK_BLOCKS + q] = sum;
        }
}

/* Dispatch on the rate pair's (L, M) to a fully specialised kernel. */
FIR_TARGET static void FIR_NAME(const float *streams, size_t stride, const float *coeffs, int L,
                                int M, int K, int Q, float *planar)
{
#define FIR_CASE(l, m)                                                 \
    case (l) * 4 + (m):                                                \
        FIR_LM(streams, stride, coeffs, K, Q, planar, (l), (m));       \
        break;
    switch (L * 4 + M) {
        FIR_CASE(3, 1)
        FIR_CASE(1, 3)
        FIR_CASE(2, 1)
        FIR_CASE(1, 2)
        FIR_CASE(3, 2)
        FIR_CASE(2, 3)
    }
#undef FIR_CASE
}

#undef FIR_OFFSET
#undef FIR_LM
#undef FIR_VEC
#undef FIR_CAT
#undef FIR_CAT_
