/* Helpers shared by the C test programs. */
#ifndef FASTRNN_TEST_UTIL_H
#define FASTRNN_TEST_UTIL_H
#include <math.h>
#include <stddef.h>

/* Element i of a float32 (f32 != 0) or float64 array, as a double. */
static inline double tu_at(const void *p, int f32, size_t i)
{
    return f32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}

/* max(err, max_i |a[i] - b[i]|) for a typed array a and a double (b_typed == 0) or typed b.
 * A NaN difference makes the result NaN, so a `err <= tol` check fails on it (fmax would drop
 * it). Out of line and written without fmax: gcc 12 for AArch64 stops with an internal compiler
 * error (vect_transform_reduction) on the fmax reduction inlined into the tests at -O3. */
static __attribute__((noinline)) double tu_max_abs_diff(double err, const void *a, const void *b,
                                                        int b_typed, int f32, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double ref = b_typed ? tu_at(b, f32, i) : ((const double *)b)[i];
        double d = fabs(tu_at(a, f32, i) - ref);
        if (!(d <= err)) err = d;
    }
    return err;
}
#endif
