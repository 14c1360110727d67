/*
 * reduce.c -- weights times the pointwise loss, reduced as the framework reduces it.
 *
 * Every reduction is sum(loss * w) / sum(d) for a per-element denominator d (1, w,
 * [w != 0], or the kernel's own), so one pass serves the whole tensor, every row
 * (per_sample) and every class (per_class). Sums are compensated in double; the totals in
 * sixteen interleaved lanes (ml__lanes), the order fast.c reproduces with SIMD.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "reduce.h"
#include "tensor.h"

/*
 * TF/Keras divide_no_nan; torch divides plainly (0/0 = NaN). torch cross_entropy's mean
 * (ML__DEN_EXPLICIT) whose kept targets all have class weight 0 (none_weighted) is NaN
 * whatever the sum: with label smoothing ATen adds (1 - ls) * (sum w_y nll / sum w_y), which
 * is 0/0, to the smoothing term's x/0 (LossNLL.cpp cross_entropy_loss_label_smoothing), and
 * without it the whole is 0/0. Weights of both signs that sum to 0 divide plainly (torch:
 * +-inf).
 */
/* The one rule of every reduction's division (ml_sums_loss and the reductions below). */
static double ratio_value(int divides, int plain, int unweighted_is_nan, double num, double den,
                          int none_weighted)
{
    if (!divides)
        return num;
    if (den == 0 && !plain)
        return 0.0;
    if (den == 0 && unweighted_is_nan && none_weighted)
        return NAN;
    return num / den;
}

static double divide(const struct ml__reduction *red, double num, double den, int none_weighted)
{
    return ratio_value(1, red->nan_on_zero, red->den == ML__DEN_EXPLICIT, num, den,
                       none_weighted);
}

void ml__ratio_of(const struct ml__reduction *red, int elementwise, struct ml_ratio *out)
{
    out->reduction = red->name;
    out->divides = red->den != ML__DEN_ONE;
    out->plain_division = red->nan_on_zero;
    out->unweighted_is_nan = red->den == ML__DEN_EXPLICIT;
    out->elementwise = elementwise;
}

double ml_sums_loss(const struct ml_ratio *r, const struct ml_sums *s)
{
    return ratio_value(r->divides, r->plain_division, r->unweighted_is_nan, s->weighted_sum,
                       s->denominator, s->num_nonzero_weights == 0);
}

void ml_sums_add(struct ml_sums *into, const struct ml_sums *s)
{
    into->weighted_sum += s->weighted_sum;
    into->denominator += s->denominator;
    into->sum_weights += s->sum_weights;
    into->num_nonzero_weights += s->num_nonzero_weights;
    into->sum_sq += s->sum_sq;
    into->elements += s->elements;
    into->samples += s->samples;
}

struct group {
    int64_t count;
    int rank;
    int64_t shape[ML_MAX_RANK];
    struct ml__sum *num, *den; /* count each */
};

static int group_alloc(struct group *g, int64_t count)
{
    g->count = count;
    size_t n = count > 0 ? (size_t)count : 1;
    g->num = calloc(n, sizeof(*g->num));
    g->den = calloc(n, sizeof(*g->den));
    return g->num && g->den ? 0 : -1;
}

static void group_free(struct group *g)
{
    free(g->num);
    free(g->den);
}

/* ML_OUT_SUMS and ML_OUT_CLASS_SUMS: compensated sums of every additive part. */
struct parts {
    struct ml__sum num, den, sw, sq;
    int64_t nonzero, count;
};

static void parts_add(struct parts *p, double wv, double d, double w_eff, double sq)
{
    ml__sum_add(&p->num, wv);
    ml__sum_add(&p->den, d);
    ml__sum_add(&p->sw, w_eff);
    ml__sum_add(&p->sq, sq);
    p->nonzero += w_eff != 0;
    p->count++;
}

static void parts_emit(const struct parts *p, const struct ml__reduction *red, int64_t rows,
                       struct ml_sums *out)
{
    out->weighted_sum = ml__sum_get(&p->num);
    out->denominator = red->den == ML__DEN_ONE ? (double)p->count : ml__sum_get(&p->den);
    out->sum_weights = ml__sum_get(&p->sw);
    out->num_nonzero_weights = (double)p->nonzero;
    out->sum_sq = ml__sum_get(&p->sq);
    out->elements = (double)p->count;
    out->samples = (double)rows;
}

/* A group (per_sample, per_class) of torch cross_entropy with a zero denominator is taken as
 * one whose targets all have class weight 0: NaN. */
static int group_emit(const struct group *g, const struct ml__reduction *red, struct ml_array *out)
{
    out->rank = g->rank;
    memcpy(out->shape, g->shape, sizeof(out->shape));
    out->numel = g->count;
    out->data = malloc((size_t)(g->count > 0 ? g->count : 1) * sizeof(double));
    if (!out->data)
        return -1;
    for (int64_t i = 0; i < g->count; i++) {
        double num = ml__sum_get(&g->num[i]);
        out->data[i] = red->den == ML__DEN_ONE ? num : divide(red, num, ml__sum_get(&g->den[i]), 1);
    }
    return 0;
}

void ml__reduce_totals(const struct ml__reduction *red, double num, double den, double sum_w,
                       int64_t nonzero, int has_raw_sw, double raw_sw, struct ml_result *res)
{
    res->weighted_sum = num;
    res->sum_weights = sum_w;
    res->num_nonzero_weights = (double)nonzero;
    if (red->den == ML__DEN_RAW_SW && has_raw_sw)
        den = raw_sw;
    res->loss = red->den == ML__DEN_ONE ? num : divide(red, num, den, nonzero == 0);
}

int ml__reduce(const struct ml__reduce_in *in, struct ml_result *res, struct ml_error *err)
{
    const struct ml__reduction *red = in->red;
    const int64_t n = in->n;
    const int want_sample = (in->outputs & ML_OUT_PER_SAMPLE) != 0;
    const int want_class = (in->outputs & ML_OUT_PER_CLASS) != 0;
    const int want_sums = (in->outputs & ML_OUT_SUMS) != 0;
    const int want_class_sums = (in->outputs & ML_OUT_CLASS_SUMS) != 0;
    struct group by_sample = {0}, by_class = {0};
    struct parts total_parts;
    struct parts *class_parts = NULL;
    int rc = ML_ENOMEM;
    memset(&total_parts, 0, sizeof(total_parts));

    if ((want_sample || want_class || want_sums || want_class_sums) && red->den == ML__DEN_NONE)
        return ml__fail(err, ML_EOUTPUT, "outputs", -1,
                        "per_sample, per_class and sums apply the reduction to groups of "
                        "elements; reduction %s does not reduce",
                        red->name);
    if ((want_class || want_class_sums) && !in->elementwise)
        return ml__fail(err, ML_EOUTPUT, "outputs", -1,
                        "per_class needs an elementwise loss (one value per class); %s gives "
                        "one value per sample",
                        in->loss_name);

    /* Groups: an elementwise loss of shape [..., C] has rows (all but the last axis) and
     * classes (the last axis); a per-sample loss is its own rows. */
    int64_t row_len = 1;
    if (in->elementwise && in->rank > 0)
        row_len = in->shape[in->rank - 1];
    if (want_sample) {
        by_sample.rank = in->elementwise && in->rank > 0 ? in->rank - 1 : in->rank;
        memcpy(by_sample.shape, in->shape, sizeof(int64_t) * (size_t)by_sample.rank);
        rc = ml__check_output_size("outputs", "per_sample", by_sample.rank, by_sample.shape,
                                   in->max_elements, in->input_elements, err);
        if (rc)
            goto free_groups;
        rc = ML_ENOMEM;
        if (group_alloc(&by_sample, ml_shape_numel(by_sample.rank, by_sample.shape)))
            goto free_groups;
    }
    if (want_class) {
        by_class.rank = in->rank > 0 ? 1 : 0;
        by_class.shape[0] = row_len;
        rc = ml__check_output_size("outputs", "per_class", by_class.rank, by_class.shape,
                                   in->max_elements, in->input_elements, err);
        if (rc)
            goto free_groups;
        rc = ML_ENOMEM;
        if (group_alloc(&by_class, row_len))
            goto free_groups;
    }
    if (want_class_sums) {
        int64_t classes = in->rank > 0 ? row_len : 1;
        rc = ml__check_output_size("outputs", "class_sums", 1, &classes, in->max_elements,
                                   in->input_elements, err);
        if (rc)
            goto free_groups;
        rc = ML_ENOMEM;
        class_parts = calloc((size_t)(classes > 0 ? classes : 1), sizeof(*class_parts));
        res->class_sums = calloc((size_t)(classes > 0 ? classes : 1), sizeof(struct ml_sums));
        if (!class_parts || !res->class_sums)
            goto free_groups;
        res->num_classes = classes;
    }

    double *none_out = NULL;
    if (red->den == ML__DEN_NONE) {
        rc = ml__check_output_size("outputs", "the loss of reduction none", in->rank, in->shape,
                                   in->max_elements, in->input_elements, err);
        if (rc)
            goto free_groups;
        rc = ML_ENOMEM;
        none_out = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
        if (!none_out)
            goto free_groups;
    }

    /* This chunk's lanes (num, den, sum_w) and the totals they merge into. */
    struct ml__lanes num, den, sum_w, tnum, tden, tsum_w;
    memset(&num, 0, sizeof(num));
    memset(&den, 0, sizeof(den));
    memset(&sum_w, 0, sizeof(sum_w));
    tnum = num;
    tden = num;
    tsum_w = num;
    int64_t nonzero = 0;
    /* Denominators that count (0 or 1 per element) are summed exactly as integers; the sum
     * of the weights only when asked for. Two compensated sums fewer per element in the
     * common reductions, the same bits. */
    const int den_counts = red->den == ML__DEN_COUNT || red->den == ML__DEN_NONZERO;
    const int den_sums = !den_counts && red->den != ML__DEN_ONE && red->den != ML__DEN_NONE;
    const int want_sw = (in->outputs & (ML_OUT_SUM_WEIGHTS | ML_OUT_SUMS)) != 0;
    int64_t den_count = 0;
    int64_t idx[ML_MAX_RANK] = {0};
    int64_t woff = 0;
    /* Weights of the loss's own shape are read in order, without the multi-index walk. */
    int dense_w = 1;
    int64_t stride = 1;
    for (int d2 = in->rank - 1; d2 >= 0 && (in->w || in->wf); d2--) {
        if (in->shape[d2] > 1 && in->wstride[d2] != stride)
            dense_w = 0;
        stride *= in->shape[d2];
    }
    for (int64_t i = 0; i < n; i++) {
        if (i && i % ML__CHUNK == 0) {
            ml__lanes_merge(&tnum, &num);
            ml__lanes_merge(&tden, &den);
            ml__lanes_merge(&tsum_w, &sum_w);
            memset(&num, 0, sizeof(num));
            memset(&den, 0, sizeof(den));
            memset(&sum_w, 0, sizeof(sum_w));
        }
        /* The effective weight of element i: the broadcast weight, or for losses with
         * kernel denominators (torch cross_entropy) the target's class weight. */
        double w = in->w ? in->w[woff] : in->wf ? (double)in->wf[woff] : 1.0;
        double wv = in->values[i] * w;
        double d;
        switch (red->den) {
        case ML__DEN_COUNT:
            d = 1.0;
            break;
        case ML__DEN_NONZERO:
            d = w != 0 ? 1.0 : 0.0; /* NaN counts as present, as in TF's not_equal */
            break;
        case ML__DEN_EXPLICIT:
            d = in->den[i];
            break;
        default:
            d = w;
            break;
        }
        double w_eff = in->den ? in->den[i] : w;
        ml__lanes_add(&num, i, wv);
        if (den_counts)
            den_count += d != 0;
        else if (den_sums)
            ml__lanes_add(&den, i, d);
        if (want_sw)
            ml__lanes_add(&sum_w, i, w_eff);
        nonzero += w_eff != 0;
        if (none_out)
            none_out[i] = wv;
        if (want_sample) {
            int64_t gi = in->elementwise ? i / row_len : i;
            ml__sum_add(&by_sample.num[gi], wv);
            ml__sum_add(&by_sample.den[gi], d);
        }
        if (want_class) {
            int64_t gi = i % row_len;
            ml__sum_add(&by_class.num[gi], wv);
            ml__sum_add(&by_class.den[gi], d);
        }
        if (want_sums || class_parts) {
            /* w * l^2 with l the unweighted loss: torch cross_entropy's values already carry
             * their weight w_eff (= den), so theirs is value^2 / w_eff. */
            double sq = in->den ? (w_eff != 0 ? wv * wv / w_eff : 0.0) : wv * in->values[i];
            if (want_sums)
                ml__sum_add(&total_parts.sq, sq);
            if (class_parts)
                parts_add(&class_parts[row_len ? i % row_len : 0], wv, d, w_eff, sq);
        }
        /* Advance the weight offset with the loss's multi-index (last axis fastest). */
        if (dense_w) {
            woff++;
        } else {
            for (int d2 = in->rank - 1; d2 >= 0; d2--) {
                woff += in->wstride[d2];
                if (++idx[d2] < in->shape[d2])
                    break;
                woff -= in->wstride[d2] * in->shape[d2];
                idx[d2] = 0;
            }
        }
    }

    ml__lanes_merge(&tnum, &num);
    ml__lanes_merge(&tden, &den);
    ml__lanes_merge(&tsum_w, &sum_w);
    if (none_out) {
        res->weighted_sum = ml__lanes_get(&tnum);
        res->sum_weights = ml__lanes_get(&tsum_w);
        res->num_nonzero_weights = (double)nonzero;
        res->loss_is_tensor = 1;
        res->loss_tensor.rank = in->rank;
        memcpy(res->loss_tensor.shape, in->shape, sizeof(int64_t) * (size_t)in->rank);
        res->loss_tensor.numel = n;
        res->loss_tensor.data = none_out;
        res->loss = 0;
    } else {
        ml__reduce_totals(red, ml__lanes_get(&tnum),
                          den_counts ? (double)den_count : ml__lanes_get(&tden),
                          ml__lanes_get(&tsum_w), nonzero, in->has_raw_sw, in->raw_sw_sum, res);
    }

    /* The rows of the loss: an elementwise loss's rows are all but its last axis. */
    int64_t rows = in->elementwise && in->rank > 0 ? (row_len ? n / row_len : 0) : n;
    if (want_sums) {
        struct ml_sums *t = &res->sums;
        t->weighted_sum = res->weighted_sum;
        t->denominator = red->den == ML__DEN_ONE                     ? (double)n
                         : red->den == ML__DEN_RAW_SW && in->has_raw_sw ? in->raw_sw_sum
                         : den_counts                                   ? (double)den_count
                                                                        : ml__lanes_get(&tden);
        t->sum_weights = ml__lanes_get(&tsum_w);
        t->num_nonzero_weights = (double)nonzero;
        t->sum_sq = ml__sum_get(&total_parts.sq);
        t->elements = (double)n;
        t->samples = (double)rows;
    }
    for (int64_t c = 0; class_parts && c < res->num_classes; c++)
        parts_emit(&class_parts[c], red, rows, &res->class_sums[c]);
    if (want_sample && group_emit(&by_sample, red, &res->per_sample))
        goto free_groups;
    if (want_class && group_emit(&by_class, red, &res->per_class))
        goto free_groups;
    rc = 0;

free_groups:
    group_free(&by_sample);
    group_free(&by_class);
    free(class_parts);
    if (rc == ML_ENOMEM)
        ml__fail(err, rc, "", -1, "out of memory while reducing %lld elements", (long long)n);
    return rc;
}
