/*
 * eval.c -- ml_eval(): validate a request, run the pointwise kernel, weigh and reduce.
 *
 * The order of checks follows the frameworks' own (names, parameters, shapes of labels
 * against predictions, then weights), so that the first error reported is the one the
 * reference would raise.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broadcast.h"
#include "fast.h"
#include "params.h"
#include "reduce.h"
#include "simd.h"
#include "tensor.h"

void ml_request_init(struct ml_request *req)
{
    memset(req, 0, sizeof(*req));
    req->dtype = ML_FLOAT32;
    req->outputs = ML_OUT_LOSS;
}

void ml_result_free(struct ml_result *res)
{
    if (!res)
        return;
    free(res->loss_tensor.data);
    free(res->per_element.data);
    free(res->per_sample.data);
    free(res->per_class.data);
    res->loss_tensor.data = res->per_element.data = NULL;
    res->per_sample.data = res->per_class.data = NULL;
}

/* ---- Input views ---------------------------------------------------------------------- */

/* A request tensor converted to the compute precision (or used in place). */
struct view {
    const char *field;
    const struct ml_tensor *t;
    int64_t n;
    const void *data; /* compute precision */
    void *owned;
    int unchecked; /* the NaN/Inf check is left to the fused kernel (view_check_deferred) */
};

static int check_tensor(const char *field, const struct ml_tensor *t, int64_t max_elements,
                        int64_t *numel, struct ml_error *err)
{
    if (t->rank < 0 || t->rank > ML_MAX_RANK)
        return ml__fail(err, ML_ETENSOR, field, -1, "%s has rank %d; ranks 0 to %d are supported",
                        field, t->rank, ML_MAX_RANK);
    if (!ml_dtype_size(t->dtype))
        return ml__fail(err, ML_ETENSOR, field, -1, "%s has an unknown dtype", field);
    for (int d = 0; d < t->rank; d++)
        if (t->shape[d] < 0)
            return ml__fail(err, ML_ETENSOR, field, -1, "%s has a negative dimension (%lld)", field,
                            (long long)t->shape[d]);
    /* The footprint, empty dims counted as 1: the arrays made from this shape, empty or
     * not, stay within the limit (tensor.h). It bounds n, which cannot overflow. */
    int rc = ml__check_size(field, field, t->rank, t->shape, max_elements, err);
    if (rc)
        return rc;
    int64_t n = ml_shape_numel(t->rank, t->shape);
    if (n > 0 && !t->data)
        return ml__fail(err, ML_ETENSOR, field, -1, "%s has no data", field);
    *numel = n;
    return 0;
}

/* Converts n elements of any dtype to float or double (dst_dtype). */
static void convert(void *dst, enum ml_dtype dst_dtype, const void *src, enum ml_dtype src_dtype,
                    int64_t n)
{
/* One loop per source type, so the element type is known at compile time. */
#define CONVERT(type, expr)                                                                        \
    do {                                                                                           \
        const type *s_ = src;                                                                      \
        if (dst_dtype == ML_FLOAT32)                                                               \
            for (int64_t i = 0; i < n; i++)                                                        \
                ((float *)dst)[i] = (float)(expr);                                                 \
        else                                                                                       \
            for (int64_t i = 0; i < n; i++)                                                        \
                ((double *)dst)[i] = (double)(expr);                                               \
    } while (0)
    switch (src_dtype) {
    case ML_FLOAT32:
        CONVERT(float, s_[i]);
        break;
    case ML_FLOAT64:
        CONVERT(double, s_[i]);
        break;
    case ML_UINT8:
        CONVERT(uint8_t, s_[i]);
        break;
    case ML_BOOL:
        CONVERT(uint8_t, s_[i] != 0);
        break;
    case ML_INT32:
        CONVERT(int32_t, s_[i]);
        break;
    case ML_INT64:
        CONVERT(int64_t, s_[i]);
        break;
    }
#undef CONVERT
}

/* NaN or Inf in a float input (after its conversion to the compute precision): the error
 * names the first one. */
static int view_check(const struct view *v, enum ml_dtype dtype, struct ml_error *err)
{
    const struct ml_tensor *t = v->t;
    const char *field = v->field;
    int64_t i = dtype == ML_FLOAT32 ? ml__first_non_finite_f32(v->data, v->n)
                                    : ml__first_non_finite_f64(v->data, v->n);
    if (i < 0)
        return 0;
    int orig_nan = t->dtype == ML_FLOAT32   ? isnan(((const float *)t->data)[i])
                   : t->dtype == ML_FLOAT64 ? isnan(((const double *)t->data)[i])
                                            : 0;
    int orig_inf = t->dtype == ML_FLOAT32   ? isinf(((const float *)t->data)[i])
                   : t->dtype == ML_FLOAT64 ? isinf(((const double *)t->data)[i])
                                            : 0;
    return ml__fail(err, ML_ENONFINITE, field, i,
                    "%s[%lld] is %s%s; non-finite inputs are rejected unless "
                    "\"allow_non_finite\": true",
                    field, (long long)i, orig_nan ? "NaN" : (orig_inf ? "infinite" : "finite"),
                    orig_nan || orig_inf ? "" : " but overflows float32");
}

/* Opens a view in the compute precision. `defer` leaves the NaN/Inf check to the fused kernel,
 * which reads the data anyway (view_check_deferred runs it when the kernel does not). */
static int view_open(struct view *v, const char *field, const struct ml_tensor *t,
                     enum ml_dtype dtype, const struct ml_request *req, int defer,
                     struct ml_error *err)
{
    memset(v, 0, sizeof(*v));
    v->field = field;
    v->t = t;
    int rc = check_tensor(field, t, req->max_elements, &v->n, err);
    if (rc)
        return rc;
    if (t->dtype == dtype) {
        v->data = t->data;
    } else {
        size_t size = dtype == ML_FLOAT32 ? sizeof(float) : sizeof(double);
        v->owned = malloc((size_t)(v->n > 0 ? v->n : 1) * size);
        if (!v->owned)
            return ml__fail(err, ML_ENOMEM, field, -1, "out of memory converting %s", field);
        convert(v->owned, dtype, t->data, t->dtype, v->n);
        v->data = v->owned;
    }
    /* Integer inputs convert to finite values; only float inputs need the check. */
    if (!req->allow_non_finite && (t->dtype == ML_FLOAT32 || t->dtype == ML_FLOAT64)) {
        if (defer)
            v->unchecked = 1;
        else
            return view_check(v, dtype, err);
    }
    return 0;
}

static void view_close(struct view *v)
{
    free(v->owned);
    v->owned = NULL;
}

static double view_get(const struct view *v, enum ml_dtype dtype, int64_t i)
{
    return dtype == ML_FLOAT32 ? (double)((const float *)v->data)[i] : ((const double *)v->data)[i];
}

static int same_shape(int ra, const int64_t *a, int rb, const int64_t *b)
{
    if (ra != rb)
        return 0;
    for (int d = 0; d < ra; d++)
        if (a[d] != b[d])
            return 0;
    return 1;
}

static int shape_fail(struct ml_error *err, const char *field, const char *other, int ra,
                      const int64_t *a, int rb, const int64_t *b, const char *why)
{
    char sa[160], sb[160];
    ml__shape_str(sa, sizeof(sa), ra, a);
    ml__shape_str(sb, sizeof(sb), rb, b);
    return ml__fail(err, ML_ESHAPE, field, -1, "%s has shape %s but %s has shape %s: %s", field, sa,
                    other, sb, why);
}

/* ---- The evaluation state --------------------------------------------------------------- */

struct eval {
    const struct ml_request *req;
    int defer; /* the request may take the fused path: its views skip the NaN/Inf check */
    const struct ml_loss_info *info;
    const struct ml__loss_def *def;
    struct ml__params params;
    enum ml_dtype dtype;
    const struct ml__reduction *red;
    enum ml__simd simd; /* the instruction set of this evaluation, picked once */

    struct view labels, pred, weights, pos_weight;
    const char *pred_field;
    int64_t *class_labels; /* sparse targets as integers */
    void *aux;             /* pos_weight expanded to the logits' shape */
    double *class_weight;  /* torch cross_entropy weight, as doubles */

    /* The pointwise loss tensor. */
    int vrank;
    int64_t vshape[ML_MAX_RANK];
    int64_t vn;
    double *values;
    double *den; /* torch cross_entropy denominators */
};

static int resolve_reduction(struct eval *e, struct ml_error *err)
{
    const char *name = e->req->reduction;
    if (!name) {
        name = e->info->default_reduction;
        /* tf.nn ops are elementwise; given weights, they reduce like
         * compute_weighted_loss with its default. */
        if ((e->def->id == ML__TFNN_SIGMOID || e->def->id == ML__TFNN_WEIGHTED) && e->req->weights)
            name = "SUM_BY_NONZERO_WEIGHTS";
    }
    for (size_t i = 0; i < e->def->num_reds; i++) {
        const struct ml__reduction *r = &e->def->reds[i];
        if (ml__streq_ci(name, r->name) || (r->alias1 && ml__streq_ci(name, r->alias1)) ||
            (r->alias2 && ml__streq_ci(name, r->alias2))) {
            e->red = r;
            return 0;
        }
    }
    char list[256];
    size_t used = 0;
    list[0] = '\0';
    for (size_t i = 0; i < e->info->num_reductions && used < sizeof(list); i++)
        used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "",
                                 e->info->reductions[i]);
    return ml__fail(err, ML_EREDUCTION, "reduction", -1,
                    "%s has no reduction '%s' (expected one of: %s)", e->info->name, name, list);
}

/* Which inputs the loss reads; anything else present is an error, not silently ignored. */
static int check_inputs(struct eval *e, struct ml_error *err)
{
    const struct ml_request *req = e->req;
    const struct ml_loss_info *info = e->info;
    const struct ml_tensor *pred = NULL;

    if (info->takes_labels && !req->labels)
        return ml__fail(err, ML_EINVAL, "labels", -1, "%s needs `labels`", info->name);
    if (!info->takes_labels && req->labels)
        return ml__fail(err, ML_EINVAL, "labels", -1,
                        "%s reduces a precomputed `losses` tensor and takes no `labels`",
                        info->name);

    switch (info->input) {
    case ML_INPUT_LOGITS:
        pred = req->logits;
        e->pred_field = "logits";
        if (req->predictions)
            return ml__fail(err, ML_EINVAL, "predictions", -1,
                            "%s takes `logits`, not `predictions`", info->name);
        break;
    case ML_INPUT_PREDICTIONS:
        pred = req->predictions;
        e->pred_field = "predictions";
        if (req->logits)
            return ml__fail(err, ML_EINVAL, "logits", -1,
                            "%s takes `predictions` (probabilities or regression outputs), not "
                            "`logits`",
                            info->name);
        break;
    case ML_INPUT_LOSSES:
        pred = req->losses;
        e->pred_field = "losses";
        if (req->logits || req->predictions)
            return ml__fail(err, ML_EINVAL, req->logits ? "logits" : "predictions", -1,
                            "%s takes a precomputed `losses` tensor", info->name);
        break;
    case ML_INPUT_KERAS: {
        /* Keras has one y_pred: `logits` implies from_logits=true, `predictions` means
         * whatever from_logits says (probabilities by default). */
        int given = ml__param_given(info, &e->params, "from_logits");
        int from_logits = ml__param(info, &e->params, "from_logits", 0) != 0;
        if (req->logits && req->predictions)
            return ml__fail(err, ML_EINVAL, "logits", -1,
                            "give either `logits` or `predictions`, not both");
        if (req->logits) {
            if (given && !from_logits)
                return ml__fail(err, ML_EPARAM, "params.from_logits", -1,
                                "`logits` were given but from_logits is false: send "
                                "probabilities as `predictions`, or set from_logits true");
            pred = req->logits;
            e->pred_field = "logits";
        } else {
            pred = req->predictions;
            e->pred_field = "predictions";
        }
        break;
    }
    }
    if (info->input != ML_INPUT_LOSSES && req->losses)
        return ml__fail(err, ML_EINVAL, "losses", -1,
                        "`losses` is the input of compute_weighted_loss only");
    if (!pred)
        return ml__fail(err, ML_EINVAL, e->pred_field, -1, "%s needs `%s`", info->name,
                        info->input == ML_INPUT_KERAS ? "logits` or `predictions" : e->pred_field);
    return view_open(&e->pred, e->pred_field, pred, e->dtype, req, e->defer, err);
}

/* Class indices: integral, converted to int64 (range is checked by the kernel). */
static int open_class_labels(struct eval *e, struct ml_error *err)
{
    int64_t n = e->labels.n;
    e->class_labels = malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
    if (!e->class_labels)
        return ml__fail(err, ML_ENOMEM, "labels", -1, "out of memory");
    const struct ml_tensor *t = e->labels.t;
    if (t->dtype == ML_INT64 || t->dtype == ML_INT32 || t->dtype == ML_UINT8) {
        /* Integers as they are: no detour through float32, which would round large ones. */
        for (int64_t i = 0; i < n; i++)
            e->class_labels[i] = t->dtype == ML_INT64   ? ((const int64_t *)t->data)[i]
                                 : t->dtype == ML_INT32 ? ((const int32_t *)t->data)[i]
                                                        : ((const uint8_t *)t->data)[i];
        return 0;
    }
    for (int64_t i = 0; i < n; i++) {
        double v = view_get(&e->labels, e->dtype, i);
        if (!(v == floor(v)) || fabs(v) > 9.0e15)
            return ml__fail(err, ML_ELABEL, "labels", i,
                            "labels[%lld] = %g is not a class index (an integer)", (long long)i, v);
        e->class_labels[i] = (int64_t)v;
    }
    return 0;
}

/* pos_weight broadcast (numpy rules) to the logits' shape, expanded in compute precision. */
static int open_pos_weight(struct eval *e, struct ml_error *err)
{
    const struct ml_tensor *t = ml__param_tensor(e->info, &e->params, "pos_weight");
    const struct ml_tensor *x = e->pred.t;
    size_t size = e->dtype == ML_FLOAT32 ? sizeof(float) : sizeof(double);
    struct ml_tensor scalar;
    double value = ml__param(e->info, &e->params, "pos_weight", 1.0);
    if (!t) {
        if (e->def->id == ML__TORCH_BCE && !ml__param_given(e->info, &e->params, "pos_weight"))
            return 0; /* pos_weight=None */
        memset(&scalar, 0, sizeof(scalar));
        scalar.dtype = ML_FLOAT64;
        scalar.data = &value;
        t = &scalar;
    }
    int rc = view_open(&e->pos_weight, "params.pos_weight", t, e->dtype, e->req, 0, err);
    if (rc)
        return rc;
    int64_t aligned[ML_MAX_RANK], stride[ML_MAX_RANK];
    int bad;
    if (ml__numpy_align(t->rank, t->shape, x->rank, x->shape, aligned, &bad)) {
        char ps[160], xs[160];
        ml__shape_str(ps, sizeof(ps), t->rank, t->shape);
        ml__shape_str(xs, sizeof(xs), x->rank, x->shape);
        return ml__fail(err, ML_EBROADCAST, "params.pos_weight", -1,
                        "pos_weight of shape %s cannot be broadcast to logits of shape %s "
                        "(numpy broadcasting: [C] is per class, [N,1] per sample)",
                        ps, xs);
    }
    ml__strides(x->rank, aligned, stride);
    e->aux = malloc((size_t)(e->pred.n > 0 ? e->pred.n : 1) * size);
    if (!e->aux)
        return ml__fail(err, ML_ENOMEM, "params.pos_weight", -1, "out of memory");
    int64_t idx[ML_MAX_RANK] = {0}, off = 0;
    for (int64_t i = 0; i < e->pred.n; i++) {
        if (e->dtype == ML_FLOAT32)
            ((float *)e->aux)[i] = ((const float *)e->pos_weight.data)[off];
        else
            ((double *)e->aux)[i] = ((const double *)e->pos_weight.data)[off];
        for (int d = x->rank - 1; d >= 0; d--) {
            off += stride[d];
            if (++idx[d] < x->shape[d])
                break;
            off -= stride[d] * x->shape[d];
            idx[d] = 0;
        }
    }
    return 0;
}

static int alloc_values(struct eval *e, struct ml_error *err)
{
    /* The pointwise loss is also per_element and the reduction-none loss. */
    int rc = ml__check_size(e->pred_field, "the pointwise loss", e->vrank, e->vshape,
                            e->req->max_elements, err);
    if (rc)
        return rc;
    e->vn = ml_shape_numel(e->vrank, e->vshape);
    e->values = malloc((size_t)(e->vn > 0 ? e->vn : 1) * sizeof(double));
    if (!e->values)
        return ml__fail(err, ML_ENOMEM, "", -1, "out of memory for %lld loss values",
                        (long long)e->vn);
    return 0;
}

/* ---- Per-family preparation: shapes, then the kernel ----------------------------------- */

static int run_kernel(struct eval *e, struct ml__kctx *k, struct ml_error *err)
{
    int64_t bad = -1;
    int rc = e->dtype == ML_FLOAT32 ? ml__pointwise_f32(k, e->values, e->den, &bad)
                                    : ml__pointwise_f64(k, e->values, e->den, &bad);
    if (rc == ML_ELABEL)
        return ml__fail(err, ML_ELABEL, "labels", bad,
                        "labels[%lld] = %lld is not a class index in [0, %lld)", (long long)bad,
                        (long long)e->class_labels[bad], (long long)k->len);
    return rc;
}

static void fill_common(const struct eval *e, struct ml__kctx *k)
{
    const struct ml_loss_info *info = e->info;
    const struct ml__params *p = &e->params;
    memset(k, 0, sizeof(*k));
    k->id = e->def->id;
    k->n = e->pred.n;
    k->outer = k->n;
    k->len = 1;
    k->inner = 1;
    k->labels = e->labels.data;
    k->pred = e->pred.data;
    k->aux = e->aux;
    k->label_smoothing = ml__param(info, p, "label_smoothing", 0);
    k->alpha = ml__param(info, p, "alpha", 0.25);
    k->gamma = ml__param(info, p, "gamma", 2.0);
    k->epsilon = ml__param(info, p, "epsilon", ml__param(info, p, "eps", 1e-7));
    k->delta = ml__param(info, p, "delta", 1.0);
    k->gamma_neg = ml__param(info, p, "gamma_neg", 0);
    k->gamma_pos = ml__param(info, p, "gamma_pos", 0);
    k->clip = ml__param(info, p, "clip", 0);
    k->from_logits = ml__param(info, p, "from_logits", 0) != 0;
    k->apply_class_balancing = ml__param(info, p, "apply_class_balancing", 0) != 0;
    k->simd = (int)e->simd;
}

/* TF v1 pointwise losses, tf.nn ops, torch BCE, torchvision focal, ASL. */
static int prepare_elementwise(struct eval *e, struct ml__kctx *k, struct ml_error *err)
{
    const struct ml_tensor *x = e->pred.t;
    if (e->info->takes_labels) {
        const struct ml_tensor *z = e->labels.t;
        if (!same_shape(z->rank, z->shape, x->rank, x->shape))
            return shape_fail(err, "labels", e->pred_field, z->rank, z->shape, x->rank, x->shape,
                              "they must be identical (no broadcasting)");
    }
    if (e->def->id == ML__TFNN_WEIGHTED || e->def->id == ML__TORCH_BCE) {
        int rc = open_pos_weight(e, err);
        if (rc)
            return rc;
    }
    e->vrank = x->rank;
    memcpy(e->vshape, x->shape, sizeof(e->vshape));
    int rc = alloc_values(e, err);
    if (rc)
        return rc;
    fill_common(e, k);
    return run_kernel(e, k, err);
}

/* Splits shape around axis: outer x len x inner; writes the shape without the axis. */
static void split_axis(const struct ml_tensor *t, int axis, struct ml__kctx *k, int *vrank,
                       int64_t *vshape)
{
    k->outer = ml_shape_numel(axis, t->shape);
    k->len = t->shape[axis];
    k->inner = ml_shape_numel(t->rank - axis - 1, t->shape + axis + 1);
    *vrank = 0;
    for (int d = 0; d < t->rank; d++)
        if (d != axis)
            vshape[(*vrank)++] = t->shape[d];
}

static int prepare_tf_softmax(struct eval *e, struct ml__kctx *k, struct ml_error *err)
{
    const struct ml_tensor *x = e->pred.t, *y = e->labels.t;
    if (x->rank < 1)
        return ml__fail(err, ML_ESHAPE, "logits", -1,
                        "logits must have a class axis (rank >= 1), got a scalar");
    if (!same_shape(y->rank, y->shape, x->rank, x->shape))
        return shape_fail(err, "labels", "logits", y->rank, y->shape, x->rank, x->shape,
                          "softmax_cross_entropy needs one-hot (or soft) labels of the logits' "
                          "shape");
    double ls = ml__param(e->info, &e->params, "label_smoothing", 0);
    if (ls > 0 && x->rank < 2)
        return ml__fail(err, ML_ESHAPE, "labels", -1,
                        "label_smoothing takes the number of classes from axis 1 of the "
                        "labels (as TensorFlow does); rank-1 labels have no axis 1");
    fill_common(e, k);
    split_axis(x, x->rank - 1, k, &e->vrank, e->vshape);
    k->smoothing_classes = x->rank >= 2 ? (double)x->shape[1] : 1;
    int rc = alloc_values(e, err);
    return rc ? rc : run_kernel(e, k, err);
}

static int prepare_tf_sparse(struct eval *e, struct ml__kctx *k, int *wrank, int64_t *wshape,
                             struct ml_error *err)
{
    const struct ml_tensor *x = e->pred.t, *y = e->labels.t;
    int yrank = y->rank;
    if (x->rank < 1)
        return ml__fail(err, ML_ESHAPE, "logits", -1,
                        "logits must have a class axis (rank >= 1), got a scalar");
    /* _remove_squeezable_dimensions(labels, logits, weights, expected_rank_diff=1). */
    if (x->rank - yrank == 2 && x->shape[x->rank - 1] == 1)
        return ml__fail(err, ML_ESHAPE, "logits", -1,
                        "logits with a trailing dim of 1 and labels of rank %d: nothing to "
                        "classify",
                        yrank);
    if (x->rank - yrank == 0 && yrank > 0 && y->shape[yrank - 1] == 1)
        yrank--;
    if (!same_shape(yrank, y->shape, x->rank - 1, x->shape))
        return shape_fail(err, "labels", "logits", y->rank, y->shape, x->rank, x->shape,
                          "sparse labels must have the logits' shape without the class axis "
                          "([N] or [N, 1] for [N, C] logits)");
    if (*wrank >= 0 && *wrank - yrank == 1) {
        if (wshape[*wrank - 1] != 1)
            return ml__fail(err, ML_EBROADCAST, "weights", -1,
                            "Can not squeeze dim[%d], expected a dimension of 1, got %lld "
                            "(weights of rank labels+1 are squeezed)",
                            *wrank - 1, (long long)wshape[*wrank - 1]);
        (*wrank)--;
    }
    int rc = open_class_labels(e, err);
    if (rc)
        return rc;
    fill_common(e, k);
    k->sparse = 1;
    k->labels = e->class_labels;
    split_axis(x, x->rank - 1, k, &e->vrank, e->vshape);
    rc = alloc_values(e, err);
    return rc ? rc : run_kernel(e, k, err);
}

static int prepare_torch_ce(struct eval *e, struct ml__kctx *k, struct ml_error *err)
{
    const struct ml_tensor *x = e->pred.t, *y = e->labels.t;
    const struct ml_loss_info *info = e->info;
    if (x->rank < 1)
        return ml__fail(err, ML_ESHAPE, "logits", -1,
                        "logits must have a class dim (rank >= 1), got a scalar");
    int class_axis = x->rank == 1 ? 0 : 1;
    int64_t classes = x->shape[class_axis];
    double ls = ml__param(info, &e->params, "label_smoothing", 0);
    if (ls < 0 || ls > 1)
        return ml__fail(err, ML_EPARAM, "params.label_smoothing", -1,
                        "label_smoothing must be between 0.0 and 1.0, got %g", ls);
    int64_t ignore_index;
    int rc = ml__param_integer(info, &e->params, "ignore_index", &ignore_index, err);
    if (rc)
        return rc;

    fill_common(e, k);
    split_axis(x, class_axis, k, &e->vrank, e->vshape);
    k->ignore_index = ignore_index;
    if (same_shape(y->rank, y->shape, x->rank, x->shape)) {
        /* Probability targets (torch: target.shape == input.shape). */
        if (ignore_index >= 0)
            return ml__fail(err, ML_EPARAM, "params.ignore_index", -1,
                            "ignore_index is not supported for probability targets");
        k->sparse = 0;
    } else if (same_shape(y->rank, y->shape, e->vrank, e->vshape)) {
        rc = open_class_labels(e, err);
        if (rc)
            return rc;
        k->sparse = 1;
        k->labels = e->class_labels;
    } else {
        char xs[160], ys[160], vs[160];
        ml__shape_str(xs, sizeof(xs), x->rank, x->shape);
        ml__shape_str(ys, sizeof(ys), y->rank, y->shape);
        ml__shape_str(vs, sizeof(vs), e->vrank, e->vshape);
        return ml__fail(err, ML_ESHAPE, "labels", -1,
                        "labels has shape %s; for logits %s (classes on dim %d) torch expects "
                        "class indices of shape %s or probabilities of shape %s",
                        ys, xs, class_axis, vs, xs);
    }
    if (e->req->weights) {
        const struct ml_tensor *w = e->req->weights;
        if (w->rank != 1 || w->shape[0] != classes) {
            char ws[160];
            ml__shape_str(ws, sizeof(ws), w->rank, w->shape);
            return ml__fail(err, ML_EBROADCAST, "weights", -1,
                            "weight tensor should be defined either for all %lld classes or no "
                            "classes but got weight tensor of shape: %s",
                            (long long)classes, ws);
        }
        e->class_weight = malloc((size_t)(classes > 0 ? classes : 1) * sizeof(double));
        if (!e->class_weight)
            return ml__fail(err, ML_ENOMEM, "weights", -1, "out of memory");
        for (int64_t c = 0; c < classes; c++)
            e->class_weight[c] = view_get(&e->weights, e->dtype, c);
        k->class_weight = e->class_weight;
    }
    rc = alloc_values(e, err);
    if (rc)
        return rc;
    e->den = malloc((size_t)(e->vn > 0 ? e->vn : 1) * sizeof(double));
    if (!e->den)
        return ml__fail(err, ML_ENOMEM, "", -1, "out of memory");
    return run_kernel(e, k, err);
}

/* Keras: y_true and y_pred brought to the same rank, then identical shapes required. */
static int prepare_keras(struct eval *e, struct ml__kctx *k, struct ml_error *err)
{
    const struct ml_tensor *x = e->pred.t, *y = e->labels.t;
    int xrank = x->rank, yrank = y->rank;
    int64_t xshape[ML_MAX_RANK + 1], yshape[ML_MAX_RANK + 1];
    memcpy(xshape, x->shape, sizeof(x->shape));
    memcpy(yshape, y->shape, sizeof(y->shape));
    if (e->def->weight_rule == ML__W_KERAS3) {
        /* LossFunctionWrapper.call: squeeze_or_expand_to_same_rank(y_true, y_pred). */
        if (yrank == xrank + 1 && yshape[yrank - 1] == 1) {
            if (xrank == 1)
                xshape[xrank++] = 1;
            else
                yrank--;
        } else if (xrank == yrank + 1 && xshape[xrank - 1] == 1) {
            if (yrank == 1)
                yshape[yrank++] = 1;
            else
                xrank--;
        }
    } else {
        /* Keras 2 LossFunctionWrapper: remove_squeezable_dimensions(y_true, y_pred). */
        if (xrank - yrank == 1 && xshape[xrank - 1] == 1)
            xrank--;
        else if (yrank - xrank == 1 && yshape[yrank - 1] == 1)
            yrank--;
    }
    if (!same_shape(yrank, yshape, xrank, xshape))
        return shape_fail(err, "labels", e->pred_field, y->rank, y->shape, x->rank, x->shape,
                          "Keras requires target and output of the same shape");
    if (xrank < 1)
        return ml__fail(err, ML_ESHAPE, e->pred_field, -1,
                        "Keras losses reduce over an axis; scalars have none");
    int64_t axis;
    int rc = ml__param_integer(e->info, &e->params, "axis", &axis, err);
    if (rc)
        return rc;
    if (axis < -xrank || axis >= xrank)
        return ml__fail(err, ML_EPARAM, "params.axis", -1, "axis %lld is out of range for rank %d",
                        (long long)axis, xrank);
    if (axis < 0)
        axis += xrank;
    struct ml_tensor shaped = *x;
    shaped.rank = xrank;
    memcpy(shaped.shape, xshape, sizeof(shaped.shape));
    fill_common(e, k);
    if (e->req->logits)
        k->from_logits = 1; /* `logits` says so even when params omit from_logits */
    split_axis(&shaped, (int)axis, k, &e->vrank, e->vshape);
    k->smoothing_classes = (double)k->len;
    rc = alloc_values(e, err);
    return rc ? rc : run_kernel(e, k, err);
}

/* ---- ml_eval --------------------------------------------------------------------------- */

/* ---- The fused fast path ---------------------------------------------------------------- */

#define NOT_FAST 1

struct fast_plan {
    const struct ml__fast *f;
    int64_t n;
    struct ml__fast_sums *sums; /* one per chunk */
};

static void fast_chunk(void *arg, int64_t c)
{
    struct fast_plan *p = arg;
    int64_t begin = c * ML__CHUNK;
    int64_t end = begin + ML__CHUNK < p->n ? begin + ML__CHUNK : p->n;
    ml__fast_run(p->f, begin, end, &p->sums[c]);
}

/* The weight layout of fast.h that the broadcast strides describe, or -1. */
static int fast_weights(int rank, const int64_t *shape, const int64_t *wstride)
{
    int all_zero = 1, dense = 1, row = 1, col = 1;
    int64_t stride = 1, row_stride = 1;
    for (int d = rank - 1; d >= 0; d--) {
        int matters = shape[d] > 1;
        if (matters && wstride[d] != 0)
            all_zero = 0;
        if (matters && wstride[d] != stride)
            dense = 0;
        if (d == rank - 1) {
            if (matters && wstride[d] != 0)
                row = 0;
            if (matters && wstride[d] != 1)
                col = 0;
        } else {
            if (matters && wstride[d] != row_stride)
                row = 0;
            if (matters && wstride[d] != 0)
                col = 0;
            row_stride *= shape[d];
        }
        stride *= shape[d];
    }
    return all_zero ? ML__FW_SCALAR
           : dense  ? ML__FW_DENSE
           : row    ? ML__FW_ROW
           : col    ? ML__FW_COL
                    : -1;
}

/*
 * The sigmoid cross-entropy family in float32, reduced to a number: one fused pass over the
 * inputs (fast.c), the same bits as the general path. Returns NOT_FAST when the request
 * needs the general path (other losses, per-element outputs, a weight layout fast.c does
 * not stream, or an error to report).
 */
/* Whether the loss, precision, outputs and reduction suit the fused path (its inputs'
 * shapes and weight layout are checked later, in try_fast). */
static int fast_candidate(const struct eval *e)
{
    const struct ml_request *req = e->req;
    enum ml__loss_id id = e->def->id;
    const struct ml__reduction *red = e->red;
    unsigned outputs = req->outputs ? req->outputs : ML_OUT_LOSS;
    const unsigned scalars =
        ML_OUT_LOSS | ML_OUT_WEIGHTED_SUM | ML_OUT_SUM_WEIGHTS | ML_OUT_NUM_NONZERO_WEIGHTS;
    if (outputs & ~scalars)
        return 0;
    double gamma = ml__param(e->info, &e->params, "gamma", 2.0);
    int elementwise = id == ML__TF_SIGMOID_CE || id == ML__TFNN_SIGMOID || id == ML__ASL ||
                      id == ML__TF_MSE || id == ML__TF_ABSDIFF || id == ML__TF_HUBER ||
                      id == ML__TF_HINGE || id == ML__TF_LOG_LOSS || id == ML__TORCH_BCE ||
                      id == ML__TFNN_WEIGHTED;
    if (!elementwise &&
        !(id == ML__TV_FOCAL && (gamma == 0 || gamma == 1 || gamma == 2)))
        return 0;
    return red->den == ML__DEN_ONE || red->den == ML__DEN_COUNT || red->den == ML__DEN_NONZERO ||
           red->den == ML__DEN_WEIGHTS;
}

/* The NaN/Inf checks the views left to the fused kernel, in the order they were opened. */
static int view_check_deferred(struct eval *e, struct ml_error *err)
{
    struct view *views[3] = {&e->labels, &e->pred, &e->weights};
    for (int i = 0; i < 3; i++) {
        if (!views[i]->unchecked)
            continue;
        views[i]->unchecked = 0;
        int rc = view_check(views[i], e->dtype, err);
        if (rc)
            return rc;
    }
    return 0;
}

/*
 * pos_weight for the fused kernel (torch BCE, tf.nn.weighted_cross_entropy_with_logits): a
 * number, or a tensor of the request's dtype, finite, whose numpy broadcast to the logits is
 * one of fast.h's layouts, read in place. Returns 0 (f->pw, f->pwmode set; f->pwmode
 * ML__FW_NONE for torch's pos_weight=None) or NOT_FAST: anything else, errors included, is
 * left to the general path, which expands pos_weight and reports what is wrong.
 */
static int fast_pos_weight(const struct eval *e, struct ml__fast *f)
{
    const struct ml_tensor *x = e->pred.t;
    f->pwmode = ML__FW_NONE;
    if (e->def->id != ML__TORCH_BCE && e->def->id != ML__TFNN_WEIGHTED)
        return 0;
    if (e->def->id == ML__TORCH_BCE && !ml__param_given(e->info, &e->params, "pos_weight"))
        return 0; /* pos_weight=None */
    const struct ml_tensor *t = ml__param_tensor(e->info, &e->params, "pos_weight");
    if (!t) {
        f->pw_value = ml__param(e->info, &e->params, "pos_weight", 1.0);
        if (!(f->pw_value - f->pw_value == 0))
            return NOT_FAST;
        f->pwmode = ML__FW_SCALAR;
        f->pw = NULL;
        return 0;
    }
    int64_t n = ml_shape_numel(t->rank, t->shape), aligned[ML_MAX_RANK], stride[ML_MAX_RANK];
    int bad;
    if (t->dtype != e->dtype || n < 0 || (n > 0 && !t->data) ||
        ml__numpy_align(t->rank, t->shape, x->rank, x->shape, aligned, &bad))
        return NOT_FAST;
    if ((t->dtype == ML_FLOAT32 ? ml__first_non_finite_f32(t->data, n)
                                : ml__first_non_finite_f64(t->data, n)) >= 0)
        return NOT_FAST;
    ml__strides(x->rank, aligned, stride);
    int mode = fast_weights(x->rank, x->shape, stride);
    if (mode < 0)
        return NOT_FAST;
    f->pwmode = (enum ml__fast_weights)mode;
    f->pw = t->data;
    return 0;
}

static int try_fast(struct eval *e, struct ml_result *res, int wrank, const int64_t *wshape,
                    struct ml_error *err)
{
    const struct ml_request *req = e->req;
    enum ml__loss_id id = e->def->id;
    const struct ml__reduction *red = e->red;
    unsigned outputs = req->outputs ? req->outputs : ML_OUT_LOSS;
    if (!fast_candidate(e))
        return NOT_FAST;
    double gamma = ml__param(e->info, &e->params, "gamma", 2.0);
    const struct ml_tensor *x = e->pred.t, *z = e->labels.t;
    if (!z || x->rank == 0 || !same_shape(z->rank, z->shape, x->rank, x->shape))
        return NOT_FAST;

    struct ml__fast f;
    memset(&f, 0, sizeof(f));
    f.id = id;
    f.label_smoothing = ml__param(e->info, &e->params, "label_smoothing", 0);
    f.gamma = (int)gamma;
    f.alpha = ml__param(e->info, &e->params, "alpha", 0.25);
    /* ASL as fill_common reads it for the general path. */
    f.gamma_pos = ml__param(e->info, &e->params, "gamma_pos", 0);
    f.gamma_neg = ml__param(e->info, &e->params, "gamma_neg", 0);
    f.clip = ml__param(e->info, &e->params, "clip", 0);
    f.epsilon =
        ml__param(e->info, &e->params, "epsilon", ml__param(e->info, &e->params, "eps", 1e-7));
    f.delta = ml__param(e->info, &e->params, "delta", 1.0);
    f.asl_focus = ml__param(e->info, &e->params, "gamma_neg", 0) > 0 ||
                  ml__param(e->info, &e->params, "gamma_pos", 0) > 0;
    f.f64 = e->dtype == ML_FLOAT64;
    f.z = e->labels.data;
    f.x = e->pred.data;
    f.cols = x->shape[x->rank - 1];
    f.rows = f.cols ? e->pred.n / f.cols : 0;
    if (!f.cols)
        return NOT_FAST;
    f.wmode = ML__FW_NONE;
    if (wrank >= 0) {
        int vrank = x->rank;
        int64_t vshape[ML_MAX_RANK + 1], aligned[ML_MAX_RANK], wstride[ML_MAX_RANK];
        memcpy(vshape, x->shape, sizeof(int64_t) * (size_t)x->rank);
        if (ml__weights_align(e->def->weight_rule, e->info->name, &vrank, vshape, wrank, wshape,
                              aligned, NULL) ||
            vrank != x->rank)
            return NOT_FAST; /* the general path reports the error */
        ml__strides(vrank, aligned, wstride);
        int mode = fast_weights(vrank, vshape, wstride);
        if (mode < 0)
            return NOT_FAST;
        f.wmode = (enum ml__fast_weights)mode;
        f.w = e->weights.data;
    }
    if (fast_pos_weight(e, &f))
        return NOT_FAST;
    f.den_sums = red->den == ML__DEN_WEIGHTS;
    f.want_sw = (outputs & ML_OUT_SUM_WEIGHTS) != 0;
    f.want_nz = red->den == ML__DEN_NONZERO || (outputs & ML_OUT_NUM_NONZERO_WEIGHTS);
    f.simd = (int)e->simd;

    /* Chunks, each with sums of its own, merged in order: the same bits however many
     * threads ran them. */
    struct fast_plan plan = {&f, f.rows * f.cols, NULL};
    int64_t nchunks = (plan.n + ML__CHUNK - 1) / ML__CHUNK;
    plan.sums = malloc((size_t)(nchunks > 0 ? nchunks : 1) * sizeof(*plan.sums));
    if (!plan.sums)
        return NOT_FAST; /* the general path will report the shortage */
    if (req->parallel_for && nchunks > 1)
        req->parallel_for(req->parallel_ctx, nchunks, fast_chunk, &plan);
    else
        for (int64_t c = 0; c < nchunks; c++)
            fast_chunk(&plan, c);
    struct ml__fast_sums total;
    memset(&total, 0, sizeof(total));
    for (int64_t c = 0; c < nchunks; c++) {
        ml__lanes_merge(&total.num, &plan.sums[c].num);
        ml__lanes_merge(&total.den, &plan.sums[c].den);
        ml__lanes_merge(&total.sw, &plan.sums[c].sw);
        total.nonzero += plan.sums[c].nonzero;
    }
    free(plan.sums);
    double num = ml__lanes_get(&total.num);
    /* A NaN or an infinity among the inputs makes num non-finite (fast.c): only then do the
     * deferred checks look for it, and find and name the first. (Finite inputs can overflow
     * too; then they find nothing and the sum stands, as on the general path.) */
    if (!(num - num == 0)) {
        int rc = view_check_deferred(e, err);
        if (rc)
            return rc;
    }
    double den = red->den == ML__DEN_COUNT     ? (double)plan.n
                 : red->den == ML__DEN_NONZERO ? (double)total.nonzero
                                               : ml__lanes_get(&total.den);
    ml__reduce_totals(red, num, den, ml__lanes_get(&total.sw), total.nonzero, 0, 0, res);
    res->outputs = outputs | ML_OUT_LOSS;
    res->loss_name = e->info->name;
    res->reduction_name = red->name;
    res->path = ML_PATH_FUSED;
    res->simd = ml__simd_name(e->simd);
    return 0;
}

static int evaluate(struct eval *e, struct ml_result *res, struct ml_error *err)
{
    const struct ml_request *req = e->req;
    int rc;

    if (!req->loss)
        return ml__fail(err, ML_EINVAL, "loss", -1, "the request names no loss");
    e->info = ml_loss_find(req->loss);
    if (!e->info)
        return ml__fail(err, ML_EUNKNOWN_LOSS, "loss", -1,
                        "unknown loss '%s' (`maskloss losses` or GET /v1/losses lists them)",
                        req->loss);
    e->def = ml__loss_def(e->info);
    if (req->dtype != ML_FLOAT32 && req->dtype != ML_FLOAT64)
        return ml__fail(err, ML_EINVAL, "dtype", -1, "dtype must be float32 or float64");
    e->dtype = req->dtype;
    e->simd = ml__simd_pick();

    rc = ml__params_parse(e->info, req, &e->params, err);
    if (rc)
        return rc;
    rc = resolve_reduction(e, err);
    if (rc)
        return rc;
    e->defer = fast_candidate(e);
    if (req->labels) {
        rc = view_open(&e->labels, "labels", req->labels, e->dtype, req, e->defer, err);
        if (rc)
            return rc;
    }
    rc = check_inputs(e, err);
    if (rc)
        return rc;

    int wrank = -1;
    int64_t wshape[ML_MAX_RANK];
    if (req->weights) {
        rc = view_open(&e->weights, "weights", req->weights, e->dtype, req, e->defer, err);
        if (rc)
            return rc;
        wrank = req->weights->rank;
        memcpy(wshape, req->weights->shape, sizeof(wshape));
    }

    rc = try_fast(e, res, wrank, wshape, err);
    if (rc != NOT_FAST)
        return rc;
    rc = view_check_deferred(e, err); /* the general path checks before it computes */
    if (rc)
        return rc;

    struct ml__kctx k;
    switch (e->def->id) {
    case ML__TF_SOFTMAX_CE:
        rc = prepare_tf_softmax(e, &k, err);
        break;
    case ML__TF_SPARSE_SOFTMAX_CE:
        rc = prepare_tf_sparse(e, &k, &wrank, wshape, err);
        break;
    case ML__TORCH_CE:
        rc = prepare_torch_ce(e, &k, err);
        break;
    case ML__K3_BCE:
    case ML__K3_FOCAL:
    case ML__K3_CCE:
    case ML__K2_BCE:
    case ML__K2_FOCAL:
        rc = prepare_keras(e, &k, err);
        break;
    default:
        rc = prepare_elementwise(e, &k, err);
        break;
    }
    if (rc)
        return rc;

    /* Weights meet the pointwise loss under the framework's rule. */
    int64_t aligned[ML_MAX_RANK], wstride[ML_MAX_RANK];
    int vrank = e->vrank;
    int64_t vshape[ML_MAX_RANK + 1];
    memcpy(vshape, e->vshape, sizeof(e->vshape));
    struct ml__reduce_in in;
    memset(&in, 0, sizeof(in));
    if (wrank >= 0 && e->def->weight_rule != ML__W_CLASS) {
        rc = ml__weights_align(e->def->weight_rule, e->info->name, &vrank, vshape, wrank, wshape,
                               aligned, err);
        if (rc)
            return rc;
        ml__strides(vrank, aligned, wstride);
        /* The weights are read where they are, in the compute precision: a double copy
         * would add 8 bytes per element to a request's peak memory. */
        struct ml__sum raw = {0, 0};
        for (int64_t i = 0; i < e->weights.n; i++)
            ml__sum_add(&raw, view_get(&e->weights, e->dtype, i));
        if (e->dtype == ML_FLOAT32)
            in.wf = e->weights.data;
        else
            in.w = e->weights.data;
        in.has_raw_sw = 1;
        in.raw_sw_sum = ml__sum_get(&raw);
    }

    const struct ml__reduction *red = e->red;
    /* Keras reduce_values returns a scalar or empty (0,) loss unreduced. */
    static const struct ml__reduction keras_unreduced = {"none", NULL, NULL, ML__DEN_NONE, 0};
    static const struct ml__reduction keras_scalar = {"sum", NULL, NULL, ML__DEN_ONE, 0};
    if (e->def->weight_rule == ML__W_KERAS3 && red->den != ML__DEN_NONE) {
        if (vrank == 0)
            red = &keras_scalar;
        else if (vrank == 1 && vshape[0] == 0)
            red = &keras_unreduced;
    }

    in.loss_name = e->info->name;
    in.values = e->values;
    in.rank = vrank;
    in.shape = vshape;
    in.n = e->vn;
    in.wstride = wstride;
    in.den = e->den;
    in.red = red;
    in.elementwise = e->def->elementwise;
    in.outputs = req->outputs ? req->outputs : ML_OUT_LOSS;
    in.max_elements = req->max_elements;
    rc = ml__reduce(&in, res, err);
    if (rc)
        return rc;

    res->outputs = in.outputs | ML_OUT_LOSS;
    res->loss_name = e->info->name;
    res->reduction_name = e->red->name;
    res->path = ML_PATH_GENERAL;
    res->simd = ml__simd_name(e->simd);
    if (in.outputs & ML_OUT_PER_ELEMENT) {
        res->per_element.rank = vrank;
        memcpy(res->per_element.shape, vshape, sizeof(int64_t) * (size_t)vrank);
        res->per_element.numel = e->vn;
        res->per_element.data = e->values;
        e->values = NULL; /* ownership moves to the result */
    }
    return 0;
}

int ml_eval(const struct ml_request *req, struct ml_result *res, struct ml_error *err)
{
    struct eval e;
    memset(&e, 0, sizeof(e));
    memset(res, 0, sizeof(*res));
    if (err) {
        memset(err, 0, sizeof(*err));
        err->index = -1;
    }
    if (!req)
        return ml__fail(err, ML_EINVAL, "", -1, "no request");
    e.req = req;
    int rc = evaluate(&e, res, err);
    view_close(&e.labels);
    view_close(&e.pred);
    view_close(&e.weights);
    view_close(&e.pos_weight);
    free(e.class_labels);
    free(e.aux);
    free(e.class_weight);
    free(e.values);
    free(e.den);
    if (rc)
        ml_result_free(res);
    return rc;
}
