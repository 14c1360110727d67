/*
 * late.c -- a stored prediction's row evaluated with the labels it has (late.h).
 *
 * Each evaluation is one ml_eval of one row, built as the /v1/loss request of the identity
 * would hold it: the labels known as labels, their weights as the mask, zeros elsewhere. The
 * library stays the one source of every formula, reduction and parameter.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "late.h"

static const struct {
    const char *name; /* canonical */
    enum mls_late_kind kind;
    int regression;
} kinds[] = {
    {"tf.compat.v1.losses.sigmoid_cross_entropy", MLS_LATE_ELEMENTWISE, 0},
    {"tf.compat.v1.losses.log_loss", MLS_LATE_ELEMENTWISE, 0},
    {"tf.compat.v1.losses.mean_squared_error", MLS_LATE_ELEMENTWISE, 1},
    {"tf.compat.v1.losses.absolute_difference", MLS_LATE_ELEMENTWISE, 1},
    {"tf.compat.v1.losses.huber_loss", MLS_LATE_ELEMENTWISE, 1},
    {"tf.compat.v1.losses.hinge_loss", MLS_LATE_ELEMENTWISE, 0},
    {"tf.nn.sigmoid_cross_entropy_with_logits", MLS_LATE_ELEMENTWISE, 0},
    {"tf.nn.weighted_cross_entropy_with_logits", MLS_LATE_ELEMENTWISE, 0},
    {"torch.nn.functional.binary_cross_entropy_with_logits", MLS_LATE_ELEMENTWISE, 0},
    {"torchvision.ops.sigmoid_focal_loss", MLS_LATE_ELEMENTWISE, 0},
    {"ASL.AsymmetricLoss", MLS_LATE_ELEMENTWISE, 0},
    {"tf.compat.v1.losses.softmax_cross_entropy", MLS_LATE_ONEHOT, 0},
    {"keras3.losses.CategoricalCrossentropy", MLS_LATE_ONEHOT, 0},
    {"tf.compat.v1.losses.sparse_softmax_cross_entropy", MLS_LATE_INDEX, 0},
    {"torch.nn.functional.cross_entropy", MLS_LATE_TORCH_CE, 0},
};

static int find(const char *loss)
{
    const struct ml_loss_info *info = loss ? ml_loss_find(loss) : NULL;
    if (!info)
        return -1;
    const char *canonical = info->alias_of ? info->alias_of : info->name;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (!strcmp(kinds[i].name, canonical))
            return (int)i;
    return -1;
}

enum mls_late_kind mls_late_kind_of(const char *loss)
{
    int i = find(loss);
    return i < 0 ? MLS_LATE_NONE : kinds[i].kind;
}

int mls_late_regression(const char *loss)
{
    int i = find(loss);
    return i >= 0 && kinds[i].regression;
}

/* The lower bound of bin k >= 1. */
static double bin_low(int k)
{
    return exp2((k - 1) / 4.0 + MLS_DELAY_LOG2_MIN);
}

int mls_delay_bin(double seconds)
{
    if (!(seconds >= bin_low(1)))
        return 0; /* (NaN too: never produced, but never out of range) */
    double at = 4 * (log2(seconds) - MLS_DELAY_LOG2_MIN) + 1;
    int k = at < MLS_DELAY_BINS ? (int)floor(at) : MLS_DELAY_BINS - 1;
    /* log2 may round across a bin's bound: the bounds are the definition. */
    while (k > 1 && seconds < bin_low(k))
        k--;
    while (k < MLS_DELAY_BINS - 1 && seconds >= bin_low(k + 1))
        k++;
    return k;
}

double mls_delay_bin_value(int bin)
{
    if (bin <= 0)
        return 0;
    if (bin >= MLS_DELAY_BINS - 1)
        return bin_low(MLS_DELAY_BINS - 1);
    return exp2((bin - 0.5) / 4.0 + MLS_DELAY_LOG2_MIN);
}

/* The request of an evaluation of ctx's loss over `in` (logits or predictions as the loss
 * takes them), its params `params`; the caller adds labels and weights. */
static void request_of(const struct mls_late_ctx *ctx, const struct ml_tensor *in,
                       const struct ml_param *params, unsigned outputs, struct ml_request *req)
{
    ml_request_init(req);
    req->loss = ctx->loss;
    req->reduction = ctx->reduction;
    req->dtype = ctx->dtype;
    req->params = params;
    req->num_params = ctx->num_params;
    req->outputs = outputs;
    if (ctx->predictions)
        req->predictions = in;
    else
        req->logits = in;
}

static int out_of_memory(struct ml_error *err)
{
    memset(err, 0, sizeof(*err));
    err->code = ML_ENOMEM;
    snprintf(err->message, sizeof(err->message), "out of memory");
    return ML_ENOMEM;
}

int mls_late_row(const struct mls_late_ctx *ctx, const void *outputs,
                 const struct mls_label *labels, size_t n, struct ml_sums *total,
                 struct ml_sums *classes, double *work, struct ml_error *err)
{
    const int64_t nc = ctx->num_classes;
    struct ml_tensor in = {2, {1, nc}, ctx->dtype, outputs};
    struct ml_request req;
    request_of(ctx, &in, ctx->params, ML_OUT_SUMS, &req);

    double *lab = work, *wt = work + nc;
    int64_t index = 0;
    double sample_weight = 0;
    int32_t labelled = -1; /* per-sample: the labelled class */
    struct ml_tensor labels_t, weights_t;
    memset(&labels_t, 0, sizeof(labels_t));
    memset(&weights_t, 0, sizeof(weights_t));
    if (ctx->kind == MLS_LATE_ELEMENTWISE) {
        memset(work, 0, 2 * (size_t)nc * sizeof(double));
        for (size_t i = 0; i < n; i++) {
            lab[labels[i].cls] = labels[i].value;
            wt[labels[i].cls] = labels[i].weight;
        }
        labels_t = (struct ml_tensor){2, {1, nc}, ML_FLOAT64, lab};
        weights_t = (struct ml_tensor){2, {1, nc}, ML_FLOAT64, wt};
        req.outputs |= ML_OUT_CLASS_SUMS;
    } else {
        if (n) {
            labelled = labels[n - 1].cls;
            sample_weight = labels[n - 1].weight;
        }
        if (ctx->kind == MLS_LATE_ONEHOT) {
            memset(lab, 0, (size_t)nc * sizeof(double));
            if (labelled >= 0)
                lab[labelled] = 1;
            labels_t = (struct ml_tensor){2, {1, nc}, ML_FLOAT64, lab};
        } else {
            index = labelled >= 0                    ? labelled
                    : ctx->kind == MLS_LATE_TORCH_CE ? (int64_t)ctx->ignore_index
                                                     : 0;
            labels_t = (struct ml_tensor){1, {1}, ML_INT64, &index};
        }
        if (ctx->kind != MLS_LATE_TORCH_CE)
            weights_t = (struct ml_tensor){1, {1}, ML_FLOAT64, &sample_weight};
    }
    req.labels = &labels_t;
    if (weights_t.data)
        req.weights = &weights_t;

    struct ml_result res;
    int rc = ml_eval(&req, &res, err);
    if (rc)
        return rc;
    *total = res.sums;
    memset(classes, 0, (size_t)nc * sizeof(*classes));
    if (res.class_sums) {
        memcpy(classes, res.class_sums, (size_t)nc * sizeof(*classes));
    } else if (labelled >= 0) {
        /* A per-sample loss: the row's sums are its labelled class's. */
        classes[labelled] = res.sums;
        classes[labelled].elements = classes[labelled].samples = 0;
    }
    ml_result_free(&res);
    return 0;
}

double mls_tensor_at(const struct ml_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case ML_FLOAT32:
        return ((const float *)t->data)[i];
    case ML_FLOAT64:
        return ((const double *)t->data)[i];
    case ML_UINT8:
    case ML_BOOL:
        return ((const unsigned char *)t->data)[i];
    case ML_INT32:
        return ((const int32_t *)t->data)[i];
    case ML_INT64:
        return (double)((const int64_t *)t->data)[i];
    }
    return NAN;
}

int mls_late_positions(const struct mls_late_ctx *ctx, int64_t k, const void *inputs,
                       const int32_t *cls, const double *labels, const double *weights,
                       struct ml_sums *pos, struct ml_error *err)
{
    const int64_t nc = ctx->num_classes;
    /* The params as one row of k positions: a per-class tensor (C values) taken at each
     * position's class; a scalar as it is. (A config's tensors broadcast to one row of C
     * classes, its dry runs checked: they have 1 or C values.) */
    struct ml_param *params = calloc(ctx->num_params ? ctx->num_params : 1, sizeof(*params));
    double *gathered = NULL;
    size_t ngather = 0;
    for (size_t p = 0; p < ctx->num_params; p++)
        if (ctx->params[p].kind == ML_PARAM_TENSOR &&
            ml_shape_numel(ctx->params[p].tensor.rank, ctx->params[p].tensor.shape) > 1)
            ngather++;
    if (ngather)
        gathered = malloc(ngather * (size_t)k * sizeof(double));
    if (!params || (ngather && !gathered)) {
        free(params);
        free(gathered);
        return out_of_memory(err);
    }
    double *g = gathered;
    for (size_t p = 0; p < ctx->num_params; p++) {
        params[p] = ctx->params[p];
        const struct ml_tensor *t = &ctx->params[p].tensor;
        if (params[p].kind != ML_PARAM_TENSOR || ml_shape_numel(t->rank, t->shape) <= 1)
            continue;
        if (ml_shape_numel(t->rank, t->shape) != nc) {
            memset(err, 0, sizeof(*err));
            err->code = ML_EINVAL;
            snprintf(err->message, sizeof(err->message), "param %s has neither 1 nor %lld values",
                     ctx->params[p].name, (long long)nc);
            free(params);
            free(gathered);
            return ML_EINVAL;
        }
        for (int64_t i = 0; i < k; i++)
            g[i] = mls_tensor_at(t, cls[i]);
        params[p].tensor = (struct ml_tensor){2, {1, k}, ML_FLOAT64, g};
        g += k;
    }
    struct ml_tensor in = {2, {1, k}, ctx->dtype, inputs};
    struct ml_tensor lab = {2, {1, k}, ML_FLOAT64, labels};
    struct ml_tensor wt = {2, {1, k}, ML_FLOAT64, weights};
    struct ml_request req;
    request_of(ctx, &in, params, ML_OUT_SUMS | ML_OUT_CLASS_SUMS, &req);
    req.labels = &lab;
    req.weights = &wt;
    struct ml_result res;
    int rc = ml_eval(&req, &res, err);
    free(params);
    free(gathered);
    if (rc)
        return rc;
    memcpy(pos, res.class_sums, (size_t)k * sizeof(*pos));
    ml_result_free(&res);
    return 0;
}

int mls_late_check_rows(const struct mls_late_ctx *ctx, int64_t rows, const void *outputs,
                        int64_t *bad, struct ml_error *err)
{
    if (ctx->kind != MLS_LATE_ELEMENTWISE || rows <= 0)
        return 0;
    const int64_t n = rows * ctx->num_classes;
    double *labels = malloc((size_t)n * sizeof(double));
    if (!labels)
        return out_of_memory(err);
    int rc = 0;
    for (int z = 0; z < 2 && !rc; z++) {
        for (int64_t i = 0; i < n; i++)
            labels[i] = z;
        struct ml_tensor in = {2, {rows, ctx->num_classes}, ctx->dtype, outputs};
        struct ml_tensor lab = {2, {rows, ctx->num_classes}, ML_FLOAT64, labels};
        struct ml_request req;
        request_of(ctx, &in, ctx->params, ML_OUT_PER_ELEMENT, &req);
        req.labels = &lab;
        struct ml_result res;
        rc = ml_eval(&req, &res, err);
        if (rc)
            break;
        for (int64_t i = 0; i < res.per_element.numel && !rc; i++)
            if (!isfinite(res.per_element.data[i])) {
                *bad = i;
                rc = 1;
            }
        ml_result_free(&res);
    }
    free(labels);
    return rc;
}
