/*
 * kernels.h -- the pointwise formulas, written once for a real type.
 *
 * Included by kernels_f32.c (REAL = float) and kernels_f64.c (REAL = double) after
 * defining REAL and FN(name). <tgmath.h> makes exp/log/log1p/fabs/pow resolve to the
 * float functions for float arguments, so that float32 requests do their elementwise work
 * in float32, as the frameworks do (this matters where a formula saturates: Keras clips to
 * 1 - 1e-7, which is 0.99999988 in float32). Every constant is cast to REAL for the same
 * reason: a bare 0.5 would promote the expression to double.
 *
 * The upstream source of each formula is cited where it is written (here and in formulas.h).
 */
#include <string.h>
#include <tgmath.h>

#include "internal.h"
#include "softmax.h"
#include "vmath.h"

#define R(c) ((REAL)(c))

/* The library's own functions of this precision (vmath.h), shared with the fused kernels of
 * fast.c so that both paths give the same bits. */
#ifdef ML__KERNEL_F32
#define VMK(name) name##f
#define POWI_SMALL_K ml__powi_small
#else
#define VMK(name) name
#define POWI_SMALL_K ml__powi_small_d
#endif

/* The formulas both paths share (formulas.h), in this type. */
#define F(name) FN(name)
#define VM(name) VMK(name)
#define FABS fabs
#define POW pow
#define POWI_SMALL POWI_SMALL_K
#include "formulas.h"

/*
 * Keras 3 backend binary_crossentropy on probabilities: clip to [eps, 1-eps], then
 * -(y log o + (1-y) log(1-o)). Keras 2 also adds eps inside both logs. Each log whose
 * argument is near 1 is taken as log1p of the (exact, or once rounded) difference from 1:
 * log(1 - o) of a small o, log(o + eps) of an o near 1; the others are direct.
 */
static inline REAL FN(keras_bce_probs)(REAL y, REAL p, int keras2)
{
    const REAL eps = R(1e-7);
    const REAL hi = R(1) - eps;
    REAL o = p < eps ? eps : (p > hi ? hi : p);
    if (o != o)
        o = p;            /* clip_by_value passes NaN through */
    int big = o > R(0.5); /* then 1 - o and o - 1 are exact */
    if (keras2) {
        REAL lo = big ? VMK(ml__log1p)((o - R(1)) + eps) : VMK(ml__log)(o + eps);
        REAL lq = big ? VMK(ml__log)((R(1) - o) + eps) : VMK(ml__log1p)(eps - o);
        return -(y * lo + (R(1) - y) * lq);
    }
    REAL lq = big ? VMK(ml__log)(R(1) - o) : VMK(ml__log1p)(-o);
    return -(y * VMK(ml__log)(o) + (R(1) - y) * lq);
}

/* The elementwise value of the losses whose output keeps the input shape, and of the
 * Keras binary losses before their mean over `axis`. */
static REAL FN(elementwise)(const struct ml__kctx *k, int64_t i, REAL z, REAL x)
{
    switch (k->id) {
    case ML__TF_SIGMOID_CE:
        /* losses_impl.sigmoid_cross_entropy: smoothing only when label_smoothing > 0. */
        if (k->label_smoothing > 0)
            z = FN(smooth_binary)(z, R(k->label_smoothing));
        return FN(sigmoid_xent)(z, x);
    case ML__TFNN_SIGMOID:
        return FN(sigmoid_xent)(z, x);
    case ML__TFNN_WEIGHTED:
        /* nn_impl.weighted_cross_entropy_with_logits. */
        return FN(torch_weighted_xent)(z, x, ((const REAL *)k->aux)[i], k->allow_non_finite);
    case ML__TF_LOG_LOSS:
        return FN(log_loss)(z, x, R(k->epsilon));
    case ML__TF_MSE:
        return FN(squared_error)(z, x);
    case ML__TF_ABSDIFF:
        return FN(absolute_difference)(z, x);
    case ML__TF_HUBER:
        return FN(huber)(z, x, R(k->delta));
    case ML__TF_HINGE:
        return FN(hinge)(z, x);
    case ML__TORCH_BCE:
        /* ATen binary_cross_entropy_with_logits; pos_weight=None is the plain formula. */
        return k->aux
                   ? FN(torch_weighted_xent)(z, x, ((const REAL *)k->aux)[i], k->allow_non_finite)
                   : FN(torch_xent)(z, x, k->allow_non_finite);
    case ML__TV_FOCAL: {
        REAL g = R(k->gamma);
        int gk = g == R(2) ? 2 : g == R(1) ? 1 : g == R(0) ? 0 : -1;
        return FN(tv_focal)(z, x, gk, g, R(k->alpha), k->allow_non_finite);
    }
    case ML__K3_BCE:
    case ML__K2_BCE: {
        if (k->label_smoothing != 0)
            z = FN(smooth_binary)(z, R(k->label_smoothing));
        if (k->from_logits)
            return FN(sigmoid_xent)(z, x);
        return FN(keras_bce_probs)(z, x, k->id == ML__K2_BCE);
    }
    case ML__K3_FOCAL:
    case ML__K2_FOCAL: {
        /* keras/src/losses/losses.py binary_focal_crossentropy (Keras 3): the BCE term always
         * takes the clipped-probability path, even from logits; keras/backend.py (Keras 2):
         * the exact BCE from logits. 1 - p_t as z (1 - p) + (1 - z) p, no cancellation. */
        if (k->label_smoothing != 0)
            z = FN(smooth_binary)(z, R(k->label_smoothing));
        struct FN(sigmoid_pair) s = {x, R(1) - x};
        if (k->from_logits)
            s = FN(sigmoid_pair_e)(x, VMK(ml__exp_neg)(fabs(x)));
        REAL bce = k->id == ML__K3_FOCAL ? FN(keras_bce_probs)(z, s.p, 0)
                   : k->from_logits      ? FN(sigmoid_xent)(z, x)
                                         : FN(keras_bce_probs)(z, x, 1);
        REAL fl = pow(FN(focal_base)(z, s), R(k->gamma)) * bce;
        if (k->apply_class_balancing) {
            REAL a = R(k->alpha);
            fl = (z * a + (R(1) - z) * (R(1) - a)) * fl;
        }
        return fl;
    }
    default:
        return R(0);
    }
}

/* Rows of classes are summed in 16 interleaved lanes (class c to lane c mod 16), combined in
 * a fixed order: the bits do not depend on the instruction set. The order is a tree (lane j
 * plus lane j + 8, then j + 4, j + 2, j + 1): four levels, whose first ones are additions of
 * whole vectors, instead of a chain of sixteen. */
#define ML__ROW_LANES 16
/* Elements of a float64 row whose exp one piece holds (a whole number of lanes). */
#define ML__ROW_PIECE 512

/*
 * The lanes of a contiguous row in vectors of the instruction set's width (GCC's vector
 * extensions): ROW_NV vectors of ROW_W lanes, lane j in vector j / ROW_W. Only operations
 * that are exact per lane are done on them -- additions, subtractions, multiplications, fused
 * multiply-adds, compares, selects, max and min, integer bit operations -- so every
 * instruction set gives the bits of the scalar code of the rows' tails (and of a compiler
 * without the extensions: the scalar loops alone); the vectoriser alone left the 16-lane
 * loops scalar.
 */
#if defined(__GNUC__)
#define ML__ROW_VECTORS 1
#if defined(__AVX512F__)
#define ROW_VBYTES 64
#elif defined(__AVX2__)
#define ROW_VBYTES 32
#else
#define ROW_VBYTES 16
#endif
#define ROW_W ((int)(ROW_VBYTES / sizeof(REAL)))
#define ROW_NV (ML__ROW_LANES / ROW_W)
#ifdef ML__KERNEL_F32
typedef int32_t FN(row_mask) __attribute__((vector_size(ROW_VBYTES)));
#else
typedef int64_t FN(row_mask) __attribute__((vector_size(ROW_VBYTES)));
#endif
typedef REAL FN(row_vec) __attribute__((vector_size(ROW_VBYTES)));
typedef REAL FN(row_vec_u)
    __attribute__((vector_size(ROW_VBYTES), aligned(sizeof(REAL)), may_alias));
#define ROW_LOAD(p) ((FN(row_vec))(*(const FN(row_vec_u) *)(p)))
/* a where m, else b (m: all ones or zero per lane, from a compare). */
#define ROW_SELECT(m, a, b) ((FN(row_vec))(((m) & (FN(row_mask))(a)) | (~(m) & (FN(row_mask))(b))))
/* a > b ? a : b and a < b ? a : b: x86's max and min are exactly these selects (b where either
 * is NaN, b of two zeros), in one instruction. */
#if defined(__SSE2__)
#include <immintrin.h>
#endif
#if defined(__AVX512F__) && defined(ML__KERNEL_F32)
#define ROW_GT_PICK(a, b) ((FN(row_vec))_mm512_max_ps((__m512)(a), (__m512)(b)))
#define ROW_LT_PICK(a, b) ((FN(row_vec))_mm512_min_ps((__m512)(a), (__m512)(b)))
#elif defined(__AVX512F__)
#define ROW_GT_PICK(a, b) ((FN(row_vec))_mm512_max_pd((__m512d)(a), (__m512d)(b)))
#define ROW_LT_PICK(a, b) ((FN(row_vec))_mm512_min_pd((__m512d)(a), (__m512d)(b)))
#elif defined(__AVX2__) && defined(ML__KERNEL_F32)
#define ROW_GT_PICK(a, b) ((FN(row_vec))_mm256_max_ps((__m256)(a), (__m256)(b)))
#define ROW_LT_PICK(a, b) ((FN(row_vec))_mm256_min_ps((__m256)(a), (__m256)(b)))
#elif defined(__AVX2__)
#define ROW_GT_PICK(a, b) ((FN(row_vec))_mm256_max_pd((__m256d)(a), (__m256d)(b)))
#define ROW_LT_PICK(a, b) ((FN(row_vec))_mm256_min_pd((__m256d)(a), (__m256d)(b)))
#elif defined(__SSE2__) && defined(ML__KERNEL_F32)
#define ROW_GT_PICK(a, b) ((FN(row_vec))_mm_max_ps((__m128)(a), (__m128)(b)))
#define ROW_LT_PICK(a, b) ((FN(row_vec))_mm_min_ps((__m128)(a), (__m128)(b)))
#elif defined(__SSE2__)
#define ROW_GT_PICK(a, b) ((FN(row_vec))_mm_max_pd((__m128d)(a), (__m128d)(b)))
#define ROW_LT_PICK(a, b) ((FN(row_vec))_mm_min_pd((__m128d)(a), (__m128d)(b)))
#else
#define ROW_GT_PICK(a, b) ROW_SELECT((a) > (b), (a), (b))
#define ROW_LT_PICK(a, b) ROW_SELECT((a) < (b), (a), (b))
#endif

/* Vectors of 32 and 16 bytes, the halves of wider ones. */
typedef REAL FN(row_v32) __attribute__((vector_size(32)));
typedef REAL FN(row_v16) __attribute__((vector_size(16)));

/* Every lane v: the scalar minus +0, which is v itself (-0, NaN and infinities included). */
#define ROW_SPLAT(v) ((v) - (FN(row_vec)){0})

#ifdef ML__KERNEL_F32
/* a b + c rounded once, lane by lane: the instruction where the build has it, else the C
 * library's fmaf per lane (baseline x86-64 has none), correctly rounded either way. */
static inline ML__ALWAYS_INLINE FN(row_vec) FN(row_fma)(FN(row_vec) a, FN(row_vec) b, FN(row_vec) c)
{
#if defined(__AVX512F__)
    return (FN(row_vec))_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif defined(__AVX2__) && defined(__FMA__)
    return (FN(row_vec))_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    FN(row_vec) r;
    for (int j = 0; j < ROW_W; j++)
        r[j] = ML__FMAF(a[j], b[j], c[j]);
    return r;
#endif
}

/*
 * vmath.h's exp(-a) of float (ml__exp_negf) on a vector: the same operations in the same
 * order, so each lane has the bits of the scalar function, which the rows' tails use
 * (test_softmax checks rows of 15 classes, all tail, against the same with a 16th of -inf,
 * all vector: a change to one of the two shows there). float64 rows call ml__exp_neg itself.
 */
typedef uint32_t FN(row_bits) __attribute__((vector_size(ROW_VBYTES)));
static inline ML__ALWAYS_INLINE FN(row_vec) FN(row_exp_neg)(FN(row_vec) a)
{
    const FN(row_vec) shift = ROW_SPLAT(0x1.8p23f);
    FN(row_vec) t = -ROW_LT_PICK(ROW_SPLAT(104.0f), a); /* a > 104 ? 104 : a */
    FN(row_vec) kf = FN(row_fma)(t, ROW_SPLAT(0x1.715476p0f), shift);
    FN(row_vec) n = kf - shift;
    FN(row_vec) r = FN(row_fma)(n, ROW_SPLAT(-0x1.62e43p-1f), t);
    r = FN(row_fma)(n, ROW_SPLAT(0x1.05c61p-29f), r);
    FN(row_vec) q = ROW_SPLAT(0x1.6a245p-10f);
    q = FN(row_fma)(q, r, ROW_SPLAT(0x1.1239d4p-7f));
    q = FN(row_fma)(q, r, ROW_SPLAT(0x1.5558f2p-5f));
    q = FN(row_fma)(q, r, ROW_SPLAT(0x1.555492p-3f));
    q = FN(row_fma)(q, r, ROW_SPLAT(0x1.fffffcp-2f));
    FN(row_vec) p = 1.0f + FN(row_fma)(r * r, q, r);
    /* vmath.h's (kf - 0x4b400000 + 191) << 23, the constants added first (modulo 2^32). */
    FN(row_vec) scale = (FN(row_vec))(((FN(row_bits))kf + (191u - 0x4b400000u)) << 23);
    return (p * scale) * 0x1p-64f;
}
#endif
#endif

/* The lanes' total in the tree's order: whole vectors first, then halves of them. */
static inline REAL FN(lanes_total)(const REAL *lane)
{
    int64_t w = ML__ROW_LANES;
    REAL t[ML__ROW_LANES];
#ifdef ML__ROW_VECTORS
    FN(row_vec) v[ROW_NV];
    memcpy(v, lane, sizeof(v));
    for (int n = ROW_NV / 2; n >= 1; n /= 2)
        for (int h = 0; h < n; h++)
            v[h] += v[h + n];
#if ROW_VBYTES >= 32
    FN(row_v32) a32[ROW_VBYTES / 32];
    memcpy(a32, &v[0], sizeof(a32));
#if ROW_VBYTES == 64
    a32[0] += a32[1];
#endif
    FN(row_v16) a16[2];
    memcpy(a16, &a32[0], sizeof(a16));
    a16[0] += a16[1];
#else
    FN(row_v16) a16[1] = {v[0]};
#endif
    memcpy(t, &a16[0], 16);
    w = 16 / (int64_t)sizeof(REAL);
#else
    memcpy(t, lane, sizeof(t));
#endif
    for (w /= 2; w >= 1; w /= 2)
        for (int64_t j = 0; j < w; j++)
            t[j] += t[j + w];
    return t[0];
}

/*
 * The log-softmax of a row, as -log_softmax(x)_c = (m - x_c) + l: m the row's maximum and
 * l = log(sum exp(x - m)) = log1p(r), r the sum without the maximum's own term exp(0) = 1.
 * Two non-negative terms: nothing cancels, so the small losses of confident rows keep their
 * digits (x_c - (m + log s) loses an ulp of m there). A row whose maximum is infinite (+inf
 * anywhere, or every element -inf or NaN) is NaN throughout, as in TF and torch, whose
 * x - m is then inf - inf; an empty row's sums are empty. lo is the row's least element
 * (NaN left out): -inf there shows a non-finite input that a sparse loss would not read.
 */
struct FN(row_lse) {
    REAL m, l, lo;
};

static inline REAL FN(neg_log_softmax)(REAL x, struct FN(row_lse) r)
{
    return (r.m - x) + r.l;
}

/* exp(x - m) is the library's exp(-(m - x)) (vmath.h), m - x >= 0. The terms exp(0) = 1 of
 * the elements equal to m are counted apart (ties), so that r is summed without the 1 that
 * would round its small terms away: r = (ties - 1) + the others (whose exp is taken of an
 * argument out of range, 0, at the ties: a select before the call vectorises). */
static struct FN(row_lse) FN(row_logsumexp)(const REAL *x, int64_t len, int64_t stride)
{
    struct FN(row_lse) r = {-INFINITY, R(0), INFINITY};
    const REAL out_of_range = R(1e30); /* exp(-1e30) = 0 */
    REAL m = -INFINITY, lo = INFINITY, s = R(0), ties = R(0);
    if (stride == 1) {
        REAL lane[ML__ROW_LANES] = {0};
        int64_t c = 0;
        /* The maximum and the minimum in any order: no NaN is ever picked, and whichever of
         * -0 and +0 is kept gives the same (m - x) + l. */
#ifdef ML__ROW_VECTORS
        FN(row_vec) vmx[ROW_NV], vmn[ROW_NV];
        for (int h = 0; h < ROW_NV; h++) {
            vmx[h] = ROW_SPLAT(-INFINITY);
            vmn[h] = ROW_SPLAT(INFINITY);
        }
        for (; c + ML__ROW_LANES <= len; c += ML__ROW_LANES)
            for (int h = 0; h < ROW_NV; h++) {
                FN(row_vec) v = ROW_LOAD(x + c + h * ROW_W);
                vmx[h] = ROW_GT_PICK(v, vmx[h]); /* NaN is left out here */
                vmn[h] = ROW_LT_PICK(v, vmn[h]);
            }
        for (int h = 1; h < ROW_NV; h++) {
            vmx[0] = ROW_GT_PICK(vmx[h], vmx[0]);
            vmn[0] = ROW_LT_PICK(vmn[h], vmn[0]);
        }
        for (int j = 0; j < ROW_W; j++) {
            m = vmx[0][j] > m ? vmx[0][j] : m;
            lo = vmn[0][j] < lo ? vmn[0][j] : lo;
        }
#endif
        for (; c < len; c++) {
            m = x[c] > m ? x[c] : m;
            lo = x[c] < lo ? x[c] : lo;
        }
        r.m = m;
        r.lo = lo;
        if (isinf(m)) {
            r.l = m - m; /* NaN */
            return r;
        }
        /* The ties are counted exactly, in integers (in any order). */
        int64_t nties = 0;
        c = 0;
#if defined(ML__ROW_VECTORS) && defined(ML__KERNEL_F32)
        {
            const FN(row_vec) vm = ROW_SPLAT(m), oor = ROW_SPLAT(out_of_range);
            FN(row_vec) vl[ROW_NV];
            FN(row_mask) vt[ROW_NV];
            for (int h = 0; h < ROW_NV; h++) {
                vl[h] = ROW_SPLAT(R(0));
                vt[h] = (FN(row_mask)){0};
            }
            for (; c + ML__ROW_LANES <= len; c += ML__ROW_LANES)
                for (int h = 0; h < ROW_NV; h++) {
                    FN(row_vec) d = vm - ROW_LOAD(x + c + h * ROW_W);
                    FN(row_mask) tied = d == R(0);
                    vl[h] += FN(row_exp_neg)(ROW_SELECT(tied, oor, d)); /* NaN shows here */
                    vt[h] -= tied;                                      /* -1 per tie */
                }
            memcpy(lane, vl, sizeof(lane));
            for (int h = 1; h < ROW_NV; h++)
                vt[0] += vt[h];
            for (int j = 0; j < ROW_W; j++)
                nties += (int64_t)vt[0][j];
        }
#elif defined(ML__ROW_VECTORS)
        {
            /* float64: vmath.h's own exp, by a plain loop over whole blocks of the row (piece by
             * piece) that the compiler vectorises as in fast.c, then the lanes. */
            REAL e[ML__ROW_PIECE];
            FN(row_vec) vl[ROW_NV];
            for (int h = 0; h < ROW_NV; h++)
                vl[h] = ROW_SPLAT(R(0));
            while (len - c >= ML__ROW_LANES) {
                int64_t k = (len - c) / ML__ROW_LANES * ML__ROW_LANES;
                k = k < ML__ROW_PIECE ? k : ML__ROW_PIECE;
                const REAL *xp = x + c;
                for (int64_t i = 0; i < k; i++) {
                    REAL d = m - xp[i];
                    e[i] = VMK(ml__exp_neg)(d == R(0) ? out_of_range : d); /* NaN shows here */
                    nties += d == R(0);
                }
                for (int64_t i = 0; i < k; i += ML__ROW_LANES)
                    for (int h = 0; h < ROW_NV; h++)
                        vl[h] += ROW_LOAD(e + i + h * ROW_W);
                c += k;
            }
            memcpy(lane, vl, sizeof(lane));
        }
#endif
        for (; c < len; c++) {
            REAL d = m - x[c];
            lane[c % ML__ROW_LANES] += VMK(ml__exp_neg)(d == R(0) ? out_of_range : d);
            nties += d == R(0);
        }
        s = FN(lanes_total)(lane);
        ties = (REAL)nties;
    } else {
        for (int64_t c = 0; c < len; c++) {
            if (x[c * stride] > m)
                m = x[c * stride];
            if (x[c * stride] < lo)
                lo = x[c * stride];
        }
        r.m = m;
        r.lo = lo;
        if (isinf(m)) {
            r.l = m - m; /* NaN */
            return r;
        }
        for (int64_t c = 0; c < len; c++) {
            REAL d = m - x[c * stride];
            s += VMK(ml__exp_neg)(d == R(0) ? out_of_range : d);
            ties += d == R(0) ? R(1) : R(0);
        }
    }
    /* ties >= 1: the maximum is an element. */
    r.l = VMK(ml__log1p)((ties - R(1)) + s);
    return r;
}

/* sum y_c (-log_softmax(x)_c) of a row, y smoothed to y (1 - ls) + ls / K when `smooth`. */
static REAL FN(row_xent)(const REAL *x, const REAL *y, int64_t len, int64_t stride,
                         struct FN(row_lse) r, int smooth, REAL ls, REAL lsk)
{
    REAL lane[ML__ROW_LANES] = {0};
    int64_t c = 0;
#ifdef ML__ROW_VECTORS
    if (stride == 1) {
        FN(row_vec) acc[ROW_NV];
        const FN(row_vec) vm = ROW_SPLAT(r.m), vl = ROW_SPLAT(r.l);
        for (int h = 0; h < ROW_NV; h++)
            acc[h] = ROW_SPLAT(R(0));
        if (!smooth)
            for (; c + ML__ROW_LANES <= len; c += ML__ROW_LANES)
                for (int h = 0; h < ROW_NV; h++)
                    acc[h] +=
                        ROW_LOAD(y + c + h * ROW_W) * ((vm - ROW_LOAD(x + c + h * ROW_W)) + vl);
        else {
            const FN(row_vec) keep = ROW_SPLAT(R(1) - ls), add = ROW_SPLAT(lsk);
            for (; c + ML__ROW_LANES <= len; c += ML__ROW_LANES)
                for (int h = 0; h < ROW_NV; h++) {
                    FN(row_vec) yv = ROW_LOAD(y + c + h * ROW_W) * keep + add;
                    acc[h] += yv * ((vm - ROW_LOAD(x + c + h * ROW_W)) + vl);
                }
        }
        memcpy(lane, acc, sizeof(lane));
    }
#else
    if (stride == 1 && !smooth)
        for (; c + ML__ROW_LANES <= len; c += ML__ROW_LANES)
            for (int j = 0; j < ML__ROW_LANES; j++)
                lane[j] += y[c + j] * FN(neg_log_softmax)(x[c + j], r);
    else if (stride == 1)
        for (; c + ML__ROW_LANES <= len; c += ML__ROW_LANES)
            for (int j = 0; j < ML__ROW_LANES; j++)
                lane[j] += (y[c + j] * (R(1) - ls) + lsk) * FN(neg_log_softmax)(x[c + j], r);
#endif
    for (; c < len; c++) {
        REAL yc = y[c * stride];
        if (smooth)
            yc = yc * (R(1) - ls) + lsk;
        lane[c % ML__ROW_LANES] += yc * FN(neg_log_softmax)(x[c * stride], r);
    }
    return FN(lanes_total)(lane);
}

/* Whether a row holds a NaN or an infinity. */
static int FN(row_non_finite)(const REAL *x, int64_t len, int64_t stride)
{
    int bad = 0;
    for (int64_t c = 0; c < len; c++)
        bad |= !(x[c * stride] - x[c * stride] == R(0));
    return bad;
}

/*
 * One sample of the softmax family: the row of `len` classes at pred + base, stride inner.
 * Its loss goes to *out, torch's denominator to *den. *nonfinite is set when the row holds a
 * -inf or the loss did not read it all (an ignored target): a non-finite input that its loss
 * may not show (the fused path looks for the culprit then; anything else non-finite makes
 * the loss non-finite).
 */
static inline ML__ALWAYS_INLINE int FN(softmax_row)(const struct ml__kctx *k, int64_t sample,
                                                    int64_t base, double *out, double *den,
                                                    int64_t *bad_index, int *nonfinite)
{
    const REAL *x = (const REAL *)k->pred + base;
    const REAL *y = k->sparse ? NULL : (const REAL *)k->labels + base;
    const int64_t len = k->len, st = k->inner;
    REAL ls = R(k->label_smoothing);

    switch (k->id) {
    case ML__TF_SOFTMAX_CE:
    case ML__K3_CCE:
        if (k->id == ML__TF_SOFTMAX_CE || k->from_logits) {
            /* softmax_cross_entropy_with_logits: -sum y * log_softmax(x). Smoothing:
             * y (1 - ls) + ls / K (TF: only when ls > 0; Keras: when ls != 0). */
            int smooth =
                k->id == ML__TF_SOFTMAX_CE ? k->label_smoothing > 0 : k->label_smoothing != 0;
            struct FN(row_lse) r = FN(row_logsumexp)(x, len, st);
            *nonfinite |= r.lo == -INFINITY;
            *out = (double)FN(row_xent)(x, y, len, st, r, smooth, ls, ls / R(k->smoothing_classes));
        } else {
            /* Keras categorical_crossentropy on probabilities: renormalise the row, clip
             * to [eps, 1 - eps], -sum y log o. */
            const REAL eps = R(1e-7), hi = R(1) - eps;
            REAL s = R(0);
            for (int64_t c = 0; c < len; c++)
                s += x[c * st];
            REAL acc = R(0);
            for (int64_t c = 0; c < len; c++) {
                REAL yc = y[c * st];
                if (k->label_smoothing != 0)
                    yc = yc * (R(1) - ls) + ls / R(k->smoothing_classes);
                REAL o = x[c * st] / s;
                o = o < eps ? eps : (o > hi ? hi : o);
                acc += yc * log(o);
            }
            *out = (double)(-acc);
        }
        return 0;
    case ML__TF_SPARSE_SOFTMAX_CE:
    case ML__TORCH_CE: {
        struct FN(row_lse) r = FN(row_logsumexp)(x, len, st);
        *nonfinite |= r.lo == -INFINITY;
        if (!k->sparse) {
            /* torch cross_entropy with probability targets (LossNLL.cpp
             * cross_entropy_loss_prob_target): -sum_c w_c t_c logp_c, t smoothed. Without
             * class weights (w_c t_c = t_c exactly), the rows of the TF loss. */
            if (!k->class_weight) {
                *out = (double)FN(row_xent)(x, y, len, st, r, ls > 0, ls, ls / R(len));
                *den = 1;
                return 0;
            }
            REAL acc = R(0);
            for (int64_t c = 0; c < len; c++) {
                REAL t = y[c * st];
                if (ls > 0)
                    t = t * (R(1) - ls) + ls / R(len);
                REAL w = k->class_weight ? R(k->class_weight[c]) : R(1);
                acc += w * t * FN(neg_log_softmax)(x[c * st], r);
            }
            *out = (double)acc;
            *den = 1;
            return 0;
        }
        /* Class-index targets. */
        const int64_t *idx = (const int64_t *)k->labels;
        int64_t label = idx[sample];
        if (k->id == ML__TORCH_CE && label == k->ignore_index) {
            *nonfinite |= FN(row_non_finite)(x, len, st);
            *out = 0;
            *den = 0;
            return 0;
        }
        if (label < 0 || label >= len) {
            *bad_index = sample;
            return ML_ELABEL;
        }
        REAL nlp = FN(neg_log_softmax)(x[label * st], r);
        if (k->id == ML__TF_SPARSE_SOFTMAX_CE) {
            *out = (double)nlp;
            return 0;
        }
        /* LossNLL.cpp nll_loss / cross_entropy_loss_label_smoothing. */
        REAL w = k->class_weight ? R(k->class_weight[label]) : R(1);
        REAL nll = w * nlp;
        if (ls > 0) {
            REAL smooth = R(0);
            for (int64_t c = 0; c < len; c++) {
                REAL wc = k->class_weight ? R(k->class_weight[c]) : R(1);
                smooth += wc * FN(neg_log_softmax)(x[c * st], r);
            }
            nll = (R(1) - ls) * nll + (ls / R(len)) * smooth;
        }
        *out = (double)nll;
        *den = (double)w;
        return 0;
    }
    default:
        return 0;
    }
}

int FN(ml__pointwise)(const struct ml__kctx *k, double *out, double *den, int64_t *bad_index)
{
    const REAL *z = (const REAL *)k->labels;
    const REAL *x = (const REAL *)k->pred;

    switch (k->id) {
    case ML__TF_SOFTMAX_CE:
    case ML__TF_SPARSE_SOFTMAX_CE:
    case ML__TORCH_CE:
    case ML__K3_CCE:
        for (int64_t o = 0; o < k->outer; o++)
            for (int64_t in = 0; in < k->inner; in++) {
                int64_t sample = o * k->inner + in;
                double unused = 0;
                int nonfinite = 0; /* the views were checked before */
                int rc = FN(softmax_row)(k, sample, o * k->len * k->inner + in, &out[sample],
                                         den ? &den[sample] : &unused, bad_index, &nonfinite);
                if (rc)
                    return rc;
            }
        return 0;
    case ML__K3_BCE:
    case ML__K2_BCE:
    case ML__K3_FOCAL:
    case ML__K2_FOCAL:
        /* Keras: the elementwise loss averaged over `axis` (ops.mean). */
        for (int64_t o = 0; o < k->outer; o++)
            for (int64_t in = 0; in < k->inner; in++) {
                double acc = 0;
                for (int64_t j = 0; j < k->len; j++) {
                    int64_t i = (o * k->len + j) * k->inner + in;
                    acc += (double)FN(elementwise)(k, i, z[i], x[i]);
                }
                out[o * k->inner + in] = (double)(REAL)(acc / (double)k->len);
            }
        return 0;
    case ML__TF_CWL:
        for (int64_t i = 0; i < k->n; i++)
            out[i] = (double)x[i];
        return 0;
    case ML__ASL: {
        /* The parameters (and log(eps)) once for the tensor, not per element. */
        const struct FN(asl_params) a =
            FN(asl_params_of)(k->clip, k->epsilon, k->gamma_pos, k->gamma_neg, k->allow_non_finite);
        for (int64_t i = 0; i < k->n; i++)
            out[i] = (double)FN(asl)(z[i], x[i], a);
        return 0;
    }
    default:
        for (int64_t i = 0; i < k->n; i++)
            out[i] = (double)FN(elementwise)(k, i, z[i], x[i]);
        return 0;
    }
}

/* The fused path of the softmax family (softmax.h): each row's loss, weighed and added to
 * its block's lanes as reduce.c adds the general path's array (ml__lanes_add). */
void FN(ml__softmax_sums)(const struct ml__softmax *p, int64_t task, struct ml__softmax_sums *out)
{
    const struct ml__kctx *k = p->k;
    const REAL *w = (const REAL *)p->w;
    const int den_counts = p->den == ML__DEN_COUNT || p->den == ML__DEN_NONZERO;
    const int den_sums = !den_counts && p->den != ML__DEN_ONE;
    const int torch = k->id == ML__TORCH_CE; /* its denominators are the kernel's */
    const int64_t first = task * p->group;
    for (int64_t b = first; b < first + p->group && b * ML__BLOCK < p->n; b++) {
        struct ml__softmax_sums *o = &out[b];
        const int64_t begin = b * ML__BLOCK;
        const int64_t end = p->n - begin < ML__BLOCK ? p->n : begin + ML__BLOCK;
        memset(o, 0, sizeof(*o));
        o->bad_label = -1;
        int64_t oi = begin / k->inner, in = begin % k->inner;
        for (int64_t i = begin; i < end; i++) {
            double v = 0, d = 0, wi = 1.0;
            int64_t bad = -1;
            if (FN(softmax_row)(k, i, oi * k->len * k->inner + in, &v, &d, &bad, &o->nonfinite)) {
                if (o->bad_label < 0)
                    o->bad_label = bad;
                v = 0;
            }
            if (++in == k->inner) {
                in = 0;
                oi++;
            }
            if (p->wmode != ML__SW_NONE)
                wi = (double)w[p->wmode == ML__SW_DENSE ? i : 0];
            double wv = v * wi;
            double dd = p->den == ML__DEN_COUNT      ? 1.0
                        : p->den == ML__DEN_NONZERO  ? (wi != 0 ? 1.0 : 0.0)
                        : p->den == ML__DEN_EXPLICIT ? d
                                                     : wi;
            double w_eff = torch ? d : wi;
            const int j = (int)(i & (ML__LANES - 1));
            o->num[j] += wv;
            if (den_counts)
                o->den_count += dd != 0;
            else if (den_sums)
                o->den[j] += dd;
            if (p->want_sw)
                o->sw[j] += w_eff;
            o->nonzero += w_eff != 0;
        }
    }
}
