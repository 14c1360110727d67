/*
 * fuzz_v2.c -- Open Inference Protocol (v2) infer requests, JSON and binary framing
 * (mlp_v2_eval, which decodes with mlp_v2_decode).
 *
 * The input: byte 0 picks the model (its low 5 bits index `models` below, modulo its
 * length) and, with bit 7, shifts the binary data off 8-byte alignment (the server aligns
 * it; an unaligned tensor is copied); bytes 1-2 are the Inference-Header-Content-Length,
 * little-endian, 0xFFFF for none; the rest is the body.
 *
 * Invariants: the answer's JSON header (its first header_len bytes) is valid JSON and
 * header_len <= the answer's length; never out_of_memory (4096 elements at most); an error
 * is an error object with a known code and no binary part; a success names the model, has one output per requested name, each FP64 or
 * INT64 with a shape, its values either as `data` (as many as the shape says) or as
 * binary_data_size bytes (8 per value), and the binary sizes add up to what follows the
 * header; a request that decodes, written as a /v1 body (fuzz_encode_request), decodes on
 * /v1 to the same request (tensors' dtypes, shapes and bytes, params, outputs, ...).
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "mlp_v2.h"

#define MAX_ELEMENTS 4096

/* The models (make_corpus.py reads this list to write its seeds' first byte). */
static const char *const models[] = {
    /* models-begin */
    "tf.compat.v1.losses.sigmoid_cross_entropy",
    "tf.compat.v1.losses.softmax_cross_entropy",
    "tf.compat.v1.losses.sparse_softmax_cross_entropy",
    "tf.compat.v1.losses.log_loss",
    "tf.compat.v1.losses.mean_squared_error",
    "tf.compat.v1.losses.absolute_difference",
    "tf.compat.v1.losses.huber_loss",
    "tf.compat.v1.losses.hinge_loss",
    "tf.compat.v1.losses.compute_weighted_loss",
    "tf.nn.sigmoid_cross_entropy_with_logits",
    "tf.nn.weighted_cross_entropy_with_logits",
    "keras3.losses.BinaryCrossentropy",
    "keras3.losses.BinaryFocalCrossentropy",
    "keras3.losses.CategoricalCrossentropy",
    "keras2.losses.BinaryCrossentropy",
    "keras2.losses.BinaryFocalCrossentropy",
    "torch.nn.functional.binary_cross_entropy_with_logits",
    "torch.nn.functional.cross_entropy",
    "torchvision.ops.sigmoid_focal_loss",
    "ASL.AsymmetricLoss",
    "sigmoid_cross_entropy",
    "sparse_softmax_cross_entropy",
    /* models-end */
};

#define NUM_MODELS (sizeof(models) / sizeof(models[0]))

static int64_t shape_numel(const json_t *shape)
{
    int64_t n = 1;
    for (size_t d = 0; d < json_array_size(shape); d++) {
        const json_t *dim = json_array_get(shape, d);
        FUZZ_CHECK(json_is_integer(dim) && json_integer_value(dim) >= 0,
                   "an output dimension is not a non-negative integer");
        n *= json_integer_value(dim);
    }
    return n;
}

static void check_success(const json_t *doc, const char *model, size_t binary_bytes)
{
    FUZZ_CHECK(json_is_object(doc) && !json_object_get(doc, "error"), "not a response object");
    const json_t *name = json_object_get(doc, "model_name");
    FUZZ_CHECK(json_is_string(name) && !strcmp(json_string_value(name), model),
               "model_name is not %s", model);
    const json_t *outputs = json_object_get(doc, "outputs");
    FUZZ_CHECK(json_is_array(outputs) && json_array_size(outputs) >= 1 &&
                   json_array_size(outputs) <= MLP_V2_MAX_OUTPUTS,
               "outputs is not an array of 1 to %d", MLP_V2_MAX_OUTPUTS);
    size_t binary = 0;
    for (size_t i = 0; i < json_array_size(outputs); i++) {
        const json_t *o = json_array_get(outputs, i);
        const json_t *dt = json_object_get(o, "datatype");
        const json_t *shape = json_object_get(o, "shape");
        FUZZ_CHECK(json_is_string(json_object_get(o, "name")), "output %zu has no name", i);
        FUZZ_CHECK(json_is_string(dt) && (!strcmp(json_string_value(dt), "FP64") ||
                                          !strcmp(json_string_value(dt), "INT64")),
                   "output %zu: datatype", i);
        FUZZ_CHECK(json_is_array(shape), "output %zu has no shape", i);
        int64_t n = shape_numel(shape);
        const json_t *size = json_object_get(json_object_get(o, "parameters"), "binary_data_size");
        const json_t *values = json_object_get(o, "data");
        if (size) {
            FUZZ_CHECK(!values, "output %zu: both data and binary_data_size", i);
            FUZZ_CHECK(json_is_integer(size) && json_integer_value(size) == n * 8,
                       "output %zu: binary_data_size is not 8 x %lld", i, (long long)n);
            binary += (size_t)n * 8;
        } else {
            FUZZ_CHECK(json_is_array(values) && (int64_t)json_array_size(values) == n,
                       "output %zu: %zu values for %lld elements", i, json_array_size(values),
                       (long long)n);
        }
    }
    FUZZ_CHECK(binary == binary_bytes,
               "the outputs announce %zu binary bytes, %zu follow the header", binary,
               binary_bytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    const char *model = models[(data[0] & 31) % NUM_MODELS];
    unsigned hl = data[1] | (unsigned)data[2] << 8;
    long long header_len = hl == 0xFFFF ? -1 : (long long)hl;
    size_t len = size - 3;

    /* The body in a buffer of its own, the binary part 8-byte aligned as the server puts it
     * (or one byte off), ending where the allocation ends. */
    size_t pad = header_len > 0 ? (8 - (size_t)header_len % 8) % 8 : 0;
    if (data[0] & 0x80)
        pad = (pad + 1) % 8;
    char *mem = malloc(pad + len + (pad + len == 0));
    FUZZ_CHECK(mem != NULL, "out of memory");
    char *body = mem + pad;
    if (len)
        memcpy(body, data + 3, len);

    struct mlp_buf b = {0};
    struct mlp_exec exec = {MAX_ELEMENTS, NULL, NULL};
    struct mlp_eval_info info;
    size_t out_header_len = (size_t)-1;
    int rc = mlp_v2_eval(model, body, len, header_len, &exec, &b, &out_header_len, &info);
    FUZZ_CHECK(!b.failed, "out of memory");
    FUZZ_CHECK(out_header_len <= b.len, "header_len %zu beyond the answer's %zu bytes",
               out_header_len, b.len);
    json_t *doc = fuzz_parse_json(b.data, out_header_len, "the v2 answer's header");
    /* With 4096 elements at most, nothing needs much memory: out_of_memory means an
     * allocation sized by something else than the data. */
    FUZZ_CHECK(rc != ML_ENOMEM, "out_of_memory: %s", b.data);
    if (rc) {
        FUZZ_CHECK(out_header_len == b.len, "an error with a binary part");
        fuzz_check_error(doc, rc);
        FUZZ_CHECK(info.loss_name == NULL, "a failed request names a loss");
    } else {
        check_success(doc, model, b.len - out_header_len);
        FUZZ_CHECK(info.loss_name != NULL, "a success names no loss");
        FUZZ_CHECK(info.elements >= 0 && info.elements <= MAX_ELEMENTS,
                   "%lld elements with a limit of %d", info.elements, MAX_ELEMENTS);
    }
    json_decref(doc);
    free(b.data);

    /* What /v2 accepted, written as a /v1 body: /v1 takes it as the same request. */
    struct mlp_v2_request r;
    struct mlp_error err;
    int drc = mlp_v2_decode(model, body, len, header_len, &r, &err);
    if (drc == 0) {
        struct mlp_buf enc = {0};
        struct mlp_request r1;
        json_t *root;
        fuzz_encode_request(&enc, &r.base, 1, "weights");
        FUZZ_CHECK(!enc.failed, "out of memory");
        FUZZ_CHECK(mlp_parse(enc.data, enc.len, &root, &err) == 0,
                   "the /v1 form is not JSON: %s", enc.data);
        int rc1 = mlp_request_decode(root, &r1, &err);
        FUZZ_CHECK(rc1 == 0, "/v1 refuses what /v2 accepted (%s: %s): %s", mlp_status_name(rc1),
                   err.e.message, enc.data);
        fuzz_same_request(&r.base, &r1);
        mlp_request_free(&r1);
        json_decref(root);
        free(enc.data);
        mlp_request_free(&r.base);
    } else {
        FUZZ_CHECK(drc == rc, "mlp_v2_decode says %d, mlp_v2_eval %d", drc, rc);
    }
    free(mem);
    return 0;
}
