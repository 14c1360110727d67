/*
 * tensor.c -- one element of a request tensor as a double; the size limit of every array.
 */
#include "tensor.h"

double ml__tensor_get(const struct ml_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case ML_FLOAT32:
        return (double)((const float *)t->data)[i];
    case ML_FLOAT64:
        return ((const double *)t->data)[i];
    case ML_UINT8:
        return (double)((const uint8_t *)t->data)[i];
    case ML_BOOL:
        return ((const uint8_t *)t->data)[i] != 0 ? 1.0 : 0.0;
    case ML_INT32:
        return (double)((const int32_t *)t->data)[i];
    case ML_INT64:
        return (double)((const int64_t *)t->data)[i];
    }
    return 0; /* not reached: the caller checked the dtype */
}

int ml__check_size(const char *field, const char *what, int rank, const int64_t *shape,
                   int64_t max_elements, struct ml_error *err)
{
    int64_t limit = max_elements > 0 && max_elements < ML_ABSOLUTE_MAX_ELEMENTS
                        ? max_elements
                        : ML_ABSOLUTE_MAX_ELEMENTS;
    /* footprint <= limit throughout, so footprint * dim never overflows: dim > limit /
     * footprint is exactly footprint * dim > limit. */
    int64_t footprint = 1;
    int empty = 0;
    for (int d = 0; d < rank; d++)
        empty |= shape[d] == 0;
    for (int d = 0; d < rank; d++) {
        int64_t dim = shape[d] > 1 ? shape[d] : 1;
        if (dim > limit / footprint) {
            char s[160];
            ml__shape_str(s, sizeof(s), rank, shape);
            return ml__fail(err, ML_ETOOLARGE, field, -1,
                            "%s of shape %s is too large: %s more than %lld elements, the "
                            "limit%s",
                            what, s,
                            empty ? "empty, but counting each empty dimension as 1 (as its "
                                    "nested JSON does) it spans"
                                  : "it has",
                            (long long)limit,
                            limit == max_elements ? " (max_elements)" : " of the library (2^40)");
        }
        footprint *= dim;
    }
    return 0;
}
