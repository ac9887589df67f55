/* Portable streaming step kernels: compiled with the platform's default instruction set. */
#define FR_ISA baseline
#include "stream_kernels.h"
