/* kernels_f32.c -- the pointwise formulas in float32 (see kernels.h). */
#define REAL float
#define ML__KERNEL_F32 1
#define FN(name) name##_f32
#include "kernels.h"
