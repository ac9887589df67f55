/* int8 GEMM micro-kernels of the quantized path (fastrnn.h, "Reduced precision"). They know
 * nothing of cells: they turn quantized activations and weights into the float32 products
 * that the gate epilogues of forward_impl.inc consume, exactly as the float32 GEMM does. */
#ifndef FASTRNN_QGEMM_H
#define FASTRNN_QGEMM_H

#include <stddef.h>
#include "fastrnn.h"

/* Rows of activations quantized at once by the input projection (per-thread scratch). */
#define FR_QCHUNK 32
/* Activation offset: rows are stored as unsigned bytes a + 128 (what vpdpbusd multiplies);
 * the kernels subtract 128 * colsum[c], so every variant returns sum_k a[k] q[k][c]. */
#define FR_QOFFSET 128

#define FR_QPANEL 16  /* columns per panel of the int8 layout (fastrnn.h) */

static inline int fr_qk4(int rows) { return (rows + 3) / 4; }

/* The panel holding column c: fr_qk4(rows) groups of 64 bytes (16 columns x 4 rows). */
static inline const signed char *fr_qpanel(const fr_qmatrix *w, int c)
{
    return w->data + (ptrdiff_t)(c / FR_QPANEL) * fr_qk4(w->rows) * 4 * FR_QPANEL;
}

/* v (finite, |v| <= 127.5) rounded to nearest even and clamped to [-127, 127]: adding and
 * subtracting 1.5 * 2^23 rounds in the default rounding mode, and vectorizes (nearbyintf is a
 * libm call without SSE4.1). These objects never reassociate (no -ffast-math). */
static inline int fr_qround(float v)
{
    float r = (v + 12582912.0f) - 12582912.0f;
    r = r > 127.0f ? 127.0f : r;
    r = r < -127.0f ? -127.0f : r;
    return (int)r;
}

/* out[r * ldo + u] = init + (float)sum_k a[r][k] q[k][c0 + u] * (s[r] * scale[c0 + u])
 * for r < M and u < n (a multiple of 16). a: M rows of unsigned bytes (a + 128), lda apart,
 * 4 * fr_qk4(w->rows) bytes each (padding 128). init: bias[c0 + u], or 0 when bias is NULL.
 * The float operations (one conversion, two products, one sum) are the same on every variant
 * and never fused (these objects are compiled with -ffp-contract=off). */
typedef void (*fr_qgemm_fn)(int M, int n, const unsigned char *a, ptrdiff_t lda,
                            const float *s, const fr_qmatrix *w, int c0, const float *bias,
                            float *out, ptrdiff_t ldo);

void fr_qgemm_int8_baseline(int M, int n, const unsigned char *a, ptrdiff_t lda,
                            const float *s, const fr_qmatrix *w, int c0, const float *bias,
                            float *out, ptrdiff_t ldo);
#if defined(__x86_64__) || defined(_M_X64)
void fr_qgemm_int8_avx2(int M, int n, const unsigned char *a, ptrdiff_t lda, const float *s,
                        const fr_qmatrix *w, int c0, const float *bias, float *out,
                        ptrdiff_t ldo);
void fr_qgemm_int8_avx512vnni(int M, int n, const unsigned char *a, ptrdiff_t lda,
                              const float *s, const fr_qmatrix *w, int c0, const float *bias,
                              float *out, ptrdiff_t ldo);
#endif

/* Quantize M float32 rows of K values (x, ldx apart) into unsigned-byte rows (a, lda apart,
 * padded to 4 * fr_qk4(K) with the offset) and their scales s (fastrnn.h gives the rule).
 * One source (qquant.inc) compiled per variant: divisions, additions and comparisons only, so
 * every variant gives the same integers. */
typedef void (*fr_qquant_fn)(int M, int K, const float *x, ptrdiff_t ldx, unsigned char *a,
                             ptrdiff_t lda, float *s);
void fr_quantize_rows_u8_baseline(int M, int K, const float *x, ptrdiff_t ldx,
                                  unsigned char *a, ptrdiff_t lda, float *s);
#if defined(__x86_64__) || defined(_M_X64)
void fr_quantize_rows_u8_avx2(int M, int K, const float *x, ptrdiff_t ldx, unsigned char *a,
                              ptrdiff_t lda, float *s);
void fr_quantize_rows_u8_avx512vnni(int M, int K, const float *x, ptrdiff_t ldx,
                                    unsigned char *a, ptrdiff_t lda, float *s);
#endif

/* One int8 variant: its GEMM micro-kernel and its activation quantizer. */
typedef struct fr_qkernels {
    const char *name;           /* "int8-baseline", "int8-avx2", "int8-avx512vnni" */
    fr_qgemm_fn gemm;
    fr_qquant_fn quantize;
} fr_qkernels;

/* The variant chosen now (fastrnn.c), and one by name (NULL if not available on this CPU /
 * build) for tests. */
const fr_qkernels *fr_qkernels_current(void);
const fr_qkernels *fr_qkernels_by_name(const char *name);

#endif /* FASTRNN_QGEMM_H */
