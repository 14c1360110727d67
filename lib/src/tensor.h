/*
 * tensor.h -- reading one element of a request tensor, and the size limit of every array.
 */
#ifndef ML_TENSOR_H
#define ML_TENSOR_H

#include <stdint.h>

#include "internal.h"

/* Arrays larger than this are refused whatever the caller's limit: 2^40 elements keeps every
 * byte count below 2^44 and far from int64 overflow (and below SIZE_MAX / 16 where size_t
 * is narrower). */
#define ML_ABSOLUTE_MAX_ELEMENTS                                                                   \
    ((int64_t)(SIZE_MAX / 16 < (UINT64_C(1) << 40) ? SIZE_MAX / 16 : (UINT64_C(1) << 40)))
_Static_assert(ML_ABSOLUTE_MAX_ELEMENTS <= INT64_MAX / 16 &&
                   (uint64_t)ML_ABSOLUTE_MAX_ELEMENTS <= SIZE_MAX / 16,
               "every byte count of an array of ML_ABSOLUTE_MAX_ELEMENTS fits int64_t and size_t");

/* Without a caller's limit, the arrays an evaluation makes (per_element, per_sample,
 * per_class, the reduction-none loss) may exceed the elements of its inputs by this much at
 * most: an empty dimension lets a few bytes of request name an output of any footprint
 * ([2^40, 0] per_element is 2^40 "[]" in JSON), which the inputs do not pay for. */
#define ML__FREE_OUTPUT_ELEMENTS (INT64_C(1) << 24)

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

/* The same rule for an array an evaluation makes: with max_elements (> 0) as above, without
 * it input_elements (the elements of its largest input) + ML__FREE_OUTPUT_ELEMENTS. */
int ml__check_output_size(const char *field, const char *what, int rank, const int64_t *shape,
                          int64_t max_elements, int64_t input_elements, struct ml_error *err);

#endif /* ML_TENSOR_H */
