/* Portable int8 kernel and the quantizers (weights, activations) of every variant.
 * Compiled with -ffp-contract=off (see qgemm.h). */
#include <float.h>
#include <math.h>
#include <string.h>
#include "qgemm.h"
#define FR_QISA baseline
#include "qquant.inc"

size_t fr_qmatrix_data_size(int rows, int cols)
{
    if (rows < 1 || cols < 1 || cols % FR_QPANEL) return 0;
    return (size_t)fr_qk4(rows) * 4 * (size_t)cols;
}

/* x / s rounded to nearest even, in [-127, 127]; s > 0 and x finite. */
static inline int quantize_one(float x, float s)
{
    return fr_qround(x / s);
}

int fr_quantize_int8(const float *w, int rows, int cols, ptrdiff_t ld, signed char *q,
                     float *scale)
{
    if (!w || !q || !scale || rows < 1 || cols < 1 || ld < cols) return FR_EINVAL;
    for (ptrdiff_t k = 0; k < rows; k++)
        for (int c = 0; c < cols; c++)
            if (!isfinite(w[k * ld + c])) return FR_EINVAL;
    for (int c = 0; c < cols; c++) {
        float amax = 0.0f;
        for (ptrdiff_t k = 0; k < rows; k++) {
            const float a = fabsf(w[k * ld + c]);
            amax = a > amax ? a : amax;
        }
        const float s = amax / 127.0f;
        scale[c] = s;
        for (ptrdiff_t k = 0; k < rows; k++)
            q[k * cols + c] = (signed char)(s > 0.0f ? quantize_one(w[k * ld + c], s) : 0);
    }
    return FR_OK;
}

int fr_pack_int8(const signed char *q, int rows, int cols, ptrdiff_t ld, signed char *data,
                 int *colsum)
{
    if (!q || !data || !colsum || rows < 1 || rows > 65536 || cols < 1 || cols % FR_QPANEL
        || ld < cols)
        return FR_EINVAL;
    for (ptrdiff_t k = 0; k < rows; k++)
        for (int c = 0; c < cols; c++)
            if (q[k * ld + c] == -128) return FR_EINVAL;  /* symmetric: [-127, 127] */
    const ptrdiff_t panel = (ptrdiff_t)fr_qk4(rows) * 4 * FR_QPANEL;
    memset(data, 0, fr_qmatrix_data_size(rows, cols));
    for (int c = 0; c < cols; c++) {
        int sum = 0;
        for (ptrdiff_t k = 0; k < rows; k++) {
            data[(c / FR_QPANEL) * panel + (k / 4) * 4 * FR_QPANEL
                 + (ptrdiff_t)(c % FR_QPANEL) * 4 + k % 4] = q[k * ld + c];
            sum += q[k * ld + c];
        }
        colsum[c] = sum;
    }
    return FR_OK;
}

void fr_qgemm_int8_baseline(int M, int n, const unsigned char *a, ptrdiff_t lda,
                            const float *s, const fr_qmatrix *w, int c0, const float *bias,
                            float *out, ptrdiff_t ldo)
{
    const int K4 = fr_qk4(w->rows);
    for (int r = 0; r < M; r++) {
        const unsigned char *ar = a + (ptrdiff_t)r * lda;
        for (int u = 0; u < n; u++) {
            const int c = c0 + u;
            const signed char *q = fr_qpanel(w, c) + (c % FR_QPANEL) * 4;
            int acc = 0;
            for (int k4 = 0; k4 < K4; k4++, q += 4 * FR_QPANEL)
                acc += ar[4 * k4] * q[0] + ar[4 * k4 + 1] * q[1] + ar[4 * k4 + 2] * q[2]
                       + ar[4 * k4 + 3] * q[3];
            acc -= FR_QOFFSET * w->colsum[c];
            const float m = s[r] * w->scale[c];
            const float v = (float)acc * m;
            out[(ptrdiff_t)r * ldo + u] = bias ? bias[c] + v : v;
        }
    }
}

size_t fr_bf16_data_size(int rows, int cols)
{
    if (rows < 1 || cols < 1 || cols % FR_QPANEL) return 0;
    return (size_t)fr_qk2(rows) * 2 * (size_t)cols;
}

int fr_pack_bf16(const float *w, int rows, int cols, ptrdiff_t ld, unsigned short *data)
{
    if (!w || !data || rows < 1 || cols < 1 || cols % FR_QPANEL || ld < cols) return FR_EINVAL;
    for (ptrdiff_t k = 0; k < rows; k++)
        for (int c = 0; c < cols; c++)
            if (!isfinite(w[k * ld + c])) return FR_EINVAL;
    const ptrdiff_t panel = (ptrdiff_t)fr_qk2(rows) * 2 * FR_QPANEL;
    memset(data, 0, fr_bf16_data_size(rows, cols) * sizeof *data);
    for (ptrdiff_t k = 0; k < rows; k++)
        for (int c = 0; c < cols; c++)
            data[(c / FR_QPANEL) * panel + (k / 2) * 2 * FR_QPANEL + (ptrdiff_t)(c % FR_QPANEL) * 2
                 + k % 2] = fr_bf16_bits(w[k * ld + c]);
    return FR_OK;
}

/* The reference order of every bf16 variant: per pair of rows, the odd product, then the even
 * one, each added to the float32 sum (the products of two bfloat16 are exact in float32). Pairs
 * are read as one 32-bit word and split by masks and shifts, as the AVX2 kernel does (gcc 12 at
 * -O3 vectorized a widening of single 16-bit values to float wrongly here). */
static inline float fr_f32_bits(uint32_t u)
{
    float v;
    memcpy(&v, &u, 4);
    return v;
}

/* The two bfloat16 of a pair (k even, then k odd in memory) as float32 bits, from the 32-bit word
 * read: the odd one is the word's upper half on a little-endian host, its lower half on a
 * big-endian one, so both add the products in the same order. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define FR_PAIR_ODD(u) ((uint32_t)(u) << 16)
#define FR_PAIR_EVEN(u) ((uint32_t)(u) & 0xffff0000u)
#else
#define FR_PAIR_ODD(u) ((uint32_t)(u) & 0xffff0000u)
#define FR_PAIR_EVEN(u) ((uint32_t)(u) << 16)
#endif

void fr_qgemm_bf16_baseline(int M, int n, const unsigned char *a, ptrdiff_t lda,
                            const float *s, const fr_qmatrix *w, int c0, const float *bias,
                            float *out, ptrdiff_t ldo)
{
    (void)s;
    const int K2 = fr_qk2(w->rows);
    for (int r = 0; r < M; r++) {
        const unsigned char *ar = a + (ptrdiff_t)r * lda;
        float *o = out + (ptrdiff_t)r * ldo;
        for (int u = 0; u < n; u++) o[u] = bias ? bias[c0 + u] : 0.0f;
        for (int p = 0; p < n; p += FR_QPANEL) {  /* one panel of 16 columns at a time */
            const unsigned char *q = (const unsigned char *)fr_bf16_panel(w, c0 + p);
            for (int k2 = 0; k2 < K2; k2++, q += 4 * FR_QPANEL) {
                uint32_t pair, wq[FR_QPANEL];
                memcpy(&pair, ar + 4 * k2, 4);
                memcpy(wq, q, sizeof wq);
                const float odd = fr_f32_bits(FR_PAIR_ODD(pair));
                const float even = fr_f32_bits(FR_PAIR_EVEN(pair));
                for (int u = 0; u < FR_QPANEL; u++) {
                    float acc = o[p + u];
                    acc = acc + odd * fr_f32_bits(FR_PAIR_ODD(wq[u]));
                    acc = acc + even * fr_f32_bits(FR_PAIR_EVEN(wq[u]));
                    o[p + u] = acc;
                }
            }
        }
    }
}
