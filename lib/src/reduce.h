/*
 * reduce.h -- weighting and reduction of a pointwise loss tensor.
 */
#ifndef ML_REDUCE_H
#define ML_REDUCE_H

#include "internal.h"

struct ml__reduce_in {
    const char *loss_name;
    const double *values; /* the pointwise loss, n elements of `shape` */
    int rank;
    const int64_t *shape;
    int64_t n;
    const double *w;        /* weights in double, or NULL */
    const float *wf;        /* weights in float (when w is NULL), or NULL for 1 */
    const int64_t *wstride; /* element strides of w along each dim of `shape` (0 = repeat) */
    const double *den;      /* per-element denominators (ML__DEN_EXPLICIT), or NULL */
    const struct ml__reduction *red;
    int elementwise; /* 1: the last axis is a class axis */
    int has_raw_sw;  /* Keras mean_with_sample_weight: divide by raw_sw_sum */
    double raw_sw_sum;
    unsigned outputs;
    int64_t max_elements;   /* the request's limit (0: none) */
    int64_t input_elements; /* of the largest input: the limit without one (tensor.h) */
};

/*
 * Fills res->loss (or res->loss_tensor for reduction none), weighted_sum, sum_weights,
 * num_nonzero_weights, and per_sample / per_class when requested. The caller frees the
 * result's arrays (ml_result_free) also on failure.
 */
int ml__reduce(const struct ml__reduce_in *in, struct ml_result *res, struct ml_error *err);

/* The reduced loss and the totals from the sums of loss * w, of the denominators and of the
 * weights (shared with the fused kernels of fast.c). */
void ml__reduce_totals(const struct ml__reduction *red, double num, double den, double sum_w,
                       int64_t nonzero, int has_raw_sw, double raw_sw, struct ml_result *res);

/* The public view of a reduction's division (ml_reduction_ratio). */
void ml__ratio_of(const struct ml__reduction *red, int elementwise, struct ml_ratio *out);

#endif /* ML_REDUCE_H */
