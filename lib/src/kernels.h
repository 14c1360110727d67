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
 * Sources of the formulas are cited per loss; ../shared/golden/SEMANTICS.md collects them.
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

/* log(1 + exp(-|x|)): the stable tail shared by the sigmoid family, by the library's own
 * functions (vmath.h, within 2 ulp of the correctly rounded value on every input tested). */
static inline REAL FN(softplus_neg_abs)(REAL x)
{
    return VMK(ml__softplus_neg)(fabs(x));
}

/* tf.nn.sigmoid_cross_entropy_with_logits (nn_impl.py): max(x,0) - x*z + log1p(exp(-|x|)). */
static inline REAL FN(tf_sigmoid_xent)(REAL z, REAL x)
{
    REAL relu = x >= R(0) ? x : R(0);
    return relu - x * z + FN(softplus_neg_abs)(x);
}

/* log(sigmoid(x)) = min(x,0) - log1p(exp(-|x|)) (ATen log_sigmoid). */
static inline REAL FN(log_sigmoid)(REAL x)
{
    REAL m = x < R(0) ? x : R(0);
    return m - FN(softplus_neg_abs)(x);
}

/* torch binary_cross_entropy_with_logits (ATen Loss.cpp):
 * (1 - z) * x - log_weight * log_sigmoid(x), log_weight = 1 + (pos_weight - 1) * z. */
static inline REAL FN(torch_bce)(REAL z, REAL x, REAL log_weight)
{
    return (R(1) - z) * x - log_weight * FN(log_sigmoid)(x);
}

static inline REAL FN(sigmoid)(REAL x)
{
    if (x >= R(0))
        return R(1) / (R(1) + exp(-x));
    REAL e = exp(x);
    return e / (R(1) + e);
}

/* Keras 3 backend binary_crossentropy on probabilities: clip to [eps, 1-eps], then
 * -(y log o + (1-y) log(1-o)). Keras 2 also adds eps inside both logs. */
static inline REAL FN(keras_bce_probs)(REAL y, REAL p, int keras2)
{
    const REAL eps = R(1e-7);
    const REAL hi = R(1) - eps;
    REAL o = p < eps ? eps : (p > hi ? hi : p);
    if (o != o)
        o = p; /* clip_by_value passes NaN through */
    if (keras2)
        return -(y * log(o + eps) + (R(1) - y) * log(R(1) - o + eps));
    return -(y * log(o) + (R(1) - y) * log(R(1) - o));
}

static inline REAL FN(smooth_binary)(REAL y, REAL ls)
{
    return y * (R(1) - ls) + R(0.5) * ls;
}

/* The elementwise value of the losses whose output keeps the input shape, and of the
 * Keras binary losses before their mean over `axis`. */
static REAL FN(elementwise)(const struct ml__kctx *k, int64_t i, REAL z, REAL x)
{
    switch (k->id) {
    case ML__TF_SIGMOID_CE: {
        /* losses_impl.sigmoid_cross_entropy: smoothing only when label_smoothing > 0. */
        if (k->label_smoothing > 0)
            z = FN(smooth_binary)(z, R(k->label_smoothing));
        return FN(tf_sigmoid_xent)(z, x);
    }
    case ML__TFNN_SIGMOID:
        return FN(tf_sigmoid_xent)(z, x);
    case ML__TFNN_WEIGHTED: {
        /* nn_impl.weighted_cross_entropy_with_logits:
         * (1 - z) x + (1 + (q - 1) z) (log1p(exp(-|x|)) + max(-x, 0)). */
        REAL q = ((const REAL *)k->aux)[i];
        REAL l = R(1) + (q - R(1)) * z;
        REAL neg = -x > R(0) ? -x : R(0);
        return (R(1) - z) * x + l * (FN(softplus_neg_abs)(x) + neg);
    }
    case ML__TF_LOG_LOSS: {
        /* losses_impl.log_loss: epsilon added inside the logs, no clipping. */
        REAL eps = R(k->epsilon);
        return -(z * VMK(ml__log)(x + eps)) - (R(1) - z) * VMK(ml__log)(R(1) - x + eps);
    }
    case ML__TF_MSE: {
        REAL d = x - z;
        return d * d;
    }
    case ML__TF_ABSDIFF:
        return fabs(x - z);
    case ML__TF_HUBER: {
        /* losses_impl.huber_loss: 0.5 q^2 + delta (|e| - q), q = min(|e|, delta). */
        REAL delta = R(k->delta);
        REAL a = fabs(x - z);
        REAL q = a < delta ? a : delta;
        REAL lin = a - q;
        return R(0.5) * (q * q) + delta * lin;
    }
    case ML__TF_HINGE: {
        /* losses_impl.hinge_loss: relu(1 - (2z - 1) x). */
        REAL y = R(2) * z - R(1);
        REAL m = R(1) - y * x;
        return m > R(0) ? m : R(0);
    }
    case ML__TF_CWL:
        return x;
    case ML__TORCH_BCE: {
        REAL lw = k->aux ? R(1) + (((const REAL *)k->aux)[i] - R(1)) * z : R(1);
        return FN(torch_bce)(z, x, lw);
    }
    case ML__TV_FOCAL: {
        /* torchvision.ops.sigmoid_focal_loss. */
        REAL p = VMK(ml__sigmoid)(x);
        REAL ce = FN(torch_bce)(z, x, R(1));
        REAL p_t = p * z + (R(1) - p) * (R(1) - z);
        /* Small integer gammas (2 is the default) by multiplication, as fast.c does. */
        REAL b = R(1) - p_t, g = R(k->gamma);
        REAL f = g == R(2) ? b * b : g == R(1) ? b : g == R(0) ? R(1) : pow(b, g);
        REAL loss = ce * f;
        if (k->alpha >= 0) {
            REAL a = R(k->alpha);
            loss = (a * z + (R(1) - a) * (R(1) - z)) * loss;
        }
        return loss;
    }
    case ML__ASL: {
        /* ASL AsymmetricLoss.forward (Alibaba-MIIL/ASL src/loss_functions/losses.py);
         * returns the positive term -L of its -sum(L). */
        REAL xs_pos = VMK(ml__sigmoid)(x);
        REAL xs_neg = R(1) - xs_pos;
        if (k->clip > 0) {
            xs_neg = xs_neg + R(k->clip);
            if (xs_neg > R(1))
                xs_neg = R(1);
        }
        REAL eps = R(k->epsilon);
        REAL lp = z * VMK(ml__log)(xs_pos > eps ? xs_pos : eps);
        REAL ln = (R(1) - z) * VMK(ml__log)(xs_neg > eps ? xs_neg : eps);
        REAL l = lp + ln;
        if (k->gamma_neg > 0 || k->gamma_pos > 0) {
            REAL pt = xs_pos * z + xs_neg * (R(1) - z);
            REAL g = R(k->gamma_pos) * z + R(k->gamma_neg) * (R(1) - z);
            /* Small integer powers (binary labels with the default gammas 4 and 1) by
             * multiplication, as fast.c does. */
            l = l * (POWI_SMALL_K(g) ? VMK(ml__powi4)(R(1) - pt, g) : pow(R(1) - pt, g));
        }
        return -l;
    }
    case ML__K3_BCE:
    case ML__K2_BCE: {
        if (k->label_smoothing != 0)
            z = FN(smooth_binary)(z, R(k->label_smoothing));
        if (k->from_logits)
            return FN(tf_sigmoid_xent)(z, x);
        return FN(keras_bce_probs)(z, x, k->id == ML__K2_BCE);
    }
    case ML__K3_FOCAL: {
        /* keras/src/losses/losses.py binary_focal_crossentropy: the BCE term always takes
         * the clipped-probability path, even from logits. */
        if (k->label_smoothing != 0)
            z = FN(smooth_binary)(z, R(k->label_smoothing));
        REAL p = k->from_logits ? FN(sigmoid)(x) : x;
        REAL bce = FN(keras_bce_probs)(z, p, 0);
        REAL p_t = z * p + (R(1) - z) * (R(1) - p);
        REAL fl = pow(R(1) - p_t, R(k->gamma)) * bce;
        if (k->apply_class_balancing) {
            REAL a = R(k->alpha);
            fl = (z * a + (R(1) - z) * (R(1) - a)) * fl;
        }
        return fl;
    }
    case ML__K2_FOCAL: {
        /* keras/backend.py binary_focal_crossentropy (Keras 2): exact BCE from logits. */
        if (k->label_smoothing != 0)
            z = FN(smooth_binary)(z, R(k->label_smoothing));
        REAL p = k->from_logits ? FN(sigmoid)(x) : x;
        REAL p_t = z * p + (R(1) - z) * (R(1) - p);
        REAL bce = k->from_logits ? FN(tf_sigmoid_xent)(z, x) : FN(keras_bce_probs)(z, x, 1);
        REAL fl = pow(R(1) - p_t, R(k->gamma)) * bce;
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

/* log(sum(exp(x))) of one strided row, max-shifted so that no term overflows; exp(x - m) is
 * the library's exp(-(m - x)) (vmath.h), m - x >= 0. */
static REAL FN(row_logsumexp)(const REAL *x, int64_t len, int64_t stride)
{
    if (len <= 0)
        return -INFINITY; /* log of an empty sum; the row's loss is then an empty sum too */
    REAL m = -INFINITY, s = R(0);
    if (stride == 1) {
        REAL mx[ML__ROW_LANES], lane[ML__ROW_LANES] = {0};
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
        if (isinf(m))
            return m; /* all -inf (or NaN) gives -inf; any +inf gives +inf (NaN downstream) */
        for (c = 0; c + ML__ROW_LANES <= len; c += ML__ROW_LANES)
            for (int j = 0; j < ML__ROW_LANES; j++)
                lane[j] += VMK(ml__exp_neg)(m - x[c + j]); /* a NaN shows here */
        for (; c < len; c++)
            lane[c % ML__ROW_LANES] += VMK(ml__exp_neg)(m - x[c]);
        s = FN(lanes_total)(lane);
    } else {
        for (int64_t c = 0; c < len; c++)
            if (x[c * stride] > m)
                m = x[c * stride];
        if (isinf(m))
            return m;
        for (int64_t c = 0; c < len; c++)
            s += VMK(ml__exp_neg)(m - x[c * stride]);
    }
    /* s >= 1 (the maximum contributes exp(0)), or NaN. */
    return m + VMK(ml__log)(s);
}

/* -sum y_c (x_c - lse) of a row, y smoothed to y (1 - ls) + ls / K when `smooth`. */
static REAL FN(row_xent)(const REAL *x, const REAL *y, int64_t len, int64_t stride, REAL lse,
                         int smooth, REAL ls, REAL lsk)
{
    REAL lane[ML__ROW_LANES] = {0};
    int64_t c = 0;
    if (stride == 1 && !smooth)
        for (; c + ML__ROW_LANES <= len; c += ML__ROW_LANES)
            for (int j = 0; j < ML__ROW_LANES; j++)
                lane[j] += y[c + j] * (x[c + j] - lse);
    else if (stride == 1)
        for (; c + ML__ROW_LANES <= len; c += ML__ROW_LANES)
            for (int j = 0; j < ML__ROW_LANES; j++)
                lane[j] += (y[c + j] * (R(1) - ls) + lsk) * (x[c + j] - lse);
    for (; c < len; c++) {
        REAL yc = y[c * stride];
        if (smooth)
            yc = yc * (R(1) - ls) + lsk;
        lane[c % ML__ROW_LANES] += yc * (x[c * stride] - lse);
    }
    return -FN(lanes_total)(lane);
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
            REAL lse = FN(row_logsumexp)(x, len, st);
            out[sample] =
                (double)FN(row_xent)(x, y, len, st, lse, smooth, ls, ls / R(k->smoothing_classes));
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
        REAL lse = FN(row_logsumexp)(x, len, st);
        if (!k->sparse) {
            /* torch cross_entropy with probability targets (LossNLL.cpp
             * cross_entropy_loss_prob_target): -sum_c w_c t_c logp_c, t smoothed. */
            REAL acc = R(0);
            for (int64_t c = 0; c < len; c++) {
                REAL t = y[c * st];
                if (ls > 0)
                    t = t * (R(1) - ls) + ls / R(len);
                REAL w = k->class_weight ? R(k->class_weight[c]) : R(1);
                acc += w * t * (x[c * st] - lse);
            }
            out[sample] = (double)(-acc);
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
        REAL logp = x[label * st] - lse;
        if (k->id == ML__TF_SPARSE_SOFTMAX_CE) {
            out[sample] = (double)(-logp);
            return 0;
        }
        /* LossNLL.cpp nll_loss / cross_entropy_loss_label_smoothing. */
        REAL w = k->class_weight ? R(k->class_weight[label]) : R(1);
        REAL nll = -(w * logp);
        if (ls > 0) {
            REAL smooth = R(0);
            for (int64_t c = 0; c < len; c++) {
                REAL wc = k->class_weight ? R(k->class_weight[c]) : R(1);
                smooth += wc * (x[c * st] - lse);
            }
            nll = (R(1) - ls) * nll + (ls / R(len)) * (-smooth);
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
    default:
        for (int64_t i = 0; i < k->n; i++)
            out[i] = (double)FN(elementwise)(k, i, z[i], x[i]);
        return 0;
    }
}
