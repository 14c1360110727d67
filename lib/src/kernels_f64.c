/* kernels_f64.c -- the pointwise formulas in float64 (see kernels.h), built once per
 * instruction set (simd.h): ml__pointwise_f64_base, _avx2, _avx512. */
#include "simd.h"

#define REAL double
#define FN(name) ML__ISA(name##_f64)
#include "kernels.h"
