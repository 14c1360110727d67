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

/* The footprint rule against `limit`, named in the message by `limit_name`. */
static int check_footprint(const char *field, const char *what, int rank, const int64_t *shape,
                           int64_t limit, const char *limit_name, struct ml_error *err)
{
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
                            "limit %s",
                            what, s,
                            empty ? "empty, but counting each empty dimension as 1 (as its "
                                    "nested JSON does) it spans"
                                  : "it has",
                            (long long)limit, limit_name);
        }
        footprint *= dim;
    }
    return 0;
}

int ml__check_size(const char *field, const char *what, int rank, const int64_t *shape,
                   int64_t max_elements, struct ml_error *err)
{
    if (max_elements > 0 && max_elements < ML_ABSOLUTE_MAX_ELEMENTS)
        return check_footprint(field, what, rank, shape, max_elements, "(max_elements)", err);
    return check_footprint(field, what, rank, shape, ML_ABSOLUTE_MAX_ELEMENTS,
                           "of the library (2^40)", err);
}

int ml__check_output_size(const char *field, const char *what, int rank, const int64_t *shape,
                          int64_t max_elements, int64_t input_elements, struct ml_error *err)
{
    if (max_elements > 0 || input_elements >= ML_ABSOLUTE_MAX_ELEMENTS - ML__FREE_OUTPUT_ELEMENTS)
        return ml__check_size(field, what, rank, shape, max_elements, err);
    return check_footprint(field, what, rank, shape, input_elements + ML__FREE_OUTPUT_ELEMENTS,
                           "of an output without max_elements (the elements of its largest "
                           "input + 2^24)",
                           err);
}
