/*
 * mlp_v2.h -- the Open Inference Protocol (KServe v2) REST documents, with Triton's binary
 * tensor data extension, for losses: every catalogue name is a model.
 *
 * Request inputs by name: LABELS; LOGITS, PREDICTIONS or LOSSES; optional WEIGHTS (alias
 * MASK). Datatypes FP32, FP64, BOOL, UINT8, INT32, INT64, as JSON `data` (flat or nested,
 * row-major) or as binary (`parameters.binary_data_size`, little-endian bytes after the JSON
 * header whose length the Inference-Header-Content-Length header gives). The request's
 * `parameters` carry `reduction`, `dtype` ("float32"/"float64"), `allow_non_finite`,
 * `binary_data_output` and the loss's own parameters.
 *
 * Outputs: LOSS, PER_ELEMENT, PER_SAMPLE, PER_CLASS, WEIGHTED_SUM, SUM_WEIGHTS (FP64) and
 * NUM_NONZERO_WEIGHTS (INT64); only the requested ones are computed and sent (LOSS alone when
 * none is named), as JSON `data` or, with `binary_data`, as binary.
 */
#ifndef MLP_V2_H
#define MLP_V2_H

#include "mlp.h"

#define MLP_V2_MAX_OUTPUTS 7

struct mlp_v2_request {
    struct mlp_request base; /* the loss request; tensors may point into the body */
    const char *id;          /* echoed when given; NULL otherwise */
    int num_outputs;
    unsigned output_bits[MLP_V2_MAX_OUTPUTS]; /* in the order requested */
    int output_binary[MLP_V2_MAX_OUTPUTS];
    int dtype_given; /* parameters.dtype was given */
    /* Request parameters monitor, monitor_time, monitor_slice, monitor_id (values in the
     * document), for the server to feed a monitor; NULL when absent. */
    const json_t *monitor, *monitor_time, *monitor_slice, *monitor_id;
    /* Set by the caller: JSON members (",\"k\":v...") appended to the response's
     * parameters, or NULL. */
    const char *extra_parameters;
};

/* The v2 name of a dtype ("FP32", ...), or NULL. */
const char *mlp_v2_datatype(enum ml_dtype dtype);

/*
 * Decodes an inference request for `model` (a catalogue name; the caller has checked it).
 * body[0..len) holds the JSON header followed by the binary data; header_len is the
 * Inference-Header-Content-Length, or -1 when absent (all JSON). Binary tensors are used in
 * place when suitably aligned (copied otherwise), so body must outlive the request.
 * Returns 0, or a negative status (MLP_EMALFORMED, MLP_EBINARY, ML_E*) with err naming the
 * field; the request is released on failure.
 */
int mlp_v2_decode(const char *model, const char *body, size_t len, long long header_len,
                  struct mlp_v2_request *out, struct mlp_error *err);

/*
 * Appends the inference response: the JSON header, then the binary outputs. *header_len
 * receives the JSON's length; when it is less than b->len the response has binary data and
 * needs the Inference-Header-Content-Length header.
 */
void mlp_v2_response_write(struct mlp_buf *b, size_t *header_len, const char *model,
                           const struct ml_result *res, const struct mlp_v2_request *r);

/* Evaluates a decoded request and encodes its response (0) or error object (negative), then
 * releases the request. */
int mlp_v2_eval_decoded(const char *model, struct mlp_v2_request *r, const struct mlp_exec *exec,
                        struct mlp_buf *b, size_t *header_len_out, struct mlp_eval_info *info);

/* Decode, evaluate, encode: appends the response (0) or the error object (negative). */
int mlp_v2_eval(const char *model, const char *body, size_t len, long long header_len,
                const struct mlp_exec *exec, struct mlp_buf *b, size_t *header_len_out,
                struct mlp_eval_info *info);

/* GET /v2/models/{model}: name, versions, platform, inputs and outputs. */
void mlp_v2_model_metadata(struct mlp_buf *b, const struct ml_loss_info *info);

/* GET /v2: the server's name, version and extensions. */
void mlp_v2_server_metadata(struct mlp_buf *b);

#endif /* MLP_V2_H */
