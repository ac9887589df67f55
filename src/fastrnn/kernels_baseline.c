/* Portable kernels: compiled with the platform's default instruction set (x86-64: SSE2). */
#define FR_ISA baseline
#include "kernels_impl.h"
