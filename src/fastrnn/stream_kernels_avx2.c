/* x86-64 AVX2 + FMA streaming step kernels: compiled with -mavx2 -mfma, used only after CPUID
 * says yes. */
#if defined(__x86_64__) || defined(_M_X64)
#if !defined(__AVX2__) || !defined(__FMA__)
#error "stream_kernels_avx2.c must be compiled with -mavx2 -mfma"
#endif
#define FR_ISA avx2
#include "stream_kernels.h"
#endif
