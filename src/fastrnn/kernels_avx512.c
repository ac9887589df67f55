/* x86-64 AVX-512 kernels: the AVX2 sources again, compiled with -mavx2 -mfma -mavx512f
 * -mavx512vl and called only after CPUID (and the OS) say yes. The micro-kernels then keep a
 * whole panel in one register (forward_impl.inc); every lane computes what it computes under
 * AVX2, so the results are the same bits. */
#if defined(__x86_64__) || defined(_M_X64)
#if !defined(__AVX512F__) || !defined(__AVX512VL__) || !defined(__FMA__)
#error "kernels_avx512.c must be compiled with -mavx2 -mfma -mavx512f -mavx512vl"
#endif
#define FR_ISA avx512
#include "kernels_impl.h"
#endif
