/*
 * fast.c -- the fused float32 kernels of fast.h.
 *
 * Work goes in blocks of BLOCK elements (a multiple of the 8 lanes): a first loop computes
 * each element's weighted loss and weight into two small arrays that stay in L1, a second
 * adds them into the lanes. Both loops are plain C the compiler vectorises; within a block
 * the weight is read along row segments, so every weight layout is a contiguous or constant
 * stream.
 */
#include <string.h>

#include "fast.h"
#include "vmath.h"

#define BLOCK 1024

#if defined(__GNUC__)
#define ALWAYS_INLINE __attribute__((always_inline))
#else
#define ALWAYS_INLINE
#endif

#if defined(ML__FAST_FORCE_AVX2)
/* A test build (tests/test_fast.c as test_fast_avx2) that pins the AVX2 path. */
#define CLONES __attribute__((target("avx2")))
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&                           \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
/* The sanitizers' runtimes are not ready when the loader resolves the clones' ifunc. */
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

/* The float formulas of kernels.h, term for term (same operations, same order); label
 * smoothing is applied by the caller. */
static inline ALWAYS_INLINE float tf_sce(float z, float x)
{
    float relu = x >= 0.0f ? x : 0.0f;
    float ax = x < 0 ? -x : x;
    return relu - x * z + ml__softplus_negf(ax);
}

static inline ALWAYS_INLINE float torch_bce(float z, float x)
{
    float ax = x < 0 ? -x : x;
    float m = x < 0.0f ? x : 0.0f;
    float log_sig = m - ml__softplus_negf(ax);
    return (1.0f - z) * x - 1.0f * log_sig;
}

/* Weighted losses of elements [i0, i0 + len) of one row segment; w is the weight stream
 * (stride 1) or NULL with `scalar`. Inlined into each clone of ml__fast_run, so that it is
 * compiled for that clone's instruction set. */
/* torchvision.ops.sigmoid_focal_loss as kernels.h writes it, for gamma 0, 1 or 2. */
static inline ALWAYS_INLINE float tv_focal(float z, float x, int gamma, float alpha)
{
    float p = ml__sigmoidf(x);
    float ce = torch_bce(z, x);
    float p_t = p * z + (1.0f - p) * (1.0f - z);
    float b = 1.0f - p_t;
    float f = gamma == 2 ? b * b : gamma == 1 ? b : 1.0f;
    float loss = ce * f;
    return alpha >= 0 ? (alpha * z + (1.0f - alpha) * (1.0f - z)) * loss : loss;
}

/* The loops of one formula: with a weight stream or one weight, storing the weights too or
 * not (they are summed only for a weights denominator or sum_weights). No branch inside any,
 * for the vectoriser. */
#define LOOPS(expr)                                                                                \
    do {                                                                                           \
        if (w && wd)                                                                               \
            for (int64_t k = 0; k < len; k++) {                                                    \
                wv[k] = (double)(expr) * (double)w[k];                                             \
                wd[k] = (double)w[k];                                                              \
            }                                                                                      \
        else if (w)                                                                                \
            for (int64_t k = 0; k < len; k++)                                                      \
                wv[k] = (double)(expr) * (double)w[k];                                             \
        else if (wd)                                                                               \
            for (int64_t k = 0; k < len; k++) {                                                    \
                wv[k] = (double)(expr) * (double)scalar;                                           \
                wd[k] = (double)scalar;                                                            \
            }                                                                                      \
        else                                                                                       \
            for (int64_t k = 0; k < len; k++)                                                      \
                wv[k] = (double)(expr) * (double)scalar;                                           \
    } while (0)

/* Weighted losses of elements [i0, i0 + len) of one row segment; w is the weight stream
 * (stride 1) or NULL with `scalar`; wd (may be NULL) receives the weights. Inlined into each
 * clone of ml__fast_run, so that it is compiled for that clone's instruction set. */
static inline ALWAYS_INLINE void segment(const struct ml__fast *f, int64_t i0, int64_t len,
                                         const float *w, float scalar, double *wv, double *wd)
{
    const float *z = f->z + i0, *x = f->x + i0;
    float ls = f->id == ML__TF_SIGMOID_CE ? f->label_smoothing : 0.0f;
    if (f->id == ML__TORCH_BCE)
        LOOPS(torch_bce(z[k], x[k]));
    else if (f->id == ML__TV_FOCAL && f->gamma == 2)
        LOOPS(tv_focal(z[k], x[k], 2, f->alpha));
    else if (f->id == ML__TV_FOCAL && f->gamma == 1)
        LOOPS(tv_focal(z[k], x[k], 1, f->alpha));
    else if (f->id == ML__TV_FOCAL)
        LOOPS(tv_focal(z[k], x[k], 0, f->alpha));
    else if (ls > 0)
        LOOPS(tf_sce(z[k] * (1.0f - ls) + 0.5f * ls, x[k]));
    else
        LOOPS(tf_sce(z[k], x[k]));
}

static inline ALWAYS_INLINE uint32_t is_non_finite(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof(u));
    return (u & 0x7f800000u) == 0x7f800000u;
}

/* Whether a segment's inputs hold a NaN or an infinity (read while they are in L1, instead
 * of a pass of their own over memory). */
static inline ALWAYS_INLINE int non_finite(const float *z, const float *x, const float *w,
                                           float scalar, int64_t len)
{
    uint32_t any = is_non_finite(scalar);
    for (int64_t k = 0; k < len; k++)
        any |= is_non_finite(z[k]) | is_non_finite(x[k]);
    if (w)
        for (int64_t k = 0; k < len; k++)
            any |= is_non_finite(w[k]);
    return any != 0;
}

/* Non-zero weights of a segment (NaN counts, as w != 0 does in reduce.c). */
static inline ALWAYS_INLINE int64_t nonzero(const float *w, float scalar, int64_t len)
{
    if (!w)
        return scalar != 0 ? len : 0;
    int64_t nz = 0;
    for (int64_t k = 0; k < len; k++)
        nz += w[k] != 0;
    return nz;
}

#undef LOOPS

static inline ALWAYS_INLINE void lanes_add8(struct ml__lanes *a, const double *x)
{
    for (int j = 0; j < ML__LANES; j++) {
        double t = a->s[j] + x[j];
        double z = t - a->s[j];
        a->c[j] += (a->s[j] - (t - z)) + (x[j] - z);
        a->s[j] = t;
    }
}

CLONES void ml__fast_run(const struct ml__fast *f, int64_t begin, int64_t end,
                         struct ml__fast_sums *out)
{
    double wv[BLOCK], wd[BLOCK];
    const int need_wd = f->den_sums || f->want_sw;
    memset(out, 0, sizeof(*out));
    for (int64_t b0 = begin; b0 < end; b0 += BLOCK) {
        int64_t len = end - b0 < BLOCK ? end - b0 : BLOCK;
        /* Row segments of the block. */
        for (int64_t i = b0; i < b0 + len;) {
            int64_t row = i / f->cols, col = i - row * f->cols;
            int64_t seg = f->cols - col;
            if (seg > b0 + len - i)
                seg = b0 + len - i;
            const float *w = NULL;
            float scalar = 1.0f;
            switch (f->wmode) {
            case ML__FW_SCALAR:
                scalar = f->w[0];
                break;
            case ML__FW_DENSE:
                w = f->w + i;
                break;
            case ML__FW_ROW:
                scalar = f->w[row];
                break;
            case ML__FW_COL:
                w = f->w + col;
                break;
            default:
                break;
            }
            segment(f, i, seg, w, scalar, wv + (i - b0), need_wd ? wd + (i - b0) : NULL);
            out->nonzero += nonzero(w, scalar, seg);
            if (f->check_finite)
                out->non_finite |= non_finite(f->z + i, f->x + i, w, scalar, seg);
            i += seg;
        }
        /* The lanes: element b0 + k goes to lane k mod 8 (b0 is a multiple of 8). */
        int64_t k = 0;
        for (; k + ML__LANES <= len; k += ML__LANES) {
            lanes_add8(&out->num, wv + k);
            if (f->den_sums)
                lanes_add8(&out->den, wd + k);
            if (f->want_sw)
                lanes_add8(&out->sw, wd + k);
        }
        for (; k < len; k++) {
            ml__lanes_add(&out->num, k, wv[k]);
            if (f->den_sums)
                ml__lanes_add(&out->den, k, wd[k]);
            if (f->want_sw)
                ml__lanes_add(&out->sw, k, wd[k]);
        }
    }
}

const char *ml_simd_path(void)
{
#if defined(ML__FAST_FORCE_AVX2)
    return "avx2";
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&                             \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return "avx512f";
    if (__builtin_cpu_supports("avx2"))
        return "avx2";
#endif
    return "baseline";
}

/* The first NaN or infinity of a float array, or -1: a vectorised scan of the exponent bits
 * (all ones), then the exact position within the block that has one. */
CLONES int64_t ml__first_non_finite_f32(const float *v, int64_t n)
{
    for (int64_t b0 = 0; b0 < n; b0 += BLOCK) {
        int64_t len = n - b0 < BLOCK ? n - b0 : BLOCK;
        uint32_t any = 0;
        for (int64_t k = 0; k < len; k++) {
            uint32_t u;
            memcpy(&u, &v[b0 + k], sizeof(u));
            any |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
        }
        if (any)
            for (int64_t k = 0; k < len; k++) {
                uint32_t u;
                memcpy(&u, &v[b0 + k], sizeof(u));
                if ((u & 0x7f800000u) == 0x7f800000u)
                    return b0 + k;
            }
    }
    return -1;
}

CLONES int64_t ml__first_non_finite_f64(const double *v, int64_t n)
{
    for (int64_t b0 = 0; b0 < n; b0 += BLOCK) {
        int64_t len = n - b0 < BLOCK ? n - b0 : BLOCK;
        uint64_t any = 0;
        for (int64_t k = 0; k < len; k++) {
            uint64_t u;
            memcpy(&u, &v[b0 + k], sizeof(u));
            any |= (uint64_t)((u & 0x7ff0000000000000ull) == 0x7ff0000000000000ull);
        }
        if (any)
            for (int64_t k = 0; k < len; k++) {
                uint64_t u;
                memcpy(&u, &v[b0 + k], sizeof(u));
                if ((u & 0x7ff0000000000000ull) == 0x7ff0000000000000ull)
                    return b0 + k;
            }
    }
    return -1;
}
