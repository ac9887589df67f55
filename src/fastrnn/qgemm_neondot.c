/* int8 kernel for AArch64 with the dot-product instructions (ARMv8.2 "dotprod": sdot, four
 * signed byte products summed into each int32 lane). Compiled with -march=armv8.2-a+dotprod
 * -ffp-contract=off; chosen at run time only where the CPU has them (fastrnn.c: HWCAP_ASIMDDP).
 *
 * A panel of the int8 layout (qgemm.h) is 16 columns x 4 rows per group of four rows: four
 * 16-byte vectors, each of them what sdot multiplies by four activation bytes. Activations are
 * stored as a + 128 (qgemm.h); flipping the top bit of each byte gives a back as a signed byte
 * in [-127, 127], so the sums need no column-sum correction and are the baseline's integers.
 * The float operations after them are the baseline's, in its order. Activations are quantized
 * by the baseline's quantizer (plain NEON code already). */
#if defined(__aarch64__)
#if !defined(__ARM_FEATURE_DOTPROD)
#error "qgemm_neondot.c must be compiled with -march=armv8.2-a+dotprod"
#endif
#include <arm_neon.h>
#include <string.h>
#include "qgemm.h"

/* Rows per tile: 4 rows x 4 vectors = 16 accumulators, with the panel's 4 vectors and the
 * rows' broadcasts well inside the 32 registers. */
#define FR_QDOT_MR 4

static inline __attribute__((always_inline)) void
tile(const int MR, int K4, const unsigned char *a, ptrdiff_t lda, const float *s,
     const fr_qmatrix *w, int c, const float *bias, float *out, ptrdiff_t ldo)
{
    int32x4_t acc[FR_QDOT_MR][4];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < 4; v++) acc[r][v] = vdupq_n_s32(0);
    const signed char *q = fr_qpanel(w, c);
    for (int k4 = 0; k4 < K4; k4++, q += 4 * FR_QPANEL) {
        const int8x16_t w0 = vld1q_s8(q), w1 = vld1q_s8(q + 16), w2 = vld1q_s8(q + 32),
                        w3 = vld1q_s8(q + 48);
        for (int r = 0; r < MR; r++) {
            uint32_t quad;
            memcpy(&quad, a + (ptrdiff_t)r * lda + 4 * k4, 4);
            const int8x16_t ar = vreinterpretq_s8_u32(vdupq_n_u32(quad ^ 0x80808080u));
            acc[r][0] = vdotq_s32(acc[r][0], w0, ar);
            acc[r][1] = vdotq_s32(acc[r][1], w1, ar);
            acc[r][2] = vdotq_s32(acc[r][2], w2, ar);
            acc[r][3] = vdotq_s32(acc[r][3], w3, ar);
        }
    }
    for (int r = 0; r < MR; r++) {
        int sum[FR_QPANEL];
        for (int v = 0; v < 4; v++) vst1q_s32(sum + 4 * v, acc[r][v]);
        for (int u = 0; u < FR_QPANEL; u++) {
            const float m = s[r] * w->scale[c + u];
            const float f = (float)sum[u] * m;
            out[(ptrdiff_t)r * ldo + u] = bias ? bias[c + u] + f : f;
        }
    }
}

void fr_qgemm_int8_neondot(int M, int n, const unsigned char *a, ptrdiff_t lda, const float *s,
                           const fr_qmatrix *w, int c0, const float *bias, float *out,
                           ptrdiff_t ldo)
{
    const int K4 = fr_qk4(w->rows);
    int r = 0;
    for (; M - r >= FR_QDOT_MR; r += FR_QDOT_MR)
        for (int u = 0; u < n; u += FR_QPANEL)
            tile(FR_QDOT_MR, K4, a + (ptrdiff_t)r * lda, lda, s + r, w, c0 + u, bias,
                 out + (ptrdiff_t)r * ldo + u, ldo);
    for (; r < M; r++)
        for (int u = 0; u < n; u += FR_QPANEL)
            tile(1, K4, a + (ptrdiff_t)r * lda, lda, s + r, w, c0 + u, bias,
                 out + (ptrdiff_t)r * ldo + u, ldo);
}
#endif
