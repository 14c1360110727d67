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
 * a fixed order: the bits do not depend on the instruction set. */
#define ML__ROW_LANES 16

static REAL FN(lanes_total)(const REAL *lane)
{
    REAL t = R(0);
    for (int j = 0; j < ML__ROW_LANES; j++)
        t += lane[j];
    return t;
}

/*
 * The lanes of a contiguous row in vectors of the instruction set's width (GCC's vector
 * extensions): ROW_NV vectors of ROW_W lanes, lane j in vector j / ROW_W. Only additions,
 * subtractions, multiplications, compares and bitwise selects are done on them, each exact
 * per lane, so every instruction set gives the bits of the scalar loops below; the vectoriser
 * alone left the 16-lane loops scalar. The exp is taken by a plain loop over the row, which
 * it does vectorise (as in fast.c).
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

/* Every lane of the ROW_NV vectors v (a vector return would change the ABI between builds). */
static inline void FN(row_fill)(FN(row_vec) * r, REAL v)
{
    for (int h = 0; h < ROW_NV; h++)
        for (int j = 0; j < ROW_W; j++)
            r[h][j] = v;
}
#endif

/* Elements whose exp one piece of a row holds (a multiple of the lanes: element c of the
 * row stays in lane c mod 16). */
#define ML__ROW_PIECE 512

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
        REAL mx[ML__ROW_LANES], mn[ML__ROW_LANES], lane[ML__ROW_LANES] = {0},
                                                   tie[ML__ROW_LANES] = {0};
        int64_t c = 0;
#ifdef ML__ROW_VECTORS
        FN(row_vec) vmx[ROW_NV], vmn[ROW_NV];
        FN(row_fill)(vmx, -INFINITY);
        FN(row_fill)(vmn, INFINITY);
        for (; c + ML__ROW_LANES <= len; c += ML__ROW_LANES)
            for (int h = 0; h < ROW_NV; h++) {
                FN(row_vec) v = ROW_LOAD(x + c + h * ROW_W);
                vmx[h] = ROW_SELECT(v > vmx[h], v, vmx[h]); /* NaN is left out here */
                vmn[h] = ROW_SELECT(v < vmn[h], v, vmn[h]);
            }
        memcpy(mx, vmx, sizeof(mx));
        memcpy(mn, vmn, sizeof(mn));
#else
        for (int j = 0; j < ML__ROW_LANES; j++) {
            mx[j] = -INFINITY;
            mn[j] = INFINITY;
        }
#endif
        for (; c < len; c++) {
            mx[c % ML__ROW_LANES] = x[c] > mx[c % ML__ROW_LANES] ? x[c] : mx[c % ML__ROW_LANES];
            mn[c % ML__ROW_LANES] = x[c] < mn[c % ML__ROW_LANES] ? x[c] : mn[c % ML__ROW_LANES];
        }
        for (int j = 0; j < ML__ROW_LANES; j++) {
            m = mx[j] > m ? mx[j] : m;
            lo = mn[j] < lo ? mn[j] : lo;
        }
        r.m = m;
        r.lo = lo;
        if (isinf(m)) {
            r.l = m - m; /* NaN */
            return r;
        }
        /* exp of the row piece by piece into e (the tie flags into t), then the lanes. */
        REAL e[ML__ROW_PIECE], t[ML__ROW_PIECE];
        for (int64_t c0 = 0; c0 < len; c0 += ML__ROW_PIECE) {
            int64_t k = len - c0 < ML__ROW_PIECE ? len - c0 : ML__ROW_PIECE;
            const REAL *xp = x + c0;
            for (int64_t i = 0; i < k; i++) {
                REAL d = m - xp[i];
                e[i] = VMK(ml__exp_neg)(d == R(0) ? out_of_range : d); /* NaN shows here */
                t[i] = d == R(0) ? R(1) : R(0);
            }
            int64_t i = 0;
#ifdef ML__ROW_VECTORS
            FN(row_vec) vl[ROW_NV], vt[ROW_NV];
            memcpy(vl, lane, sizeof(lane));
            memcpy(vt, tie, sizeof(tie));
            for (; i + ML__ROW_LANES <= k; i += ML__ROW_LANES)
                for (int h = 0; h < ROW_NV; h++) {
                    vl[h] += ROW_LOAD(e + i + h * ROW_W);
                    vt[h] += ROW_LOAD(t + i + h * ROW_W);
                }
            memcpy(lane, vl, sizeof(lane));
            memcpy(tie, vt, sizeof(tie));
#endif
            for (; i < k; i++) {
                lane[i % ML__ROW_LANES] += e[i];
                tie[i % ML__ROW_LANES] += t[i];
            }
        }
        s = FN(lanes_total)(lane);
        ties = FN(lanes_total)(tie);
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
        FN(row_vec) acc[ROW_NV], vm[1], vl[1], keep[1], add[1];
        FN(row_fill)(acc, R(0));
        for (int j = 0; j < ROW_W; j++) {
            vm[0][j] = r.m;
            vl[0][j] = r.l;
            keep[0][j] = R(1) - ls;
            add[0][j] = lsk;
        }
        for (; c + ML__ROW_LANES <= len; c += ML__ROW_LANES)
            for (int h = 0; h < ROW_NV; h++) {
                FN(row_vec) yv = ROW_LOAD(y + c + h * ROW_W);
                if (smooth)
                    yv = yv * keep[0] + add[0];
                acc[h] += yv * ((vm[0] - ROW_LOAD(x + c + h * ROW_W)) + vl[0]);
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
static int FN(softmax_row)(const struct ml__kctx *k, int64_t sample, int64_t base, double *out,
                           double *den, int64_t *bad_index, int *nonfinite)
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
             * cross_entropy_loss_prob_target): -sum_c w_c t_c logp_c, t smoothed. */
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

/* The fused path of the softmax family (softmax.h): each row's loss, weighed and summed as
 * reduce.c sums the general path's array, in its order. */
void FN(ml__softmax_sums)(const struct ml__softmax *p, int64_t chunk, struct ml__softmax_sums *o)
{
    const struct ml__kctx *k = p->k;
    const int64_t begin = chunk * ML__CHUNK,
                  end = p->n - begin < ML__CHUNK ? p->n : begin + ML__CHUNK;
    const REAL *w = (const REAL *)p->w;
    const int den_counts = p->den == ML__DEN_COUNT || p->den == ML__DEN_NONZERO;
    const int den_sums = !den_counts && p->den != ML__DEN_ONE;
    const int torch = k->id == ML__TORCH_CE; /* its denominators are the kernel's */
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
        ml__lanes_add(&o->num, i, wv);
        if (den_counts)
            o->den_count += dd != 0;
        else if (den_sums)
            ml__lanes_add(&o->den, i, dd);
        if (p->want_sw)
            ml__lanes_add(&o->sw, i, w_eff);
        o->nonzero += w_eff != 0;
    }
}
