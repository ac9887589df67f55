/* Instantiates the direction kernels for float32 and float64 under the current ISA flags.
 * Included by exactly one kernels_<isa>.c per instruction set; FR_ISA names the suffix. */
#include <string.h>
#include "internal.h"
#ifdef _OPENMP
#include <omp.h>
#include "team.h"
#endif
#include "activations.h"

#define FR_CAT3_(a, b, c) a##_##b##_##c
#define FR_CAT3(a, b, c) FR_CAT3_(a, b, c)

#define FR_T float
#define FR_NAME(x) FR_CAT3(x, f32, FR_ISA)
#define FR_TANH fr_tanh_f32
#define FR_SIGMOID fr_sigmoid_f32
#if defined(__AVX512F__)  /* epilogues a panel wide (Hp and every run are multiples of 16) */
#define FR_LANE fr_f32x16
#define FR_LTANH fr_vtanh_f32x16
#define FR_LSIGMOID fr_vsigmoid_f32x16
#else
#define FR_LANE FR_SIMD_LANE_F32
#define FR_LTANH FR_SIMD_VTANH_F32
#define FR_LSIGMOID FR_SIMD_VSIGMOID_F32
#endif
#define FR_INT8 1  /* float32 layers also run int8 weights (forward_impl.inc) */
#include "forward_impl.inc"
#include "backward_impl.inc"
#include "proj_impl.inc"
#undef FR_INT8
#undef FR_T
#undef FR_NAME
#undef FR_TANH
#undef FR_SIGMOID
#undef FR_LANE
#undef FR_LTANH
#undef FR_LSIGMOID

#ifndef FR_NO_FLOAT64  /* src/Makefile FLOAT64=0 leaves float64 out */
#define FR_T double
#define FR_NAME(x) FR_CAT3(x, f64, FR_ISA)
#define FR_TANH fr_tanh_f64
#define FR_SIGMOID fr_sigmoid_f64
#define FR_LANE double
#define FR_LTANH fr_tanh_f64
#define FR_LSIGMOID fr_sigmoid_f64
#include "forward_impl.inc"
#include "backward_impl.inc"
#include "proj_impl.inc"
#undef FR_T
#undef FR_NAME
#undef FR_TANH
#undef FR_SIGMOID
#undef FR_LANE
#undef FR_LTANH
#undef FR_LSIGMOID
#endif
#include "peak_impl.inc"
