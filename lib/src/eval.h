/*
 * eval.h -- the state of one ml_eval() and what its files share; not installed.
 *
 * ml_eval() is split by concern: eval.c orchestrates (names, reduction, inputs, then the fused
 * or the general path, weights and reduction); view.c opens the inputs in the compute
 * precision (limits, conversion, NaN/Inf checks, class indices, pos_weight); prepare.c applies
 * each framework's shape rules and runs the pointwise kernel; fused.c plans and runs the fused
 * path (fast.c) when the request allows it.
 */
#ifndef ML_EVAL_H
#define ML_EVAL_H

#include "fast.h"
#include "internal.h"
#include "params.h"
#include "simd.h"

/* A request tensor converted to the compute precision (or used in place). */
struct view {
    const char *field;
    const struct ml_tensor *t;
    int64_t n;
    const void *data; /* compute precision */
    void *owned;
    int unchecked; /* the NaN/Inf check is left to the fused kernel (view_check_deferred) */
};

struct eval {
    const struct ml_request *req;
    int defer; /* the request may take the fused path: its views skip the NaN/Inf check */
    const struct ml_loss_info *info;
    const struct ml__loss_def *def;
    struct ml__params params;
    enum ml_dtype dtype;
    const struct ml__reduction *red;
    enum ml__simd simd;     /* the instruction set of this evaluation, picked once */
    int64_t input_elements; /* the largest input's: bounds the arrays made (tensor.h) */

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

/* ---- view.c ----------------------------------------------------------------------------- */

/* Opens a view of t in the compute precision `dtype`, within the request's size limits (its
 * footprint, tensor.h). `defer` leaves the NaN/Inf check to the fused kernel, which reads the
 * data anyway (ml__view_check_deferred runs it when the kernel does not). */
int ml__view_open(struct view *v, const char *field, const struct ml_tensor *t,
                  const struct eval *e, int defer, struct ml_error *err);
void ml__view_close(struct view *v);
/* Element i of an open view, as a double. */
double ml__view_get(const struct view *v, enum ml_dtype dtype, int64_t i);
/* The NaN/Inf checks the views left to the fused kernel, in the order they were opened. */
int ml__view_check_deferred(struct eval *e, struct ml_error *err);
/* Class indices (e->labels) as int64 in e->class_labels; ML_ELABEL for a non-integer. */
int ml__open_class_labels(struct eval *e, struct ml_error *err);
/* pos_weight broadcast (numpy rules) to the logits' shape into e->aux, in compute precision;
 * nothing for torch's pos_weight=None. */
int ml__open_pos_weight(struct eval *e, struct ml_error *err);

/* ---- prepare.c -------------------------------------------------------------------------- */

int ml__same_shape(int ra, const int64_t *a, int rb, const int64_t *b);
/* The loss's framework shape rules, then its pointwise kernel into e->values (shape
 * e->vrank, e->vshape): on return k describes the run. Weights of the sparse softmax may be
 * squeezed (*wrank). */
int ml__prepare(struct eval *e, struct ml__kctx *k, int *wrank, int64_t *wshape,
                struct ml_error *err);

/* ---- fused.c ---------------------------------------------------------------------------- */

/* ml__try_fused's answer when the request takes the general path. */
#define ML__NOT_FUSED 1

/* Whether the loss, parameters, outputs and reduction suit the fused path (the inputs'
 * shapes and weight layout are checked by ml__try_fused). */
int ml__fused_candidate(const struct eval *e);
/* The loss and totals in one fused pass (fast.c), the bits of the general path: 0 with res
 * filled, an error (a NaN/Inf found), or ML__NOT_FUSED. */
int ml__try_fused(struct eval *e, struct ml_result *res, int wrank, const int64_t *wshape,
                  struct ml_error *err);

#endif /* ML_EVAL_H */
