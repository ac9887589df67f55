/* int8 GEMM micro-kernels of the quantized path (fastrnn.h, "Reduced precision"). They know
 * nothing of cells: they turn quantized activations and weights into the float32 products
 * that the gate epilogues of forward_impl.inc consume, exactly as the float32 GEMM does. */
#ifndef FASTRNN_QGEMM_H
#define FASTRNN_QGEMM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
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

/* bfloat16 of a float32 (fastrnn.h, "bf16 weights"): the upper half of its bits rounded to
 * nearest even, NaN kept (quiet), magnitudes below FLT_MIN as signed zeros (so no variant
 * depends on how its instructions treat denormals). Integer operations only. */
static inline unsigned short fr_bf16_bits(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    if ((u & 0x7f800000u) == 0x7f800000u)  /* infinity or NaN */
        return (unsigned short)((u >> 16) | ((u & 0x007fffffu) ? 0x40u : 0u));
    if ((u & 0x7f800000u) == 0) return (unsigned short)((u >> 16) & 0x8000u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

static inline int fr_qk2(int rows) { return (rows + 1) / 2; }

/* The bf16 panel holding column c: fr_qk2(rows) groups of 32 units (16 columns x 2 rows). */
static inline const unsigned short *fr_bf16_panel(const fr_qmatrix *w, int c)
{
    return (const unsigned short *)(const void *)w->data
           + (ptrdiff_t)(c / FR_QPANEL) * fr_qk2(w->rows) * 2 * FR_QPANEL;
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
void fr_qgemm_int8_avxvnni(int M, int n, const unsigned char *a, ptrdiff_t lda, const float *s,
                           const fr_qmatrix *w, int c0, const float *bias, float *out,
                           ptrdiff_t ldo);
void fr_quantize_rows_u8_avxvnni(int M, int K, const float *x, ptrdiff_t ldx, unsigned char *a,
                                 ptrdiff_t lda, float *s);
void fr_qgemm_int8_avx512vnni(int M, int n, const unsigned char *a, ptrdiff_t lda,
                              const float *s, const fr_qmatrix *w, int c0, const float *bias,
                              float *out, ptrdiff_t ldo);
#endif

#if defined(__aarch64__)
/* ARMv8.2 dot product (sdot), chosen at run time (qgemm_neondot.c). */
#define FR_HAVE_NEONDOT_BUILD 1
void fr_qgemm_int8_neondot(int M, int n, const unsigned char *a, ptrdiff_t lda, const float *s,
                           const fr_qmatrix *w, int c0, const float *bias, float *out,
                           ptrdiff_t ldo);
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

/* bf16 (fastrnn.h): the same two roles. The "quantizer" rounds rows to bfloat16 (16-bit units,
 * rows padded to even K with zeros; s is not written) and the kernel computes
 * out = init + the pairwise float32 sum (s and the matrix's scale are not read). */
void fr_round_rows_bf16_baseline(int M, int K, const float *x, ptrdiff_t ldx, unsigned char *a,
                                 ptrdiff_t lda, float *s);
void fr_qgemm_bf16_baseline(int M, int n, const unsigned char *a, ptrdiff_t lda,
                            const float *s, const fr_qmatrix *w, int c0, const float *bias,
                            float *out, ptrdiff_t ldo);
#if defined(__x86_64__) || defined(_M_X64)
void fr_round_rows_bf16_avx2(int M, int K, const float *x, ptrdiff_t ldx, unsigned char *a,
                             ptrdiff_t lda, float *s);
void fr_round_rows_bf16_f32_avx2(int M, int K, const float *x, ptrdiff_t ldx, unsigned char *a,
                                 ptrdiff_t lda, float *s);
void fr_qgemm_bf16_avx2(int M, int n, const unsigned char *a, ptrdiff_t lda, const float *s,
                        const fr_qmatrix *w, int c0, const float *bias, float *out,
                        ptrdiff_t ldo);
void fr_round_rows_bf16_avx512bf16(int M, int K, const float *x, ptrdiff_t ldx,
                                   unsigned char *a, ptrdiff_t lda, float *s);
void fr_qgemm_bf16_avx512bf16(int M, int n, const unsigned char *a, ptrdiff_t lda,
                              const float *s, const fr_qmatrix *w, int c0, const float *bias,
                              float *out, ptrdiff_t ldo);
#endif

/* One reduced-precision variant: its GEMM micro-kernel and its activation quantizer, and the
 * shape of a quantized row (group rows of K padded to a multiple of `group`, `elem` bytes
 * per value). */
typedef struct fr_qkernels {
    const char *name;           /* "int8-baseline", "int8-avx2", "int8-avx512vnni", "bf16-..." */
    fr_qgemm_fn gemm;
    fr_qquant_fn quantize;
    int group, elem;
} fr_qkernels;

/* Bytes of one quantized row of K values. */
static inline ptrdiff_t fr_qrow_bytes(const fr_qkernels *qk, int K)
{
    return (ptrdiff_t)((K + qk->group - 1) / qk->group) * qk->group * qk->elem;
}

/* The variant of a weight format (FR_WEIGHTS_INT8 / BF16) chosen now (fastrnn.c), and one by
 * name (NULL if not available on this CPU / build) for tests. */
const fr_qkernels *fr_qkernels_current(int weight_format);
const fr_qkernels *fr_qkernels_by_name(const char *name);

#endif /* FASTRNN_QGEMM_H */
