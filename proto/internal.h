/*
 * internal.h -- pieces shared by the native (request.c, response.c) and the Open Inference
 * Protocol (v2.c) front ends: the JSON tensor decoder and the table of outputs. Not installed.
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

/* ---- Numeric arrays decoded from the text (numarray.c) ------------------------------- */

/* The input tensors of a request that the scanner decoded: where each array was in the
 * text, and the opaque node that will stand for it in the document. */
struct mlp__region;
struct mlp__regions {
    struct mlp__region *list;
    size_t num;
};

/* Finds and decodes the nested arrays of numbers of a request's inputs (also those of a
 * batch's requests) in text[0..len): each array it decodes exactly as the jansson path
 * would becomes a region, anything else is left to jansson (numarray.c says why). Returns
 * 0, or -1 when out of memory; free *out with mlp__regions_free. */
int mlp__regions_scan(const char *text, size_t len, struct mlp__regions *out);

void mlp__regions_free(struct mlp__regions *r);

/* The text with each region replaced by `[]` (a "b64" string by `""`), for
 * json_load_callback. */
struct mlp__reader {
    const char *text;
    size_t len, pos;
    const struct mlp__regions *regions;
    size_t next;            /* the next region */
    int in_placeholder;     /* writing the placeholder of region `next` */
    size_t placeholder_pos; /* its bytes written */
};
size_t mlp__regions_read(void *buffer, size_t buflen, void *data);

/* Puts each region's node where jansson read its placeholder (the nodes pass to root).
 * Returns 0, or -1 when one is not where the scanner saw it, or out of memory. */
int mlp__regions_place(json_t *root, struct mlp__regions *r);

/* 1 when v is the node of a decoded array, with its rank, shape (ML_MAX_RANK entries) and
 * numel doubles at *data (owned by v); 0 otherwise. */
int mlp__tensor_node(const json_t *v, int *rank, int64_t *shape, const double **data,
                     int64_t *numel);

/* 1 when v is the node of a "b64" string numarray.c kept, with its text; 0 otherwise. */
int mlp__b64_node(const json_t *v, const char **text, size_t *len);

/* ---- Inputs and outputs (names.c) ------------------------------------------------------ */

/* The inputs of a loss, as the slots of struct mlp_request.tensors. */
enum mlp__slot { MLP__LABELS, MLP__LOGITS, MLP__PREDICTIONS, MLP__LOSSES, MLP__WEIGHTS };

#define MLP__NUM_SLOTS 5
#define MLP__NUM_INPUT_NAMES 6

/* An input's names on each protocol. */
struct mlp__input {
    enum mlp__slot slot;
    const char *name;    /* /v1: "labels" */
    const char *v2_name; /* /v2: "LABELS" */
};

/* The inputs: mlp__inputs[s] is slot s for s < MLP__NUM_SLOTS, then the alias of weights
 * ("mask", "MASK"). */
extern const struct mlp__input mlp__inputs[MLP__NUM_INPUT_NAMES];

/* Where req points at the tensor of a slot (&req->labels, ...). */
const struct ml_tensor **mlp__input_slot(struct ml_request *req, enum mlp__slot slot);

/* The slots a loss's main input may take (logits, predictions or losses; Keras losses take
 * logits or predictions): returns their count, 1 or 2. */
int mlp__main_inputs(enum ml_input_kind kind, enum mlp__slot slots[2]);

/* An output of an evaluation: its enum ml_output bit and its name on each protocol. */
struct mlp__output {
    unsigned bit;        /* ML_OUT_LOSS, ... */
    const char *name;    /* /v1: "per_element" */
    const char *v2_name; /* /v2: "PER_ELEMENT" */
    int is_count;        /* an integer count (v2 INT64), not a double (FP64) */
};

#define MLP__NUM_OUTPUTS 7

/* Every output, in the order responses list them (/v1 always; /v2 when none is named). */
extern const struct mlp__output mlp__outputs[MLP__NUM_OUTPUTS];

/* The output of that /v1 (v2 = 0) or /v2 (v2 = 1) name, or NULL; name may be NULL. */
const struct mlp__output *mlp__output_named(const char *name, int v2);

/* The output of that bit, or NULL. */
const struct mlp__output *mlp__output_of(unsigned bit);

/* "loss, per_element, ..." (or the v2 names) into buf, for error messages. */
void mlp__output_list(char *buf, size_t size, int v2);

/* One output of a result as doubles, as both encoders send it. */
struct mlp__values {
    const double *data;   /* numel values, row-major; points into res, or at `scalar` */
    int64_t numel;        /* elements: the array's, or 1 */
    int rank;             /* 0 for a scalar */
    const int64_t *shape; /* rank dimensions (NULL for a scalar) */
    int is_tensor;        /* an array of the result (loss for reduction none, per_element, ...) */
    int is_count;         /* num_nonzero_weights: an integer */
    double scalar;        /* the value of a scalar output */
};

/* Fills v with output `bit` of res. v->data may point at v->scalar: use v where it is. */
void mlp__output_values(const struct ml_result *res, unsigned bit, struct mlp__values *v);

#endif /* MLP_INTERNAL_H */
