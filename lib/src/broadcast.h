/*
 * broadcast.h -- weight broadcasting rules of the frameworks.
 */
#ifndef ML_BROADCAST_H
#define ML_BROADCAST_H

#include "internal.h"

/*
 * numpy broadcasting of a tensor of shape tshape *to* vshape (the result must keep
 * vshape). On success writes the tensor's shape padded with leading 1s to vrank into
 * `aligned` and returns 0; otherwise returns -1 with *bad_dim the first dim at fault
 * (-1 when the tensor has more dims than vshape).
 */
int ml__numpy_align(int trank, const int64_t *tshape, int vrank, const int64_t *vshape,
                    int64_t *aligned, int *bad_dim);

/* Row-major element strides of an aligned shape, 0 along dims of size 1 (repeat). */
void ml__strides(int rank, const int64_t *aligned, int64_t *stride);

/*
 * Applies a framework's weight rule. May change the loss shape (*vrank, vshape) where
 * the framework reshapes the loss (Keras 3 expands a rank-1 loss to [N, 1] against [N, 1]
 * weights). On success `aligned` holds the weight shape aligned to the final loss shape.
 * Errors: ML_EBROADCAST with the framework's message.
 */
int ml__weights_align(enum ml__weight_rule rule, const char *loss, int *vrank, int64_t *vshape,
                      int wrank, const int64_t *wshape, int64_t *aligned, struct ml_error *err);

#endif /* ML_BROADCAST_H */
