/*
 * view.c -- the inputs of an evaluation in the compute precision: size limits, conversion
 * from any dtype, the NaN/Inf checks, class indices and pos_weight.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "broadcast.h"
#include "eval.h"
#include "tensor.h"

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
static int view_check(const struct view *v, const struct eval *e, struct ml_error *err)
{
    const struct ml_tensor *t = v->t;
    const char *field = v->field;
    int64_t i = e->dtype == ML_FLOAT32 ? ml__first_non_finite_f32((int)e->simd, v->data, v->n)
                                       : ml__first_non_finite_f64((int)e->simd, v->data, v->n);
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
int ml__view_open(struct view *v, const char *field, const struct ml_tensor *t,
                  const struct eval *e, int defer, struct ml_error *err)
{
    const struct ml_request *req = e->req;
    const enum ml_dtype dtype = e->dtype;
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
            return view_check(v, e, err);
    }
    return 0;
}

void ml__view_close(struct view *v)
{
    free(v->owned);
    v->owned = NULL;
}

double ml__view_get(const struct view *v, enum ml_dtype dtype, int64_t i)
{
    return dtype == ML_FLOAT32 ? (double)((const float *)v->data)[i] : ((const double *)v->data)[i];
}

/* The NaN/Inf checks the views left to the fused kernel, in the order they were opened. */
int ml__view_check_deferred(struct eval *e, struct ml_error *err)
{
    struct view *views[3] = {&e->labels, &e->pred, &e->weights};
    for (int i = 0; i < 3; i++) {
        if (!views[i]->unchecked)
            continue;
        views[i]->unchecked = 0;
        int rc = view_check(views[i], e, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* Class indices: integral, converted to int64 (range is checked by the kernel). */
int ml__open_class_labels(struct eval *e, struct ml_error *err)
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
        double v = ml__view_get(&e->labels, e->dtype, i);
        if (!(v == floor(v)) || fabs(v) > 9.0e15)
            return ml__fail(err, ML_ELABEL, "labels", i,
                            "labels[%lld] = %g is not a class index (an integer)", (long long)i, v);
        e->class_labels[i] = (int64_t)v;
    }
    return 0;
}

/* pos_weight broadcast (numpy rules) to the logits' shape, expanded in compute precision. */
int ml__open_pos_weight(struct eval *e, struct ml_error *err)
{
    const struct ml_tensor *t = e->params.pos_weight.tensor;
    const struct ml_tensor *x = e->pred.t;
    size_t size = e->dtype == ML_FLOAT32 ? sizeof(float) : sizeof(double);
    struct ml_tensor scalar;
    double value = e->params.pos_weight.number;
    if (!t) {
        if (e->def->id == ML__TORCH_BCE && !e->params.pos_weight.given)
            return 0; /* pos_weight=None */
        memset(&scalar, 0, sizeof(scalar));
        scalar.dtype = ML_FLOAT64;
        scalar.data = &value;
        t = &scalar;
    }
    int rc = ml__view_open(&e->pos_weight, "params.pos_weight", t, e, 0, err);
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
