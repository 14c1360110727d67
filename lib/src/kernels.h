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
#include <tgmath.h>

#include "internal.h"
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
 * a fixed order: the compiler turns the lanes into SIMD registers, and the bits do not depend
 * on the instruction set. */
#define ML__ROW_LANES 16

static REAL FN(lanes_total)(const REAL *lane)
{
    REAL t = R(0);
    for (int j = 0; j < ML__ROW_LANES; j++)
        t += lane[j];
    return t;
}

/*
 * The log-softmax of a row, as -log_softmax(x)_c = (m - x_c) + l: m the row's maximum and
 * l = log(sum exp(x - m)) = log1p(r), r the sum without the maximum's own term exp(0) = 1.
 * Two non-negative terms: nothing cancels, so the small losses of confident rows keep their
 * digits (x_c - (m + log s) loses an ulp of m there). A row whose maximum is infinite (+inf
 * anywhere, or every element -inf or NaN) is NaN throughout, as in TF and torch, whose
 * x - m is then inf - inf; an empty row's sums are empty.
 */
struct FN(row_lse) {
    REAL m, l;
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
    struct FN(row_lse) r = {-INFINITY, R(0)};
    const REAL out_of_range = R(1e30); /* exp(-1e30) = 0 */
    REAL m = -INFINITY, s = R(0), ties = R(0);
    if (stride == 1) {
        REAL mx[ML__ROW_LANES], lane[ML__ROW_LANES] = {0}, tie[ML__ROW_LANES] = {0};
        for (int j = 0; j < ML__ROW_LANES; j++)
            mx[j] = -INFINITY;
        int64_t c = 0;
        for (; c + ML__ROW_LANES <= len; c += ML__ROW_LANES)
            for (int j = 0; j < ML__ROW_LANES; j++)
                mx[j] = x[c + j] > mx[j] ? x[c + j] : mx[j]; /* NaN is left out here */
        for (; c < len; c++)
            mx[c % ML__ROW_LANES] = x[c] > mx[c % ML__ROW_LANES] ? x[c] : mx[c % ML__ROW_LANES];
        for (int j = 0; j < ML__ROW_LANES; j++)
            m = mx[j] > m ? mx[j] : m;
        r.m = m;
        if (isinf(m)) {
            r.l = m - m; /* NaN */
            return r;
        }
        for (c = 0; c + ML__ROW_LANES <= len; c += ML__ROW_LANES)
            for (int j = 0; j < ML__ROW_LANES; j++) {
                REAL d = m - x[c + j];
                lane[j] += VMK(ml__exp_neg)(d == R(0) ? out_of_range : d); /* NaN shows here */
                tie[j] += d == R(0) ? R(1) : R(0);
            }
        for (; c < len; c++) {
            REAL d = m - x[c];
            lane[c % ML__ROW_LANES] += VMK(ml__exp_neg)(d == R(0) ? out_of_range : d);
            tie[c % ML__ROW_LANES] += d == R(0) ? R(1) : R(0);
        }
        s = FN(lanes_total)(lane);
        ties = FN(lanes_total)(tie);
    } else {
        for (int64_t c = 0; c < len; c++)
            if (x[c * stride] > m)
                m = x[c * stride];
        r.m = m;
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
    if (stride == 1 && !smooth)
        for (; c + ML__ROW_LANES <= len; c += ML__ROW_LANES)
            for (int j = 0; j < ML__ROW_LANES; j++)
                lane[j] += y[c + j] * FN(neg_log_softmax)(x[c + j], r);
    else if (stride == 1)
        for (; c + ML__ROW_LANES <= len; c += ML__ROW_LANES)
            for (int j = 0; j < ML__ROW_LANES; j++)
                lane[j] += (y[c + j] * (R(1) - ls) + lsk) * FN(neg_log_softmax)(x[c + j], r);
    for (; c < len; c++) {
        REAL yc = y[c * stride];
        if (smooth)
            yc = yc * (R(1) - ls) + lsk;
        lane[c % ML__ROW_LANES] += yc * FN(neg_log_softmax)(x[c * stride], r);
    }
    return FN(lanes_total)(lane);
}

/* One sample of the softmax family: the row of `len` classes at pred + base, stride inner. */
static int FN(softmax_row)(const struct ml__kctx *k, int64_t sample, int64_t base, double *out,
                           double *den, int64_t *bad_index)
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
            out[sample] =
                (double)FN(row_xent)(x, y, len, st, r, smooth, ls, ls / R(k->smoothing_classes));
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
            out[sample] = (double)(-acc);
        }
        return 0;
    case ML__TF_SPARSE_SOFTMAX_CE:
    case ML__TORCH_CE: {
        struct FN(row_lse) r = FN(row_logsumexp)(x, len, st);
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
            out[sample] = (double)acc;
            den[sample] = 1;
            return 0;
        }
        /* Class-index targets. */
        const int64_t *idx = (const int64_t *)k->labels;
        int64_t label = idx[sample];
        if (k->id == ML__TORCH_CE && label == k->ignore_index) {
            out[sample] = 0;
            den[sample] = 0;
            return 0;
        }
        if (label < 0 || label >= len) {
            *bad_index = sample;
            return ML_ELABEL;
        }
        REAL nlp = FN(neg_log_softmax)(x[label * st], r);
        if (k->id == ML__TF_SPARSE_SOFTMAX_CE) {
            out[sample] = (double)nlp;
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
        out[sample] = (double)nll;
        den[sample] = (double)w;
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
                int rc =
                    FN(softmax_row)(k, sample, o * k->len * k->inner + in, out, den, bad_index);
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
