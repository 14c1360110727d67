/* kernels_f64.c -- the pointwise formulas in float64 (see kernels.h). */
#define REAL double
#define FN(name) name##_f64
#include "kernels.h"
