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

/* MR rows x NV vectors of 16 columns: MR * NV accumulators, NV weight loads and MR byte-quad
 * broadcasts per group of four rows of the weights. */
static inline __attribute__((always_inline)) void
tile(const int MR, const int NV, int K4, const unsigned char *a, ptrdiff_t lda, const float *s,
     const fr_qmatrix *w, int c, const float *bias, float *out, ptrdiff_t ldo)
{
    __m512i acc[4][4];
    const signed char *q = fr_qpanel(w, c);  /* NV panels, K4 * 64 bytes apart */
    const ptrdiff_t ps = (ptrdiff_t)K4 * 64;
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_si512();
    for (int k4 = 0; k4 < K4; k4++, q += 64) {
        __m512i wv[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) wv[v] = _mm512_loadu_si512(q + v * ps);
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++) {
            int quad;
            memcpy(&quad, a + r * lda + 4 * k4, 4);
            const __m512i av = _mm512_set1_epi32(quad);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, wv[v]);
        }
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
        const int cv = c + 16 * v;
        const __m512i off = _mm512_slli_epi32(_mm512_loadu_si512(w->colsum + cv), 7);
        const __m512 sc = _mm512_loadu_ps(w->scale + cv);
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++) {
            const __m512 m = _mm512_mul_ps(_mm512_set1_ps(s[r]), sc);
            __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][v], off)), m);
            if (bias) f = _mm512_add_ps(_mm512_loadu_ps(bias + cv), f);
            _mm512_storeu_ps(out + r * ldo + 16 * v, f);
        }
    }
}

#define FR_Q_ROWS(MR)                                                                   \
    for (; u + 64 <= n; u += 64)                                                        \
        tile(MR, 4, K4, a, lda, s, w, c0 + u, bias, out + u, ldo);                      \
    if (n - u == 48) tile(MR, 3, K4, a, lda, s, w, c0 + u, bias, out + u, ldo);         \
    else if (n - u == 32) tile(MR, 2, K4, a, lda, s, w, c0 + u, bias, out + u, ldo);    \
    else if (n - u == 16) tile(MR, 1, K4, a, lda, s, w, c0 + u, bias, out + u, ldo);

void fr_qgemm_int8_avx512vnni(int M, int n, const unsigned char *a, ptrdiff_t lda,
                              const float *s, const fr_qmatrix *w, int c0, const float *bias,
                              float *out, ptrdiff_t ldo)
{
    const int K4 = fr_qk4(w->rows);
    for (int r = 0; r < M; r += 4, a += 4 * lda, s += 4, out += 4 * ldo) {
        int u = 0;
        switch (M - r) {
        case 1: FR_Q_ROWS(1) break;
        case 2: FR_Q_ROWS(2) break;
        case 3: FR_Q_ROWS(3) break;
        default: FR_Q_ROWS(4) break;
        }
    }
}
#endif
