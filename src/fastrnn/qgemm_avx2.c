/* int8 kernel for AVX2 without VNNI. Weights are widened to int16 and multiplied with
 * vpmaddwd (pairs of int16 products summed into int32), which cannot saturate: |a + 128| <=
 * 255 and |q| <= 127 give pair sums <= 64770. (vpmaddubsw would be faster but saturates its
 * int16 pair sums at 255 * 127 * 2.) Compiled with -mavx2 -mfma -ffp-contract=off. */
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
tile8(const int MR, int K4, const unsigned char *a, ptrdiff_t lda, const float *s,
      const fr_qmatrix *w, int c, const float *bias, float *out, ptrdiff_t ldo)
{
    __m256i lo[4], hi[4];
    const signed char *q = fr_qpanel(w, c) + (c % FR_QPANEL) * 4;
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++) lo[r] = hi[r] = _mm256_setzero_si256();
    for (int k4 = 0; k4 < K4; k4++, q += 4 * FR_QPANEL) {
        const __m256i w8 = _mm256_loadu_si256((const __m256i *)q);
        const __m256i wlo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(w8));
        const __m256i whi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(w8, 1));
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++) {
            int quad;
            memcpy(&quad, a + r * lda + 4 * k4, 4);
            const __m256i av = _mm256_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128(quad)));
            lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(wlo, av));
            hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(whi, av));
        }
    }
    const __m256i off = _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(w->colsum + c)), 7);
    const __m256 sc = _mm256_loadu_ps(w->scale + c);
#pragma GCC unroll 4
    for (int r = 0; r < MR; r++) {
        /* hadd: [c0 c1 c4 c5 | c2 c3 c6 c7]; the permute puts the columns in order. */
        __m256i acc = _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo[r], hi[r]), 0xD8);
        acc = _mm256_sub_epi32(acc, off);
        const __m256 m = _mm256_mul_ps(_mm256_set1_ps(s[r]), sc);
        __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), m);
        if (bias) f = _mm256_add_ps(_mm256_loadu_ps(bias + c), f);
        _mm256_storeu_ps(out + r * ldo, f);
    }
}

void fr_qgemm_int8_avx2(int M, int n, const unsigned char *a, ptrdiff_t lda, const float *s,
                        const fr_qmatrix *w, int c0, const float *bias, float *out,
                        ptrdiff_t ldo)
{
    const int K4 = fr_qk4(w->rows);
    for (int r = 0; r < M; r += 4, a += 4 * lda, s += 4, out += 4 * ldo)
        for (int u = 0; u < n; u += 8) {
            switch (M - r) {
            case 1: tile8(1, K4, a, lda, s, w, c0 + u, bias, out + u, ldo); break;
            case 2: tile8(2, K4, a, lda, s, w, c0 + u, bias, out + u, ldo); break;
            case 3: tile8(3, K4, a, lda, s, w, c0 + u, bias, out + u, ldo); break;
            default: tile8(4, K4, a, lda, s, w, c0 + u, bias, out + u, ldo); break;
            }
        }
}
#endif
