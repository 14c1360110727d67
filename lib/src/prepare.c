/*
 * prepare.c -- each framework's shape rules for its losses, then the pointwise kernel.
 *
 * The order of the checks follows the frameworks' own, so that the first error reported is
 * the one the reference would raise.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"
#include "softmax.h"
#include "tensor.h"

int ml__same_shape(int ra, const int64_t *a, int rb, const int64_t *b)
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

static int alloc_values(struct eval *e, struct ml_error *err)
{
    /* The array counts by its elements (a loss per sample has one per row, even where the
     * rows hold no class: [2^30, 0] makes 2^30 of them from no input element); as per_element
     * it is also an output, whose footprint counts (the reduction-none loss: reduce.c). */
    e->vn = ml_shape_numel(e->vrank, e->vshape);
    int rc = ml__check_output_size(e->pred_field, "the pointwise loss", 1, &e->vn,
                                   e->req->max_elements, e->input_elements, err);
    if (!rc && (e->req->outputs & ML_OUT_PER_ELEMENT))
        rc = ml__check_output_size("outputs", "per_element", e->vrank, e->vshape,
                                   e->req->max_elements, e->input_elements, err);
    if (rc)
        return rc;
    e->values = malloc((size_t)(e->vn > 0 ? e->vn : 1) * sizeof(double));
    if (!e->values)
        return ml__fail(err, ML_ENOMEM, "", -1, "out of memory for %lld loss values",
                        (long long)e->vn);
    return 0;
}

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
    k->label_smoothing = p->label_smoothing;
    k->alpha = p->focal.alpha;
    k->gamma = p->focal.gamma;
    k->epsilon = e->def->id == ML__ASL ? p->asl.eps : p->epsilon;
    k->delta = p->delta;
    k->gamma_neg = p->asl.gamma_neg;
    k->gamma_pos = p->asl.gamma_pos;
    k->clip = p->asl.clip;
    k->from_logits = p->keras.from_logits;
    k->apply_class_balancing = p->focal.apply_class_balancing;
    k->simd = (int)e->simd;
    k->allow_non_finite = e->req->allow_non_finite != 0;
}

/* TF v1 pointwise losses, tf.nn ops, torch BCE, torchvision focal, ASL. */
static int prepare_elementwise(struct eval *e, struct ml__kctx *k, struct ml_error *err)
{
    const struct ml_tensor *x = e->pred.t;
    if (e->info->takes_labels) {
        const struct ml_tensor *z = e->labels.t;
        if (!ml__same_shape(z->rank, z->shape, x->rank, x->shape))
            return shape_fail(err, "labels", e->pred_field, z->rank, z->shape, x->rank, x->shape,
                              "they must be identical (no broadcasting)");
    }
    if (e->def->id == ML__TFNN_WEIGHTED || e->def->id == ML__TORCH_BCE) {
        int rc = ml__open_pos_weight(e, err);
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

static int prepare_tf_softmax(struct eval *e, struct ml__kctx *k, int run, struct ml_error *err)
{
    const struct ml_tensor *x = e->pred.t, *y = e->labels.t;
    if (x->rank < 1)
        return ml__fail(err, ML_ESHAPE, "logits", -1,
                        "logits must have a class axis (rank >= 1), got a scalar");
    if (!ml__same_shape(y->rank, y->shape, x->rank, x->shape))
        return shape_fail(err, "labels", "logits", y->rank, y->shape, x->rank, x->shape,
                          "softmax_cross_entropy needs one-hot (or soft) labels of the logits' "
                          "shape");
    double ls = e->params.label_smoothing;
    if (ls > 0 && x->rank < 2)
        return ml__fail(err, ML_ESHAPE, "labels", -1,
                        "label_smoothing takes the number of classes from axis 1 of the "
                        "labels (as TensorFlow does); rank-1 labels have no axis 1");
    fill_common(e, k);
    split_axis(x, x->rank - 1, k, &e->vrank, e->vshape);
    k->smoothing_classes = x->rank >= 2 ? (double)x->shape[1] : 1;
    if (!run)
        return 0;
    int rc = alloc_values(e, err);
    return rc ? rc : run_kernel(e, k, err);
}

static int prepare_tf_sparse(struct eval *e, struct ml__kctx *k, int *wrank, int64_t *wshape,
                             int run, struct ml_error *err)
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
    if (!ml__same_shape(yrank, y->shape, x->rank - 1, x->shape))
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
    int rc = ml__open_class_labels(e, err);
    if (rc)
        return rc;
    fill_common(e, k);
    k->sparse = 1;
    k->labels = e->class_labels;
    split_axis(x, x->rank - 1, k, &e->vrank, e->vshape);
    if (!run)
        return 0;
    rc = alloc_values(e, err);
    return rc ? rc : run_kernel(e, k, err);
}

static int prepare_torch_ce(struct eval *e, struct ml__kctx *k, int run, struct ml_error *err)
{
    const struct ml_tensor *x = e->pred.t, *y = e->labels.t;
    if (x->rank < 1)
        return ml__fail(err, ML_ESHAPE, "logits", -1,
                        "logits must have a class dim (rank >= 1), got a scalar");
    int class_axis = x->rank == 1 ? 0 : 1;
    int64_t classes = x->shape[class_axis];
    double ls = e->params.label_smoothing;
    /* torch 1.13 refuses only values above 1; those <= 0 mean no smoothing (ls > 0 in
     * LossNLL.cpp), as in every other framework here. */
    if (ls > 1)
        return ml__fail(err, ML_EPARAM, "params.label_smoothing", -1,
                        "label_smoothing must be between 0.0 and 1.0 (values <= 0 mean none), "
                        "got %g",
                        ls);
    int64_t ignore_index = e->params.ignore_index;
    int rc;

    fill_common(e, k);
    split_axis(x, class_axis, k, &e->vrank, e->vshape);
    k->ignore_index = ignore_index;
    if (ml__same_shape(y->rank, y->shape, x->rank, x->shape)) {
        /* Probability targets (torch: target.shape == input.shape). */
        if (ignore_index >= 0)
            return ml__fail(err, ML_EPARAM, "params.ignore_index", -1,
                            "ignore_index is not supported for probability targets");
        k->sparse = 0;
    } else if (ml__same_shape(y->rank, y->shape, e->vrank, e->vshape)) {
        rc = ml__open_class_labels(e, err);
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
            e->class_weight[c] = ml__view_get(&e->weights, e->dtype, c);
        k->class_weight = e->class_weight;
    }
    if (!run)
        return 0;
    rc = alloc_values(e, err);
    if (rc)
        return rc;
    e->den = malloc((size_t)(e->vn > 0 ? e->vn : 1) * sizeof(double));
    if (!e->den)
        return ml__fail(err, ML_ENOMEM, "", -1, "out of memory");
    return run_kernel(e, k, err);
}

/* Keras: y_true and y_pred brought to the same rank, then identical shapes required. */
static int prepare_keras(struct eval *e, struct ml__kctx *k, int run, struct ml_error *err)
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
    if (!ml__same_shape(yrank, yshape, xrank, xshape))
        return shape_fail(err, "labels", e->pred_field, y->rank, y->shape, x->rank, x->shape,
                          "Keras requires target and output of the same shape");
    if (xrank < 1)
        return ml__fail(err, ML_ESHAPE, e->pred_field, -1,
                        "Keras losses reduce over an axis; scalars have none");
    int64_t axis = e->params.keras.axis;
    int rc;
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
    if (!run)
        return 0;
    rc = alloc_values(e, err);
    return rc ? rc : run_kernel(e, k, err);
}

int ml__prepare(struct eval *e, struct ml__kctx *k, int *wrank, int64_t *wshape,
                struct ml_error *err)
{
    int rc;
    switch (e->def->id) {
    case ML__TF_SOFTMAX_CE:
        rc = prepare_tf_softmax(e, k, 1, err);
        break;
    case ML__TF_SPARSE_SOFTMAX_CE:
        rc = prepare_tf_sparse(e, k, wrank, wshape, 1, err);
        break;
    case ML__TORCH_CE:
        rc = prepare_torch_ce(e, k, 1, err);
        break;
    case ML__K3_BCE:
    case ML__K3_FOCAL:
    case ML__K3_CCE:
    case ML__K2_BCE:
    case ML__K2_FOCAL:
        rc = prepare_keras(e, k, 1, err);
        break;
    default:
        rc = prepare_elementwise(e, k, err);
        break;
    }
    return rc;
}

int ml__prepare_plan(struct eval *e, struct ml__kctx *k, int *wrank, int64_t *wshape,
                     struct ml_error *err)
{
    switch (e->def->id) {
    case ML__TF_SOFTMAX_CE:
        return prepare_tf_softmax(e, k, 0, err);
    case ML__TF_SPARSE_SOFTMAX_CE:
        return prepare_tf_sparse(e, k, wrank, wshape, 0, err);
    case ML__TORCH_CE:
        return prepare_torch_ce(e, k, 0, err);
    case ML__K3_CCE:
        return prepare_keras(e, k, 0, err);
    default:
        return ML_EINVAL; /* not a loss of the softmax family */
    }
}
