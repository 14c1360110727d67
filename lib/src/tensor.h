/*
 * tensor.h -- reading one element of a request tensor, and the size limit of every array.
 */
#ifndef ML_TENSOR_H
#define ML_TENSOR_H

#include "internal.h"

/* Arrays larger than this are refused whatever the caller's limit: 2^40 elements keeps every
 * byte count below 2^44 and far from int64 overflow. */
#define ML_ABSOLUTE_MAX_ELEMENTS (INT64_C(1) << 40)

/*
 * Element i of t as a double, through its dtype: float32, float64, uint8, int32 and int64 as
 * their values (int64 beyond 2^53 rounded to nearest), bool as 0 or 1. t->dtype must be one
 * of enum ml_dtype and i in range; the caller checks both.
 */
double ml__tensor_get(const struct ml_tensor *t, int64_t i);

/*
 * The size rule, for input tensors and for every array the library or an encoder would
 * make: the footprint of a shape, the product over its dims of max(dim, 1), must not exceed
 * max_elements (when > 0) nor ML_ABSOLUTE_MAX_ELEMENTS. The footprint bounds both the
 * elements of the array and the size of its nested JSON: an empty array of shape [2^40, 0]
 * has no element but is 2^40 "[]" in JSON. Computed without overflow, whatever the dims
 * (negative ones count as 1; the caller rejects them). Returns 0, or ML_ETOOLARGE with `err`
 * naming `field` (what: the array's name in the message, e.g. "per_class") and the limit.
 */
int ml__check_size(const char *field, const char *what, int rank, const int64_t *shape,
                   int64_t max_elements, struct ml_error *err);

#endif /* ML_TENSOR_H */
