/*
 * fast.c -- the fused kernels of fast.h, float32 and float64 (fast_kernel.h twice).
 *
 * Work goes in blocks of ML__BLOCK elements. A first loop computes each element's loss into
 * an array that stays in L1, in the request's precision only, so that the vectoriser packs
 * 16 floats (8 doubles) into an AVX-512 register. A second loop weighs the losses in double
 * (the product of two floats is exact there) and adds them into the 16 plain lanes of the
 * block, which are then folded into the chunk's compensated lanes (internal.h, the order
 * reduce.c follows). Row and class weights are laid out for the block first, so the second
 * loop always reads a contiguous stream or a constant.
 *
 * NaN and infinity: every formula here turns a non-finite label or logit into a non-finite
 * loss, and a non-finite weight makes loss * w non-finite (inf * 0 is NaN), so a non-finite
 * input always shows in the sum: the caller looks for the culprit only then, and no pass
 * of its own tests every element. ASL clamps its probabilities and hinge_loss its margin (a
 * NaN or infinite input can give a finite loss there), so hinge adds x * 0 + z * 0 and ASL
 * x * 0 to the loss they sum: NaN for exactly those inputs (ASL's labels other than 0 and 1,
 * NaN included, go through its general formula, which multiplies by them). pos_weight is
 * checked before the kernel runs (fused.c).
 */
#include <math.h>
#include <string.h>

#include "fast.h"
#include "simd.h"
#include "vmath.h"

#define BLOCK ML__BLOCK

#if defined(__GNUC__)
#define ALWAYS_INLINE __attribute__((always_inline))
#else
#define ALWAYS_INLINE
#endif

#if defined(__GNUC__)
/* The widest vector of double the instruction set has (VW lanes), its int64 twin (what a
 * comparison gives), and unaligned loads of VW floats or doubles (macros: a function returning
 * a vector would change the ABI between the instruction sets). Native widths only: GCC lowers
 * a wider generic vector piecewise, and a 512-bit comparison of doubles on AVX2 element by
 * element (eight scalar compares per vector). */
#if defined(__AVX512F__)
#define VW 8
#elif defined(__AVX__)
#define VW 4
#else
#define VW 2
#endif
typedef double vd __attribute__((vector_size(VW * 8)));
typedef double vdu __attribute__((vector_size(VW * 8), aligned(8), may_alias));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4), may_alias));
typedef int64_t vl __attribute__((vector_size(VW * 8)));
#define NV (ML__LANES / VW) /* vectors per 16 lanes */
#if defined(__AVX512F__)
/* GCC splits the generic conversion into 128-bit pieces; one instruction does it. */
#include <immintrin.h>
#define WIDEN_F32(v) ((vd)_mm512_cvtps_pd((__m256)(v)))
#else
#define WIDEN_F32(v) __builtin_convertvector((v), vd)
#endif
#endif

/* The sums of one block. */
struct block_acc {
    double num[ML__LANES], den[ML__LANES];
    int64_t nonzero;
};

static inline ALWAYS_INLINE void lanes_fold(struct ml__lanes *l, const double *b)
{
    memcpy(l->b, b, sizeof(l->b));
    ml__lanes_flush(l);
}

#define REAL float
#define T(name) name##_f32
#define VM(name) name##f
#define FABS __builtin_fabsf
#define POW powf
#define POWI_SMALL ml__powi_small
#define SPLIT_TAIL 0
#define LOADV(p) WIDEN_F32(*(const vfu *)(p))
#include "fast_kernel.h"
#undef REAL
#undef T
#undef VM
#undef FABS
#undef POW
#undef POWI_SMALL
#undef SPLIT_TAIL
#undef LOADV

#define REAL double
#define T(name) name##_f64
#define VM(name) name
#define FABS __builtin_fabs
#define POW pow
#define POWI_SMALL ml__powi_small_d
#define SPLIT_TAIL 1
#define LOADV(p) ((vd)(*(const vdu *)(p)))
#include "fast_kernel.h"

void ML__ISA(ml__fast_run)(const struct ml__fast *f, int64_t begin, int64_t end,
                           struct ml__fast_sums *out)
{
    if (f->f64)
        run_f64(f, begin, end, out);
    else
        run_f32(f, begin, end, out);
}

/* The first NaN or infinity of an array, or -1 (fast.h): a scan of the exponent bits (all
 * ones) by blocks that vectorises, then the exact position within the block. */
#define FIRST_NON_FINITE(name, type, utype, mask)                                                  \
    int64_t ML__ISA(name)(const type *v, int64_t n)                                                \
    {                                                                                              \
        for (int64_t b0 = 0; b0 < n; b0 += BLOCK) {                                                \
            int64_t len = n - b0 < BLOCK ? n - b0 : BLOCK;                                         \
            utype any = 0;                                                                         \
            for (int64_t k = 0; k < len; k++) {                                                    \
                utype u;                                                                           \
                memcpy(&u, &v[b0 + k], sizeof(u));                                                 \
                any |= (utype)((u & (mask)) == (mask));                                            \
            }                                                                                      \
            if (any)                                                                               \
                for (int64_t k = 0; k < len; k++) {                                                \
                    utype u;                                                                       \
                    memcpy(&u, &v[b0 + k], sizeof(u));                                             \
                    if ((u & (mask)) == (mask))                                                    \
                        return b0 + k;                                                             \
                }                                                                                  \
        }                                                                                          \
        return -1;                                                                                 \
    }
FIRST_NON_FINITE(ml__first_non_finite_f32, float, uint32_t, 0x7f800000u)
FIRST_NON_FINITE(ml__first_non_finite_f64, double, uint64_t, 0x7ff0000000000000ull)
