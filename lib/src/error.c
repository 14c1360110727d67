/*
 * error.c -- status codes, their names, and the error-detail helper.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

static const struct {
    int code;
    const char *name;
    const char *text;
} statuses[] = {
    {ML_OK, "ok", "success"},
    {ML_EINVAL, "invalid_request", "invalid request"},
    {ML_ETENSOR, "invalid_tensor", "invalid tensor"},
    {ML_EUNKNOWN_LOSS, "unknown_loss", "unknown loss"},
    {ML_EUNKNOWN_PARAM, "unknown_parameter", "unknown parameter"},
    {ML_EPARAM, "bad_parameter", "bad parameter value"},
    {ML_EREDUCTION, "unknown_reduction", "unknown reduction"},
    {ML_ESHAPE, "shape_mismatch", "shape mismatch"},
    {ML_EBROADCAST, "broadcast_error", "weights cannot be broadcast"},
    {ML_ENONFINITE, "non_finite_input", "non-finite input"},
    {ML_ELABEL, "invalid_label", "invalid class label"},
    {ML_ETOOLARGE, "too_large", "input too large"},
    {ML_ENOMEM, "out_of_memory", "out of memory"},
    {ML_EOUTPUT, "unsupported_output", "unsupported output"},
};

const char *ml_strerror(int status)
{
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
        if (statuses[i].code == status)
            return statuses[i].text;
    return "unknown error";
}

const char *ml_status_name(int status)
{
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
        if (statuses[i].code == status)
            return statuses[i].name;
    return "internal_error";
}

int ml__fail(struct ml_error *err, int code, const char *field, int64_t index, const char *fmt, ...)
{
    if (!err)
        return code;
    err->code = code;
    snprintf(err->field, sizeof(err->field), "%s", field ? field : "");
    err->index = index;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return code;
}

const char *ml__shape_str(char *buf, size_t size, int rank, const int64_t *shape)
{
    size_t used = 0;
    used += (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < rank && used < size; d++)
        used +=
            (size_t)snprintf(buf + used, size - used, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
    return buf;
}

int ml__streq_ci(const char *a, const char *b)
{
    for (;; a++, b++) {
        char ca = *a, cb = *b;
        if (ca >= 'A' && ca <= 'Z')
            ca = (char)(ca - 'A' + 'a');
        if (cb >= 'A' && cb <= 'Z')
            cb = (char)(cb - 'A' + 'a');
        if (ca != cb)
            return 0;
        if (!ca)
            return 1;
    }
}

int64_t ml_shape_numel(int rank, const int64_t *shape)
{
    int64_t n = 1;
    for (int d = 0; d < rank; d++)
        n *= shape[d];
    return n;
}

size_t ml_dtype_size(enum ml_dtype dtype)
{
    switch (dtype) {
    case ML_FLOAT32:
    case ML_INT32:
        return 4;
    case ML_FLOAT64:
    case ML_INT64:
        return 8;
    case ML_UINT8:
    case ML_BOOL:
        return 1;
    }
    return 0;
}

const char *ml_dtype_name(enum ml_dtype dtype)
{
    static const char *const names[] = {"float32", "float64", "uint8", "bool", "int32", "int64"};
    return (unsigned)dtype < sizeof(names) / sizeof(names[0]) ? names[dtype] : NULL;
}
