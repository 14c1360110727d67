/*
 * simd.h -- one library, three instruction sets, picked at run time.
 *
 * fast.c (the fused kernels) and kernels_f32.c, kernels_f64.c (the formulas of the general
 * path) are compiled once per instruction set on x86-64 (see the Makefile): for AVX-512
 * (with FMA), for AVX2 + FMA, and for baseline x86-64, each defining its functions with the
 * suffix ML__ISA gives them. The dispatchers below call the widest variant the CPU runs.
 * Every variant gives the same bits: the same float operations in the same order, explicit
 * fused multiply-adds (correctly rounded everywhere, vmath.h) and no contraction. Other
 * architectures build the baseline variant alone (the portable C path).
 *
 * MASKLOSS_SIMD=avx512f|avx2|baseline pins a narrower path (tests run every path through
 * it; a wider one than the CPU has is ignored).
 */
#ifndef ML_SIMD_H
#define ML_SIMD_H

#include "fast.h"
#include "internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define ML__X86_DISPATCH 1
#endif

#if defined(ML__ISA_AVX512)
#define ML__ISA(name) name##_avx512
#elif defined(ML__ISA_AVX2)
#define ML__ISA(name) name##_avx2
#else
#define ML__ISA(name) name##_base
#endif

enum ml__simd { ML__SIMD_BASELINE, ML__SIMD_AVX2, ML__SIMD_AVX512 };

/* The path to run: the widest the CPU has, or the narrower one MASKLOSS_SIMD names. */
enum ml__simd ml__simd_pick(void);

/* The name of a path as ml_simd_path() gives it ("avx512f", "avx2", "baseline"). */
const char *ml__simd_name(enum ml__simd simd);

struct ml__softmax;
struct ml__softmax_sums;

#define ML__DECLARE_VARIANTS(sfx)                                                                  \
    void ml__fast_run_##sfx(const struct ml__fast *f, int64_t begin, int64_t end,                  \
                            struct ml__fast_sums *out);                                            \
    int ml__pointwise_f32_##sfx(const struct ml__kctx *k, double *out, double *den,                \
                                int64_t *bad_index);                                               \
    int ml__pointwise_f64_##sfx(const struct ml__kctx *k, double *out, double *den,                \
                                int64_t *bad_index);                                               \
    int64_t ml__first_non_finite_f32_##sfx(const float *v, int64_t n);                             \
    int64_t ml__first_non_finite_f64_##sfx(const double *v, int64_t n);                            \
    void ml__softmax_sums_f32_##sfx(const struct ml__softmax *p, int64_t t,                        \
                                    struct ml__softmax_sums *out);                                 \
    void ml__softmax_sums_f64_##sfx(const struct ml__softmax *p, int64_t t,                        \
                                    struct ml__softmax_sums *out);
ML__DECLARE_VARIANTS(base)
#ifdef ML__X86_DISPATCH
ML__DECLARE_VARIANTS(avx2)
ML__DECLARE_VARIANTS(avx512)
#endif
#undef ML__DECLARE_VARIANTS

#endif /* ML_SIMD_H */
