/*
 * simd.c -- the run-time choice of instruction set (simd.h), and the dispatch of the
 * kernels and scans built once per instruction set.
 */
#include <stdlib.h>
#include <string.h>

#include "simd.h"
#include "softmax.h"

static enum ml__simd cpu_best(void)
{
#ifdef ML__X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("fma"))
        return ML__SIMD_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return ML__SIMD_AVX2;
#endif
    return ML__SIMD_BASELINE;
}

static const char *const simd_names[] = {"baseline", "avx2", "avx512f"};

enum ml__simd ml__simd_pick(void)
{
    enum ml__simd best = cpu_best();
    /* Read each time (no cached state): a getenv per request is noise. */
    const char *pin = getenv("MASKLOSS_SIMD");
    if (pin)
        for (int s = ML__SIMD_BASELINE; s <= (int)best; s++)
            if (!strcmp(pin, simd_names[s]))
                return (enum ml__simd)s;
    return best;
}

const char *ml__simd_name(enum ml__simd simd)
{
    return simd_names[simd];
}

const char *ml_simd_path(void)
{
    return simd_names[ml__simd_pick()];
}

void ml__fast_run(const struct ml__fast *f, int64_t begin, int64_t end, struct ml__fast_sums *out)
{
    switch (f->simd) {
#ifdef ML__X86_DISPATCH
    case ML__SIMD_AVX512:
        ml__fast_run_avx512(f, begin, end, out);
        return;
    case ML__SIMD_AVX2:
        ml__fast_run_avx2(f, begin, end, out);
        return;
#endif
    default:
        ml__fast_run_base(f, begin, end, out);
        return;
    }
}

int ml__pointwise_f32(const struct ml__kctx *k, double *out, double *den, int64_t *bad_index)
{
    switch (k->simd) {
#ifdef ML__X86_DISPATCH
    case ML__SIMD_AVX512:
        return ml__pointwise_f32_avx512(k, out, den, bad_index);
    case ML__SIMD_AVX2:
        return ml__pointwise_f32_avx2(k, out, den, bad_index);
#endif
    default:
        return ml__pointwise_f32_base(k, out, den, bad_index);
    }
}

int ml__pointwise_f64(const struct ml__kctx *k, double *out, double *den, int64_t *bad_index)
{
    switch (k->simd) {
#ifdef ML__X86_DISPATCH
    case ML__SIMD_AVX512:
        return ml__pointwise_f64_avx512(k, out, den, bad_index);
    case ML__SIMD_AVX2:
        return ml__pointwise_f64_avx2(k, out, den, bad_index);
#endif
    default:
        return ml__pointwise_f64_base(k, out, den, bad_index);
    }
}

/* The first NaN or infinity of an array: fast.c's scans, per instruction set (vectorised). */
int64_t ml__first_non_finite_f32(int simd, const float *v, int64_t n)
{
    switch (simd) {
#ifdef ML__X86_DISPATCH
    case ML__SIMD_AVX512:
        return ml__first_non_finite_f32_avx512(v, n);
    case ML__SIMD_AVX2:
        return ml__first_non_finite_f32_avx2(v, n);
#endif
    default:
        return ml__first_non_finite_f32_base(v, n);
    }
}

int64_t ml__first_non_finite_f64(int simd, const double *v, int64_t n)
{
    switch (simd) {
#ifdef ML__X86_DISPATCH
    case ML__SIMD_AVX512:
        return ml__first_non_finite_f64_avx512(v, n);
    case ML__SIMD_AVX2:
        return ml__first_non_finite_f64_avx2(v, n);
#endif
    default:
        return ml__first_non_finite_f64_base(v, n);
    }
}

/* The fused softmax rows (softmax.h), per instruction set. */
void ml__softmax_sums(const struct ml__softmax *p, int64_t t, struct ml__softmax_sums *out)
{
    switch (p->k->simd) {
#ifdef ML__X86_DISPATCH
    case ML__SIMD_AVX512:
        (p->f64 ? ml__softmax_sums_f64_avx512 : ml__softmax_sums_f32_avx512)(p, t, out);
        return;
    case ML__SIMD_AVX2:
        (p->f64 ? ml__softmax_sums_f64_avx2 : ml__softmax_sums_f32_avx2)(p, t, out);
        return;
#endif
    default:
        (p->f64 ? ml__softmax_sums_f64_base : ml__softmax_sums_f32_base)(p, t, out);
        return;
    }
}
