/* int8 kernel for AVX-VNNI (VEX-encoded vpdpbusd on 256-bit vectors: CPUs that have it without
 * AVX-512 VNNI, e.g. Intel's hybrid client cores). Compiled with -mavx2 -mfma -mavxvnni
 * -ffp-contract=off; called only when CPUID says yes. Same integers as every int8 variant. */
#if defined(__x86_64__) || defined(_M_X64)
#if !defined(__AVXVNNI__)
#error "qgemm_avxvnni.c must be compiled with -mavx2 -mavxvnni"
#endif
#include <immintrin.h>
#include <string.h>
#include "qgemm.h"
#define FR_QISA avxvnni
#include "qquant.inc"

/* acc += a (unsigned bytes) . w (signed bytes), VEX-encoded, in place (inline assembly: gcc
 * copies accumulators around the intrinsic). */
#define FR_VDP(acc, a, w) __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(a), "x"(w))
#define FR_V_DP(r, v) if (MR > r && NV > v) FR_VDP(acc##r##v, a##r, w##v);
#define FR_V_DP_ROW(r) FR_V_DP(r, 0) FR_V_DP(r, 1) FR_V_DP(r, 2) FR_V_DP(r, 3)
#define FR_V_A(r)                                                                            \
    int p##r;                                                                                \
    memcpy(&p##r, a + r * lda + 4 * k4, 4);                                                  \
    const __m256i a##r = _mm256_set1_epi32(p##r);

static inline __attribute__((always_inline)) void
store(__m256i acc, int r, int v, const float *s, const fr_qmatrix *w, int c, const float *bias,
      float *out, ptrdiff_t ldo)
{
    const int cv = c + 8 * v;
    const __m256i off = _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(w->colsum + cv)), 7);
    const __m256 m = _mm256_mul_ps(_mm256_set1_ps(s[r]), _mm256_loadu_ps(w->scale + cv));
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc, off)), m);
    if (bias) f = _mm256_add_ps(_mm256_loadu_ps(bias + cv), f);
    _mm256_storeu_ps(out + r * ldo + 8 * v, f);
}
#define FR_V_ST(r, v) if (MR > r && NV > v) store(acc##r##v, r, v, s, w, c, bias, out, ldo);

/* MR rows x NV vectors of 8 columns (NV = 2: one panel, 4: two panels). */
static inline __attribute__((always_inline)) void
tile(const int MR, const int NV, int K4, const unsigned char *a, ptrdiff_t lda, const float *s,
     const fr_qmatrix *w, int c, const float *bias, float *out, ptrdiff_t ldo)
{
    __m256i acc00 = _mm256_setzero_si256(), acc01 = acc00, acc02 = acc00, acc03 = acc00;
    __m256i acc10 = acc00, acc11 = acc00, acc12 = acc00, acc13 = acc00;
    __m256i acc20 = acc00, acc21 = acc00, acc22 = acc00, acc23 = acc00;
    const signed char *q = fr_qpanel(w, c) + (c % FR_QPANEL) * 4;
    const ptrdiff_t ps = (ptrdiff_t)K4 * 64;  /* bytes between panels */
    for (int k4 = 0; k4 < K4; k4++, q += 64) {
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)q);
        const __m256i w1 = NV > 1 ? _mm256_loadu_si256((const __m256i *)(q + 32)) : w0;
        const __m256i w2 = NV > 2 ? _mm256_loadu_si256((const __m256i *)(q + ps)) : w0;
        const __m256i w3 = NV > 3 ? _mm256_loadu_si256((const __m256i *)(q + ps + 32)) : w0;
        FR_V_A(0)
        FR_V_DP_ROW(0)
        if (MR > 1) { FR_V_A(1) FR_V_DP_ROW(1) }
        if (MR > 2) { FR_V_A(2) FR_V_DP_ROW(2) }
    }
    FR_V_ST(0, 0) FR_V_ST(0, 1) FR_V_ST(0, 2) FR_V_ST(0, 3)
    FR_V_ST(1, 0) FR_V_ST(1, 1) FR_V_ST(1, 2) FR_V_ST(1, 3)
    FR_V_ST(2, 0) FR_V_ST(2, 1) FR_V_ST(2, 2) FR_V_ST(2, 3)
}

/* Column blocks outer, row tiles of three inner (12 accumulators, 4 weight vectors and a
 * broadcast fill the 16 registers): a block's weights are reused from L1 by every row tile. */
#define FR_V_TILE(MR, NV) tile(MR, NV, K4, a + r * lda, lda, s + r, w, c0 + u, bias,            \
                               out + r * ldo + u, ldo)
#define FR_V_MR(NV)                                                                          \
    switch (M - r < 3 ? M - r : 3) {                                                         \
    case 1: FR_V_TILE(1, NV); break;                                                         \
    case 2: FR_V_TILE(2, NV); break;                                                         \
    default: FR_V_TILE(3, NV); break;                                                        \
    }

void fr_qgemm_int8_avxvnni(int M, int n, const unsigned char *a, ptrdiff_t lda, const float *s,
                           const fr_qmatrix *w, int c0, const float *bias, float *out,
                           ptrdiff_t ldo)
{
    const int K4 = fr_qk4(w->rows);
    for (int u = 0; u < n;) {
        const int nv = n - u >= 32 ? 4 : 2;
        for (int r = 0; r < M; r += 3) {
            if (nv == 4) { FR_V_MR(4) } else { FR_V_MR(2) }
        }
        u += 8 * nv;
    }
}
#endif
