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

/* Column blocks (a panel) outer, row tiles inner: a panel's weights are reused from L1. */
#define FR_Q2_MR(NV)                                                                         \
    switch (M - r < 4 ? M - r : 4) {                                                         \
    case 1: tile(1, NV, K4, a + r * lda, lda, s + r, w, c0 + u, bias, out + r * ldo + u, ldo); break; \
    case 2: tile(2, NV, K4, a + r * lda, lda, s + r, w, c0 + u, bias, out + r * ldo + u, ldo); break; \
    case 3: tile(3, NV, K4, a + r * lda, lda, s + r, w, c0 + u, bias, out + r * ldo + u, ldo); break; \
    default: tile(4, NV, K4, a + r * lda, lda, s + r, w, c0 + u, bias, out + r * ldo + u, ldo); break; \
    }

void fr_qgemm_int8_avx2(int M, int n, const unsigned char *a, ptrdiff_t lda, const float *s,
                        const fr_qmatrix *w, int c0, const float *bias, float *out,
                        ptrdiff_t ldo)
{
    const int K4 = fr_qk4(w->rows);
    for (int u = 0; u < n;) {
        const int nv = n - u >= 16 ? 2 : 1;
        for (int r = 0; r < M; r += 4) {
            if (nv == 2) { FR_Q2_MR(2) } else { FR_Q2_MR(1) }
        }
        u += 8 * nv;
    }
}

/* ---- bf16 without AVX-512 BF16. The activation rows hold the float32 values of their
 * bfloat16 roundings (this variant's "quantizer", fr_round_rows_bf16_f32_avx2), so a row's pair
 * is two broadcasts; each weight pair is split by a mask and a shift. The odd then the even
 * product are added with fused multiply-adds: the products are exact, so this equals the
 * portable kernel's multiply-then-add except where a product falls below FLT_MIN (docs). ---- */
#define FR_B2_ROW(r)                                                                         \
    if (MR > r) {                                                                            \
        const __m256 ao = _mm256_broadcast_ss(ar + r * ldf + 2 * k2 + 1);                    \
        const __m256 ae = _mm256_broadcast_ss(ar + r * ldf + 2 * k2);                        \
        acc##r##0 = _mm256_fmadd_ps(ao, wo0, acc##r##0);                                      \
        acc##r##0 = _mm256_fmadd_ps(ae, we0, acc##r##0);                                      \
        if (NV > 1) {                                                                        \
            acc##r##1 = _mm256_fmadd_ps(ao, wo1, acc##r##1);                                  \
            acc##r##1 = _mm256_fmadd_ps(ae, we1, acc##r##1);                                  \
        }                                                                                    \
    }

/* MR rows x NV vectors of 8 columns (NV = 2: a whole panel). */
static inline __attribute__((always_inline)) void
tile_bf16(const int MR, const int NV, int K2, const float *ar, ptrdiff_t ldf,
          const fr_qmatrix *w, int c, const float *bias, float *out, ptrdiff_t ldo)
{
    const __m256 i0 = bias ? _mm256_loadu_ps(bias + c) : _mm256_setzero_ps();
    const __m256 i1 = bias && NV > 1 ? _mm256_loadu_ps(bias + c + 8) : _mm256_setzero_ps();
    __m256 acc00 = i0, acc01 = i1, acc10 = i0, acc11 = i1;
    __m256 acc20 = i0, acc21 = i1, acc30 = i0, acc31 = i1;
    const __m256i hi16 = _mm256_set1_epi32((int)0xffff0000u);
    const unsigned short *q = fr_bf16_panel(w, c) + (c % FR_QPANEL) * 2;
    for (int k2 = 0; k2 < K2; k2++, q += 2 * FR_QPANEL) {
        const __m256i wp0 = _mm256_loadu_si256((const __m256i *)(const void *)q);
        const __m256 wo0 = _mm256_castsi256_ps(_mm256_and_si256(wp0, hi16));
        const __m256 we0 = _mm256_castsi256_ps(_mm256_slli_epi32(wp0, 16));
        __m256 wo1 = wo0, we1 = we0;
        if (NV > 1) {
            const __m256i wp1 = _mm256_loadu_si256((const __m256i *)(const void *)(q + 16));
            wo1 = _mm256_castsi256_ps(_mm256_and_si256(wp1, hi16));
            we1 = _mm256_castsi256_ps(_mm256_slli_epi32(wp1, 16));
        }
        FR_B2_ROW(0)
        FR_B2_ROW(1)
        FR_B2_ROW(2)
        FR_B2_ROW(3)
    }
    _mm256_storeu_ps(out, acc00);
    if (NV > 1) _mm256_storeu_ps(out + 8, acc01);
    if (MR > 1) { _mm256_storeu_ps(out + ldo, acc10); if (NV > 1) _mm256_storeu_ps(out + ldo + 8, acc11); }
    if (MR > 2) { _mm256_storeu_ps(out + 2 * ldo, acc20); if (NV > 1) _mm256_storeu_ps(out + 2 * ldo + 8, acc21); }
    if (MR > 3) { _mm256_storeu_ps(out + 3 * ldo, acc30); if (NV > 1) _mm256_storeu_ps(out + 3 * ldo + 8, acc31); }
}

#define FR_B2_MR(NV)                                                                         \
    switch (M - r < 4 ? M - r : 4) {                                                         \
    case 1: tile_bf16(1, NV, K2, ar + r * ldf, ldf, w, c0 + u, bias, out + r * ldo + u, ldo); break; \
    case 2: tile_bf16(2, NV, K2, ar + r * ldf, ldf, w, c0 + u, bias, out + r * ldo + u, ldo); break; \
    case 3: tile_bf16(3, NV, K2, ar + r * ldf, ldf, w, c0 + u, bias, out + r * ldo + u, ldo); break; \
    default: tile_bf16(4, NV, K2, ar + r * ldf, ldf, w, c0 + u, bias, out + r * ldo + u, ldo); break; \
    }

void fr_qgemm_bf16_avx2(int M, int n, const unsigned char *a, ptrdiff_t lda, const float *s,
                        const fr_qmatrix *w, int c0, const float *bias, float *out,
                        ptrdiff_t ldo)
{
    (void)s;
    const int K2 = fr_qk2(w->rows);
    const ptrdiff_t ldf = lda / 4;  /* rows of floats */
    const float *ar = (const float *)(const void *)a;
    for (int u = 0; u < n;) {  /* column blocks outer, row tiles inner (weights reused) */
        const int nv = n - u >= 16 ? 2 : 1;
        for (int r = 0; r < M; r += 4) {
            if (nv == 2) { FR_B2_MR(2) } else { FR_B2_MR(1) }
        }
        u += 8 * nv;
    }
}

/* This variant's activation rows: the float32 values of the bfloat16 roundings (K padded to
 * even with zeros). */
void fr_round_rows_bf16_f32_avx2(int M, int K, const float *x, ptrdiff_t ldx, unsigned char *a,
                                 ptrdiff_t lda, float *s)
{
    (void)s;
    for (int r = 0; r < M; r++) {
        const float *xr = x + (ptrdiff_t)r * ldx;
        float *ar = (float *)(void *)(a + (ptrdiff_t)r * lda);  /* the kernel reads floats */
        for (int k = 0; k < K; k++) {
            const uint32_t bits = (uint32_t)fr_bf16_bits(xr[k]) << 16;
            memcpy(ar + k, &bits, 4);
        }
        if (K % 2) ar[K] = 0.0f;
    }
}
#endif
