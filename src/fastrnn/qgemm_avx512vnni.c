/* int8 kernel for AVX-512 VNNI (vpdpbusd: 64 unsigned x signed byte products summed into 16
 * int32 lanes). Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni -ffp-contract=off;
 * called only when CPUID and the OS say yes. */
#if defined(__x86_64__) || defined(_M_X64)
#if !defined(__AVX512VNNI__) || !defined(__AVX512BW__)
#error "qgemm_avx512vnni.c must be compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni"
#endif
#include <immintrin.h>
#include <string.h>
#include "qgemm.h"
#define FR_QISA avx512vnni
#include "qquant.inc"

/* The dequantizing store of one accumulator: row r, vector v of the tile at column c. */
static inline __attribute__((always_inline)) void
store(__m512i acc, int r, int v, const float *s, const fr_qmatrix *w, int c, const float *bias,
      float *out, ptrdiff_t ldo)
{
    const int cv = c + 16 * v;
    const __m512i off = _mm512_slli_epi32(_mm512_loadu_si512(w->colsum + cv), 7);
    const __m512 m = _mm512_mul_ps(_mm512_set1_ps(s[r]), _mm512_loadu_ps(w->scale + cv));
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc, off)), m);
    if (bias) f = _mm512_add_ps(_mm512_loadu_ps(bias + cv), f);
    _mm512_storeu_ps(out + r * ldo + 16 * v, f);
}

/* MR rows x NV vectors of 16 columns: MR * NV accumulators, NV weight loads and MR byte-quad
 * broadcasts per group of four rows of the weights. Each accumulator is a variable of its
 * own. */
#define FR_Q_ACC(r, v) acc##r##v
/* acc += a (unsigned bytes) . w (signed bytes), in place. Inline assembly because gcc 12
 * copied every accumulator through another register at each iteration around the intrinsic
 * (twice the instructions of the loop). */
#define FR_DPBUSD(acc, a, w) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(w))
#define FR_Q_DP(r, v)                                                                        \
    if (MR > r && NV > v) FR_DPBUSD(FR_Q_ACC(r, v), a##r, w##v);
#define FR_Q_DP_ROW(r) FR_Q_DP(r, 0) FR_Q_DP(r, 1) FR_Q_DP(r, 2) FR_Q_DP(r, 3)
#define FR_Q_ST(r, v)                                                                        \
    if (MR > r && NV > v) store(FR_Q_ACC(r, v), r, v, s, w, c, bias, out, ldo);
static inline __attribute__((always_inline)) void
tile(const int MR, const int NV, int K4, const unsigned char *a, ptrdiff_t lda, const float *s,
     const fr_qmatrix *w, int c, const float *bias, float *out, ptrdiff_t ldo)
{
    __m512i acc00 = _mm512_setzero_si512(), acc01 = acc00, acc02 = acc00, acc03 = acc00;
    __m512i acc10 = acc00, acc11 = acc00, acc12 = acc00, acc13 = acc00;
    __m512i acc20 = acc00, acc21 = acc00, acc22 = acc00, acc23 = acc00;
    __m512i acc30 = acc00, acc31 = acc00, acc32 = acc00, acc33 = acc00;
    const signed char *q = fr_qpanel(w, c);  /* NV panels, K4 * 64 bytes apart */
    const ptrdiff_t ps = (ptrdiff_t)K4 * 64;
    const int *a0p = (const int *)(const void *)a;
    for (int k4 = 0; k4 < K4; k4++, q += 64) {
        const __m512i w0 = _mm512_loadu_si512(q);
        const __m512i w1 = NV > 1 ? _mm512_loadu_si512(q + ps) : w0;
        const __m512i w2 = NV > 2 ? _mm512_loadu_si512(q + 2 * ps) : w0;
        const __m512i w3 = NV > 3 ? _mm512_loadu_si512(q + 3 * ps) : w0;
        int quad;
        memcpy(&quad, (const unsigned char *)a0p + 4 * k4, 4);
        const __m512i a0 = _mm512_set1_epi32(quad);
        FR_Q_DP_ROW(0)
        if (MR > 1) {
            memcpy(&quad, a + lda + 4 * k4, 4);
            const __m512i a1 = _mm512_set1_epi32(quad);
            FR_Q_DP_ROW(1)
        }
        if (MR > 2) {
            memcpy(&quad, a + 2 * lda + 4 * k4, 4);
            const __m512i a2 = _mm512_set1_epi32(quad);
            FR_Q_DP_ROW(2)
        }
        if (MR > 3) {
            memcpy(&quad, a + 3 * lda + 4 * k4, 4);
            const __m512i a3 = _mm512_set1_epi32(quad);
            FR_Q_DP_ROW(3)
        }
    }
    FR_Q_ST(0, 0) FR_Q_ST(0, 1) FR_Q_ST(0, 2) FR_Q_ST(0, 3)
    FR_Q_ST(1, 0) FR_Q_ST(1, 1) FR_Q_ST(1, 2) FR_Q_ST(1, 3)
    FR_Q_ST(2, 0) FR_Q_ST(2, 1) FR_Q_ST(2, 2) FR_Q_ST(2, 3)
    FR_Q_ST(3, 0) FR_Q_ST(3, 1) FR_Q_ST(3, 2) FR_Q_ST(3, 3)
}

/* Column blocks outer, row tiles inner: a block's weights (K * 64 bytes) are read from L2 / L3
 * once and reused from L1 by every row tile of the call. */
#define FR_Q_TILE(MR, NV) tile(MR, NV, K4, a + r * lda, lda, s + r, w, c0 + u, bias,            \
                               out + r * ldo + u, ldo)
#define FR_Q_MR(NV)                                                                          \
    switch (M - r < 4 ? M - r : 4) {                                                         \
    case 1: FR_Q_TILE(1, NV); break;                                                         \
    case 2: FR_Q_TILE(2, NV); break;                                                         \
    case 3: FR_Q_TILE(3, NV); break;                                                         \
    default: FR_Q_TILE(4, NV); break;                                                        \
    }

void fr_qgemm_int8_avx512vnni(int M, int n, const unsigned char *a, ptrdiff_t lda,
                              const float *s, const fr_qmatrix *w, int c0, const float *bias,
                              float *out, ptrdiff_t ldo)
{
    const int K4 = fr_qk4(w->rows);
    for (int u = 0; u < n;) {
        const int nv = n - u >= 64 ? 4 : (n - u) / 16;
        for (int r = 0; r < M; r += 4) {
            switch (nv) {
            case 1: FR_Q_MR(1) break;
            case 2: FR_Q_MR(2) break;
            case 3: FR_Q_MR(3) break;
            default: FR_Q_MR(4) break;
            }
        }
        u += 16 * nv;
    }
}
#endif
