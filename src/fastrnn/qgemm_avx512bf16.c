/* bf16 kernel for AVX-512 BF16 (vdpbf16ps: per float32 lane, acc += the odd then the even
 * product of a pair of bfloat16). Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512bf16
 * -ffp-contract=off; called only when CPUID and the OS say yes. */
#if defined(__x86_64__) || defined(_M_X64)
#if !defined(__AVX512BF16__)
#error "qgemm_avx512bf16.c must be compiled with -mavx512f -mavx512bw -mavx512vl -mavx512bf16"
#endif
#include <immintrin.h>
#include <string.h>
#include "qgemm.h"
#define FR_QISA avx512bf16
#include "qquant.inc"

/* acc += a . w in place (inline assembly: gcc copies accumulators around the intrinsic). */
#define FR_DPBF16(acc, a, w) __asm__("vdpbf16ps %2, %1, %0" : "+v"(acc) : "v"(a), "v"(w))
#define FR_B_DP(r, v) if (MR > r && NV > v) FR_DPBF16(acc##r##v, a##r, w##v);
#define FR_B_DP_ROW(r) FR_B_DP(r, 0) FR_B_DP(r, 1) FR_B_DP(r, 2) FR_B_DP(r, 3)
#define FR_B_ST(r, v) if (MR > r && NV > v) _mm512_storeu_ps(out + r * ldo + 16 * v, acc##r##v);
#define FR_B_A(r)                                                                            \
    int p##r;                                                                                \
    memcpy(&p##r, a + r * lda + 4 * k2, 4);                                                  \
    const __m512 a##r = _mm512_castsi512_ps(_mm512_set1_epi32(p##r));

/* MR rows x NV vectors of 16 columns: one 64-byte panel row pair per vector and step. */
static inline __attribute__((always_inline)) void
tile(const int MR, const int NV, int K2, const unsigned char *a, ptrdiff_t lda,
     const fr_qmatrix *w, int c, const float *bias, float *out, ptrdiff_t ldo)
{
    const __m512 i0 = bias ? _mm512_loadu_ps(bias + c) : _mm512_setzero_ps();
    const __m512 i1 = bias && NV > 1 ? _mm512_loadu_ps(bias + c + 16) : _mm512_setzero_ps();
    const __m512 i2 = bias && NV > 2 ? _mm512_loadu_ps(bias + c + 32) : _mm512_setzero_ps();
    const __m512 i3 = bias && NV > 3 ? _mm512_loadu_ps(bias + c + 48) : _mm512_setzero_ps();
    __m512 acc00 = i0, acc01 = i1, acc02 = i2, acc03 = i3;
    __m512 acc10 = i0, acc11 = i1, acc12 = i2, acc13 = i3;
    __m512 acc20 = i0, acc21 = i1, acc22 = i2, acc23 = i3;
    __m512 acc30 = i0, acc31 = i1, acc32 = i2, acc33 = i3;
    const unsigned short *q = fr_bf16_panel(w, c);
    const ptrdiff_t ps = (ptrdiff_t)K2 * 2 * FR_QPANEL;  /* units between panels */
    for (int k2 = 0; k2 < K2; k2++, q += 2 * FR_QPANEL) {
        const __m512 w0 = _mm512_loadu_ps((const float *)(const void *)q);
        const __m512 w1 = NV > 1 ? _mm512_loadu_ps((const float *)(const void *)(q + ps)) : w0;
        const __m512 w2 = NV > 2 ? _mm512_loadu_ps((const float *)(const void *)(q + 2 * ps)) : w0;
        const __m512 w3 = NV > 3 ? _mm512_loadu_ps((const float *)(const void *)(q + 3 * ps)) : w0;
        FR_B_A(0)
        FR_B_DP_ROW(0)
        if (MR > 1) { FR_B_A(1) FR_B_DP_ROW(1) }
        if (MR > 2) { FR_B_A(2) FR_B_DP_ROW(2) }
        if (MR > 3) { FR_B_A(3) FR_B_DP_ROW(3) }
    }
    FR_B_ST(0, 0) FR_B_ST(0, 1) FR_B_ST(0, 2) FR_B_ST(0, 3)
    FR_B_ST(1, 0) FR_B_ST(1, 1) FR_B_ST(1, 2) FR_B_ST(1, 3)
    FR_B_ST(2, 0) FR_B_ST(2, 1) FR_B_ST(2, 2) FR_B_ST(2, 3)
    FR_B_ST(3, 0) FR_B_ST(3, 1) FR_B_ST(3, 2) FR_B_ST(3, 3)
}

/* Column blocks outer, row tiles inner: a block's weights are reused from L1. */
#define FR_B_TILE(MR, NV) tile(MR, NV, K2, a + r * lda, lda, w, c0 + u, bias, out + r * ldo + u, ldo)
#define FR_B_MR(NV)                                                                          \
    switch (M - r < 4 ? M - r : 4) {                                                         \
    case 1: FR_B_TILE(1, NV); break;                                                         \
    case 2: FR_B_TILE(2, NV); break;                                                         \
    case 3: FR_B_TILE(3, NV); break;                                                         \
    default: FR_B_TILE(4, NV); break;                                                        \
    }

void fr_qgemm_bf16_avx512bf16(int M, int n, const unsigned char *a, ptrdiff_t lda,
                              const float *s, const fr_qmatrix *w, int c0, const float *bias,
                              float *out, ptrdiff_t ldo)
{
    (void)s;
    const int K2 = fr_qk2(w->rows);
    for (int u = 0; u < n;) {
        const int nv = n - u >= 64 ? 4 : (n - u) / 16;
        for (int r = 0; r < M; r += 4) {
            switch (nv) {
            case 1: FR_B_MR(1) break;
            case 2: FR_B_MR(2) break;
            case 3: FR_B_MR(3) break;
            default: FR_B_MR(4) break;
            }
        }
        u += 16 * nv;
    }
}
#endif
