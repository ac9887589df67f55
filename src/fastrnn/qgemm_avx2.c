/* int8 kernel for AVX2 without VNNI: vpmaddubsw (unsigned x signed bytes, adjacent pairs
 * summed into int16) then vpmaddwd by ones (pairs of int16 into int32). vpmaddubsw saturates its
 * int16 sums, which the unsigned form a + 128 would reach (2 * 255 * 127 = 64770); the kernel
 * multiplies |a| by w * sign(a) instead (vpsignb), whose pair sums stay within 2 * 127 * 127 =
 * 32258, so every sum is exact (weights are never -128). No 128 * colsum to subtract then.
 * Compiled with -mavx2 -mfma -ffp-contract=off. */
#if defined(__x86_64__) || defined(_M_X64)
#if !defined(__AVX2__)
#error "qgemm_avx2.c must be compiled with -mavx2"
#endif
#include <immintrin.h>
#include <string.h>
#include "qgemm.h"
#define FR_QISA avx2
#include "qquant.inc"

/* MR rows x 8 columns (half a panel). A group of four weight rows of 8 columns is 32 bytes:
 * columns 0-3 in the low half, 4-7 in the high half, each column's four bytes adjacent. Widened, one vpmaddwd
 * against the row's four activations (broadcast) gives (c, k01), (c, k23) pairs. */
static inline __attribute__((always_inline)) void
store8(__m256i acc, int r, int v, const float *s, const fr_qmatrix *w, int c,
       const float *bias, float *out, ptrdiff_t ldo)
{
    const int cv = c + 8 * v;
    const __m256 m = _mm256_mul_ps(_mm256_set1_ps(s[r]), _mm256_loadu_ps(w->scale + cv));
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), m);
    if (bias) f = _mm256_add_ps(_mm256_loadu_ps(bias + cv), f);
    _mm256_storeu_ps(out + r * ldo + 8 * v, f);
}

/* Row r's four activations of group k4 in every 32-bit lane, signed (a = stored byte ^ 0x80),
 * then their products with both weight vectors of the panel added into acc##r##0, acc##r##1. */
#define FR_Q2_ROW(r)                                                                         \
    if (MR > r) {                                                                            \
        int quad;                                                                            \
        memcpy(&quad, a + r * lda + 4 * k4, 4);                                              \
        const __m256i as = _mm256_xor_si256(_mm256_set1_epi32(quad), flip);                  \
        const __m256i aa = _mm256_abs_epi8(as);                                              \
        acc##r##0 = _mm256_add_epi32(acc##r##0, _mm256_madd_epi16(                           \
            _mm256_maddubs_epi16(aa, _mm256_sign_epi8(w0, as)), ones));                      \
        if (NV > 1)                                                                          \
            acc##r##1 = _mm256_add_epi32(acc##r##1, _mm256_madd_epi16(                       \
                _mm256_maddubs_epi16(aa, _mm256_sign_epi8(w1, as)), ones));                  \
    }

/* MR rows x NV vectors of 8 columns (NV = 2: a whole panel). A group of four weight rows of 8
 * columns is 32 bytes, each column's four bytes adjacent: vpmaddubsw then vpmaddwd leave one
 * int32 per column, in order. */
static inline __attribute__((always_inline)) void
tile(const int MR, const int NV, int K4, const unsigned char *a, ptrdiff_t lda, const float *s,
     const fr_qmatrix *w, int c, const float *bias, float *out, ptrdiff_t ldo)
{
    __m256i acc00 = _mm256_setzero_si256(), acc01 = acc00, acc10 = acc00, acc11 = acc00;
    __m256i acc20 = acc00, acc21 = acc00, acc30 = acc00, acc31 = acc00;
    const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8((char)0x80);
    const signed char *q = fr_qpanel(w, c) + (c % FR_QPANEL) * 4;
    for (int k4 = 0; k4 < K4; k4++, q += 4 * FR_QPANEL) {
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)q);
        const __m256i w1 = NV > 1 ? _mm256_loadu_si256((const __m256i *)(q + 32)) : w0;
        FR_Q2_ROW(0)
        FR_Q2_ROW(1)
        FR_Q2_ROW(2)
        FR_Q2_ROW(3)
    }
    store8(acc00, 0, 0, s, w, c, bias, out, ldo);
    if (NV > 1) store8(acc01, 0, 1, s, w, c, bias, out, ldo);
    if (MR > 1) {
        store8(acc10, 1, 0, s, w, c, bias, out, ldo);
        if (NV > 1) store8(acc11, 1, 1, s, w, c, bias, out, ldo);
    }
    if (MR > 2) {
        store8(acc20, 2, 0, s, w, c, bias, out, ldo);
        if (NV > 1) store8(acc21, 2, 1, s, w, c, bias, out, ldo);
    }
    if (MR > 3) {
        store8(acc30, 3, 0, s, w, c, bias, out, ldo);
        if (NV > 1) store8(acc31, 3, 1, s, w, c, bias, out, ldo);
    }
}

#define FR_Q2_ROWS(MR)                                                                   \
    for (; u + 16 <= n; u += 16)                                                         \
        tile(MR, 2, K4, a, lda, s, w, c0 + u, bias, out + u, ldo);                       \
    if (u < n) tile(MR, 1, K4, a, lda, s, w, c0 + u, bias, out + u, ldo);

void fr_qgemm_int8_avx2(int M, int n, const unsigned char *a, ptrdiff_t lda, const float *s,
                        const fr_qmatrix *w, int c0, const float *bias, float *out,
                        ptrdiff_t ldo)
{
    const int K4 = fr_qk4(w->rows);
    for (int r = 0; r < M; r += 4, a += 4 * lda, s += 4, out += 4 * ldo) {
        int u = 0;
        switch (M - r) {
        case 1: FR_Q2_ROWS(1) break;
        case 2: FR_Q2_ROWS(2) break;
        case 3: FR_Q2_ROWS(3) break;
        default: FR_Q2_ROWS(4) break;
        }
    }
}
#endif
