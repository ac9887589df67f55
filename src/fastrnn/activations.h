/* Elementwise activations used by the gate epilogues.
 *
 * float32: rational approximations (the Eigen / MLAS coefficients) written as branch-free
 * scalar code that gcc and clang vectorise under `omp simd` with -fno-trapping-math.
 *   tanh:    odd 13/6 rational on [-9, 9], clamped to [-1, 1]; max abs error 3.6e-7,
 *            monotone up to float32 rounding (dips <= 4.2e-7).
 *   sigmoid: 0.5 + 0.5 * tanh(x / 2); max abs error ~2e-7.
 * The measured maxima are checked by the test suite against numpy over a dense sweep.
 * NaN propagates (comparisons with NaN are false, so the clamps keep it).
 * float64: libm (exact to ~1 ulp). */
#ifndef FASTRNN_ACTIVATIONS_H
#define FASTRNN_ACTIVATIONS_H

#include <math.h>

static inline float fr_tanh_f32(float x)
{
    const float lim = 9.0f;
    x = x > lim ? lim : x;
    x = x < -lim ? -lim : x;
    const float x2 = x * x;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * x;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    float r = p / q;
    r = r > 1.0f ? 1.0f : r;
    r = r < -1.0f ? -1.0f : r;
    return r;
}

static inline float fr_sigmoid_f32(float x)
{
    return 0.5f + 0.5f * fr_tanh_f32(0.5f * x);
}

static inline double fr_tanh_f64(double x) { return tanh(x); }

static inline double fr_sigmoid_f64(double x)
{
    /* Stable for both signs: exp never overflows. */
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

#endif
