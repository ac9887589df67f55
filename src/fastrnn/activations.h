/* Elementwise activations used by the gate epilogues.
 *
 * float32: rational approximations (the Eigen / MLAS coefficients), branch-free, for one float
 * (fr_tanh_f32) or eight (fr_vtanh_f32x8, what the kernels' epilogues call); both give the
 * same results.
 *   tanh:    odd 13/6 rational on [-9, 9], clamped to [-1, 1]; max abs error 3.6e-7,
 *            monotone up to float32 rounding (dips <= 4.2e-7).
 *   sigmoid: 0.5 + 0.5 * tanh(x / 2); max abs error ~2e-7.
 * The measured maxima are checked by the test suite against numpy over a dense sweep.
 * NaN propagates (comparisons with NaN are false, so the clamps keep it).
 * float64: libm (exact to ~1 ulp). */
#ifndef FASTRNN_ACTIVATIONS_H
#define FASTRNN_ACTIVATIONS_H

#include <math.h>

/* The rational's coefficients: p(y) odd part over q(y), y = x * x, evaluated by Horner. */
#define FR_TANH_P6 -2.76076847742355e-16f
#define FR_TANH_P5 2.00018790482477e-13f
#define FR_TANH_P4 -8.60467152213735e-11f
#define FR_TANH_P3 5.12229709037114e-08f
#define FR_TANH_P2 1.48572235717979e-05f
#define FR_TANH_P1 6.37261928875436e-04f
#define FR_TANH_P0 4.89352455891786e-03f
#define FR_TANH_Q3 1.19825839466702e-06f
#define FR_TANH_Q2 1.18534705686654e-04f
#define FR_TANH_Q1 2.26843463243900e-03f
#define FR_TANH_Q0 4.89352518554385e-03f
#define FR_TANH_LIM 9.0f

/* The same operations in the same order for a scalar (T = float) or a vector of floats. The
 * clamps use MIN(c, x) = (c < x ? c : x) and MAX(c, x) = (c > x ? c : x) for a float c, which
 * return x when it is NaN. */
#define FR_TANH_F32_BODY(T, MIN, MAX)                                                       \
    x = MIN(FR_TANH_LIM, x);                                                                \
    x = MAX(-FR_TANH_LIM, x);                                                               \
    const T y = x * x;                                                                      \
    T p = y * FR_TANH_P6 + FR_TANH_P5;                                                      \
    p = p * y + FR_TANH_P4;                                                                 \
    p = p * y + FR_TANH_P3;                                                                 \
    p = p * y + FR_TANH_P2;                                                                 \
    p = p * y + FR_TANH_P1;                                                                 \
    p = p * y + FR_TANH_P0;                                                                 \
    p = p * x;                                                                              \
    T q = y * FR_TANH_Q3 + FR_TANH_Q2;                                                      \
    q = q * y + FR_TANH_Q1;                                                                 \
    q = q * y + FR_TANH_Q0;                                                                 \
    T r = p / q;                                                                            \
    r = MIN(1.0f, r);                                                                       \
    r = MAX(-1.0f, r);                                                                      \
    return r;

#define FR_SCALAR_MIN(c, x) ((c) < (x) ? (c) : (x))
#define FR_SCALAR_MAX(c, x) ((c) > (x) ? (c) : (x))

static inline float fr_tanh_f32(float x) { FR_TANH_F32_BODY(float, FR_SCALAR_MIN, FR_SCALAR_MAX) }

static inline float fr_sigmoid_f32(float x)
{
    return 0.5f + 0.5f * fr_tanh_f32(0.5f * x);
}

/* Clamps on generic vectors (type T, its integer twin IT): select c where `c cmp x` holds (false
 * for NaN, which keeps x). */
#define FR_CLAMP_GENERIC(name, T, IT, cmp)                                                  \
    static inline T name(float c, T x)                                                      \
    {                                                                                       \
        const T cv = (T){0} + c;                                                            \
        const IT m = cv cmp x;                                                              \
        return (T)(((IT)cv & m) | ((IT)x & ~m));                                            \
    }

/* Eight floats at once, for the kernels' epilogues: gcc vectorises the scalar clamps above as
 * compares and blends, while min/max instructions give the same results (NaN included) and made
 * a whole LSTM epilogue 1.5x faster. */
typedef float fr_f32x8 __attribute__((vector_size(32)));

#if defined(__AVX__)
#include <immintrin.h>
static inline fr_f32x8 fr_vmin_f32x8(float c, fr_f32x8 x)
{
    return (fr_f32x8)_mm256_min_ps(_mm256_set1_ps(c), (__m256)x);
}
static inline fr_f32x8 fr_vmax_f32x8(float c, fr_f32x8 x)
{
    return (fr_f32x8)_mm256_max_ps(_mm256_set1_ps(c), (__m256)x);
}
#elif defined(__SSE__)
#include <string.h>
#include <xmmintrin.h>
/* Two 4-wide halves. */
#define FR_CLAMP_F32X8(name, op)                                                            \
    static inline fr_f32x8 name(float c, fr_f32x8 x)                                        \
    {                                                                                       \
        __m128 h[2];                                                                        \
        memcpy(h, &x, sizeof h);                                                            \
        h[0] = op(_mm_set1_ps(c), h[0]);                                                    \
        h[1] = op(_mm_set1_ps(c), h[1]);                                                    \
        memcpy(&x, h, sizeof h);                                                            \
        return x;                                                                           \
    }
FR_CLAMP_F32X8(fr_vmin_f32x8, _mm_min_ps)
FR_CLAMP_F32X8(fr_vmax_f32x8, _mm_max_ps)
#undef FR_CLAMP_F32X8
#else
typedef int fr_i32x8 __attribute__((vector_size(32)));
FR_CLAMP_GENERIC(fr_vmin_f32x8, fr_f32x8, fr_i32x8, <)
FR_CLAMP_GENERIC(fr_vmax_f32x8, fr_f32x8, fr_i32x8, >)
#endif

static inline fr_f32x8 fr_vtanh_f32x8(fr_f32x8 x)
{
    FR_TANH_F32_BODY(fr_f32x8, fr_vmin_f32x8, fr_vmax_f32x8)
}

static inline fr_f32x8 fr_vsigmoid_f32x8(fr_f32x8 x)
{
    return 0.5f + 0.5f * fr_vtanh_f32x8(0.5f * x);
}

/* Four floats, the epilogue lane of 16-byte SIMD targets (ARM NEON, internal.h FR_SIMD_BYTES):
 * the same operations per lane again, with clamps as compare-and-select (NEON's fmin/fmax
 * would return NaN where these keep x). */
typedef float fr_f32x4 __attribute__((vector_size(16)));
typedef int fr_i32x4 __attribute__((vector_size(16)));
FR_CLAMP_GENERIC(fr_vmin_f32x4, fr_f32x4, fr_i32x4, <)
FR_CLAMP_GENERIC(fr_vmax_f32x4, fr_f32x4, fr_i32x4, >)
static inline fr_f32x4 fr_vtanh_f32x4(fr_f32x4 x)
{
    FR_TANH_F32_BODY(fr_f32x4, fr_vmin_f32x4, fr_vmax_f32x4)
}
static inline fr_f32x4 fr_vsigmoid_f32x4(fr_f32x4 x)
{
    return 0.5f + 0.5f * fr_vtanh_f32x4(0.5f * x);
}

#if defined(__AVX512F__)
/* Sixteen floats, for the AVX-512 kernels' epilogues: each lane runs the operations of the
 * eight-wide version, so both give the same bits. */
typedef float fr_f32x16 __attribute__((vector_size(64)));
static inline fr_f32x16 fr_vmin_f32x16(float c, fr_f32x16 x)
{
    return (fr_f32x16)_mm512_min_ps(_mm512_set1_ps(c), (__m512)x);
}
static inline fr_f32x16 fr_vmax_f32x16(float c, fr_f32x16 x)
{
    return (fr_f32x16)_mm512_max_ps(_mm512_set1_ps(c), (__m512)x);
}
static inline fr_f32x16 fr_vtanh_f32x16(fr_f32x16 x)
{
    FR_TANH_F32_BODY(fr_f32x16, fr_vmin_f32x16, fr_vmax_f32x16)
}
static inline fr_f32x16 fr_vsigmoid_f32x16(fr_f32x16 x)
{
    return 0.5f + 0.5f * fr_vtanh_f32x16(0.5f * x);
}
#endif

static inline double fr_tanh_f64(double x) { return tanh(x); }

static inline double fr_sigmoid_f64(double x)
{
    /* Stable for both signs: exp never overflows. */
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

#endif
