/* kernels_f32.c -- the pointwise formulas in float32 (see kernels.h), built once per
 * instruction set (simd.h): ml__pointwise_f32_base, _avx2, _avx512. */
#include "simd.h"

#define REAL float
#define ML__KERNEL_F32 1
#define FN(name) ML__ISA(name##_f32)
#include "kernels.h"
