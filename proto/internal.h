/*
 * internal.h -- pieces of the JSON decoder shared by the native (request.c) and the Open
 * Inference Protocol (v2.c) front ends. Not installed.
 */
#ifndef MLP_INTERNAL_H
#define MLP_INTERNAL_H

#include "mlp.h"

/* Fills err (when not NULL) and returns code. */
int mlp__fail(struct mlp_error *err, int code, const char *field, long long index, const char *fmt,
              ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

/* A tensor of the native protocol (number, nested array, {shape, data} or {shape, dtype,
 * b64}); its buffer is owned by r. */
int mlp__tensor_decode(const json_t *v, const char *field, struct mlp_request *r,
                       struct ml_tensor *t, struct mlp_error *err);

/* The "params" object: names to numbers, booleans or tensors. */
int mlp__params_decode(const json_t *obj, struct mlp_request *r, struct mlp_error *err);

/* Hands buf to r (freed by mlp_request_free), or frees it and fails. */
int mlp__keep_buffer(struct mlp_request *r, void *buf, const char *field, struct mlp_error *err);

/* "[4, 5]" */
void mlp__shape_text(char *buf, size_t size, int rank, const int64_t *shape);

/* A JSON array of dimensions into t->rank and t->shape; `name` is how messages call it
 * ("labels.shape"), `field` the error's field. */
int mlp__shape_decode(const json_t *shape, const char *field, const char *name, struct ml_tensor *t,
                      struct mlp_error *err);

/* Elements of a shape; -1 for a negative dimension, -2 when its footprint, the product of
 * max(dim, 1), is beyond 2^40 (the library's absolute limit, lib/src/tensor.h): an empty
 * shape such as [2^40, 0, 2^40] is refused here, before a size is computed from it. */
int64_t mlp__numel_checked(int rank, const int64_t *shape);

#endif /* MLP_INTERNAL_H */
