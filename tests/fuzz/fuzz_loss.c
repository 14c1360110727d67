/*
 * fuzz_loss.c -- the /v1/loss request body: mlp_parse, decode, evaluate with a small element
 * limit (no input can allocate much), the answer written.
 *
 * Invariants beyond "no crash, no leak, no undefined behaviour":
 *   - the answer, success or error, is valid JSON; an error carries a code of the
 *     project's table and the status the call returned; a success has its keys;
 *   - never out_of_memory: with 4096 elements at most, no request needs much memory;
 *   - a request that decodes, encoded back to JSON (encode_request below: proto has no
 *     request encoder) and decoded again, is the same request: loss, reduction, dtype,
 *     allow_non_finite, outputs, params, unknown keys, and tensors with the same dtype,
 *     shape and bytes. Two encodings: JSON numbers where they are exact, and every tensor
 *     as b64 bytes;
 *   - the re-encoded request gets the same answer, byte for byte (evaluation is a
 *     function of the request).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#define MAX_ELEMENTS 4096

static const char *const slot_names[5] = {"labels", "logits", "predictions", "losses",
                                          "weights"};

static const char *const output_names[] = {"loss",         "per_element", "per_sample",
                                           "per_class",    "weighted_sum", "sum_weights",
                                           "num_nonzero_weights"};

/* A canonical NaN, as the decoder stores "NaN". */
static int is_canonical_nan(double v)
{
    double nan = NAN;
    return isnan(v) && !memcmp(&v, &nan, sizeof(v));
}

/* JSON numbers say a float64 tensor exactly unless a NaN has another payload or sign. */
static int json_exact(const struct ml_tensor *t, int64_t n)
{
    if (t->dtype != ML_FLOAT64)
        return 0;
    const double *d = t->data;
    for (int64_t i = 0; i < n; i++)
        if (isnan(d[i]) && !is_canonical_nan(d[i]))
            return 0;
    return 1;
}

static void encode_tensor(struct mlp_buf *b, const struct ml_tensor *t, int all_b64)
{
    char tmp[32];
    int64_t n = ml_shape_numel(t->rank, t->shape);
    mlp_buf_puts(b, "{\"shape\":[");
    for (int d = 0; d < t->rank; d++) {
        snprintf(tmp, sizeof(tmp), d ? ",%lld" : "%lld", (long long)t->shape[d]);
        mlp_buf_puts(b, tmp);
    }
    mlp_buf_puts(b, "],");
    if (!all_b64 && json_exact(t, n)) {
        const double *d = t->data;
        /* Rank 0: the number itself; otherwise flat data, which a declared shape accepts. */
        if (t->rank == 0) {
            mlp_buf_puts(b, "\"data\":");
            mlp_buf_number(b, d[0]);
        } else {
            mlp_buf_puts(b, "\"data\":[");
            for (int64_t i = 0; i < n; i++) {
                if (i)
                    mlp_buf_append(b, ",", 1);
                mlp_buf_number(b, d[i]);
            }
            mlp_buf_append(b, "]", 1);
        }
    } else {
        mlp_buf_puts(b, "\"dtype\":");
        mlp_buf_string(b, ml_dtype_name(t->dtype));
        mlp_buf_puts(b, ",\"b64\":\"");
        mlp_b64_encode(b, t->data, (size_t)n * ml_dtype_size(t->dtype));
        mlp_buf_append(b, "\"", 1);
    }
    mlp_buf_append(b, "}", 1);
}

/* The request as a /v1/loss body. `weights_key` is the key the original used for the
 * weights ("weights" or its alias "mask"), so that messages name the same field. */
static void encode_request(struct mlp_buf *b, const struct mlp_request *r, int all_b64,
                           const char *weights_key)
{
    const struct ml_request *q = &r->req;
    const struct ml_tensor *slots[5] = {q->labels, q->logits, q->predictions, q->losses,
                                        q->weights};
    mlp_buf_puts(b, "{\"loss\":");
    mlp_buf_string(b, q->loss);
    if (q->reduction) {
        mlp_buf_puts(b, ",\"reduction\":");
        mlp_buf_string(b, q->reduction);
    }
    mlp_buf_puts(b, q->dtype == ML_FLOAT64 ? ",\"dtype\":\"float64\"" : ",\"dtype\":\"float32\"");
    mlp_buf_puts(b, q->allow_non_finite ? ",\"allow_non_finite\":true"
                                        : ",\"allow_non_finite\":false");
    mlp_buf_puts(b, ",\"outputs\":[");
    int first = 1;
    for (size_t i = 0; i < sizeof(output_names) / sizeof(output_names[0]); i++)
        if (q->outputs & (1u << i)) {
            if (!first)
                mlp_buf_append(b, ",", 1);
            mlp_buf_string(b, output_names[i]);
            first = 0;
        }
    mlp_buf_append(b, "]", 1);
    for (int i = 0; i < 5; i++) {
        if (!slots[i])
            continue;
        mlp_buf_append(b, ",", 1);
        mlp_buf_string(b, i == 4 ? weights_key : slot_names[i]);
        mlp_buf_append(b, ":", 1);
        encode_tensor(b, slots[i], all_b64);
    }
    if (q->params) {
        mlp_buf_puts(b, ",\"params\":{");
        for (size_t i = 0; i < q->num_params; i++) {
            const struct ml_param *p = &q->params[i];
            if (i)
                mlp_buf_append(b, ",", 1);
            mlp_buf_string(b, p->name);
            mlp_buf_append(b, ":", 1);
            if (p->kind == ML_PARAM_BOOL)
                mlp_buf_puts(b, p->boolean ? "true" : "false");
            else if (p->kind == ML_PARAM_NUMBER)
                mlp_buf_number(b, p->number);
            else
                encode_tensor(b, &p->tensor, all_b64);
        }
        mlp_buf_append(b, "}", 1);
    }
    /* The keys the protocol ignores, in their order (the answer lists them). */
    for (size_t i = 0; i < r->num_ignored; i++) {
        mlp_buf_append(b, ",", 1);
        mlp_buf_string(b, r->ignored[i]);
        mlp_buf_puts(b, ":null");
    }
    mlp_buf_append(b, "}", 1);
}

static void same_tensor(const struct ml_tensor *a, const struct ml_tensor *b, const char *what)
{
    FUZZ_CHECK((a == NULL) == (b == NULL), "%s: present once only", what);
    if (!a)
        return;
    FUZZ_CHECK(a->dtype == b->dtype, "%s: dtype %d != %d", what, (int)a->dtype, (int)b->dtype);
    FUZZ_CHECK(a->rank == b->rank, "%s: rank %d != %d", what, a->rank, b->rank);
    for (int d = 0; d < a->rank; d++)
        FUZZ_CHECK(a->shape[d] == b->shape[d], "%s: dimension %d differs", what, d);
    size_t bytes = (size_t)ml_shape_numel(a->rank, a->shape) * ml_dtype_size(a->dtype);
    FUZZ_CHECK(bytes == 0 || !memcmp(a->data, b->data, bytes), "%s: the values differ", what);
}

static int same_string(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static void same_request(const struct mlp_request *ra, const struct mlp_request *rb)
{
    const struct ml_request *a = &ra->req, *b = &rb->req;
    FUZZ_CHECK(same_string(a->loss, b->loss), "loss differs");
    FUZZ_CHECK(same_string(a->reduction, b->reduction), "reduction differs");
    FUZZ_CHECK(a->dtype == b->dtype, "dtype differs");
    FUZZ_CHECK(a->allow_non_finite == b->allow_non_finite, "allow_non_finite differs");
    FUZZ_CHECK(a->outputs == b->outputs, "outputs %#x != %#x", a->outputs, b->outputs);
    same_tensor(a->labels, b->labels, "labels");
    same_tensor(a->logits, b->logits, "logits");
    same_tensor(a->predictions, b->predictions, "predictions");
    same_tensor(a->losses, b->losses, "losses");
    same_tensor(a->weights, b->weights, "weights");
    FUZZ_CHECK((a->params == NULL) == (b->params == NULL), "params given once only");
    FUZZ_CHECK(a->num_params == b->num_params, "%zu params != %zu", a->num_params,
               b->num_params);
    for (size_t i = 0; i < a->num_params; i++) {
        const struct ml_param *p = &a->params[i], *q = &b->params[i];
        FUZZ_CHECK(!strcmp(p->name, q->name), "param %zu: name differs", i);
        FUZZ_CHECK(p->kind == q->kind, "params.%s: kind %d != %d", p->name, (int)p->kind,
                   (int)q->kind);
        if (p->kind == ML_PARAM_BOOL)
            FUZZ_CHECK(p->boolean == q->boolean, "params.%s differs", p->name);
        else if (p->kind == ML_PARAM_NUMBER)
            FUZZ_CHECK(!memcmp(&p->number, &q->number, sizeof(double)),
                       "params.%s: %.17g != %.17g", p->name, p->number, q->number);
        else
            same_tensor(&p->tensor, &q->tensor, p->name);
    }
    FUZZ_CHECK(ra->num_ignored == rb->num_ignored, "ignored keys differ");
    for (size_t i = 0; i < ra->num_ignored; i++)
        FUZZ_CHECK(!strcmp(ra->ignored[i], rb->ignored[i]), "ignored key %zu differs", i);
}

static const char *weights_key_of(const json_t *root)
{
    const json_t *w = json_object_get(root, "weights");
    return (!w || json_is_null(w)) && json_object_get(root, "mask") ? "mask" : "weights";
}

/* Encodes r, decodes it again, compares; for the first form, evaluates it too and compares
 * the answer with the original's. */
static void round_trip(const struct mlp_request *r, const json_t *root, int all_b64, int rc,
                       const struct mlp_buf *answer)
{
    struct mlp_buf enc = {0};
    struct mlp_error err;
    json_t *root2;
    struct mlp_request r2;
    encode_request(&enc, r, all_b64, weights_key_of(root));
    FUZZ_CHECK(!enc.failed, "out of memory while encoding");
    int prc = mlp_parse(enc.data, enc.len, &root2, &err);
    FUZZ_CHECK(prc == 0, "the re-encoded request is not JSON: %s\n%s", err.e.message, enc.data);
    int drc = mlp_request_decode(root2, &r2, &err);
    FUZZ_CHECK(drc == 0, "the re-encoded request does not decode (%s: %s): %s",
               mlp_status_name(drc), err.e.message, enc.data);
    same_request(r, &r2);
    mlp_request_free(&r2);
    if (!all_b64) {
        struct mlp_buf b2 = {0};
        struct mlp_exec exec = {MAX_ELEMENTS, NULL, NULL};
        int rc2 = mlp_eval_value(root2, &exec, &b2, NULL);
        FUZZ_CHECK(rc2 == rc && b2.len == answer->len && !memcmp(b2.data, answer->data, b2.len),
                   "the re-encoded request gets another answer:\n%s\n%s\nrequest: %s",
                   answer->data, b2.data, enc.data);
        free(b2.data);
    }
    json_decref(root2);
    free(enc.data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mlp_buf b = {0};
    struct mlp_error err;
    json_t *root;
    memset(&err, 0, sizeof(err));
    err.e.index = -1;

    int rc = mlp_parse((const char *)data, size, &root, &err);
    if (rc) {
        FUZZ_CHECK(rc == MLP_EMALFORMED, "mlp_parse returned %d", rc);
        mlp_error_write(&b, rc, &err);
        FUZZ_CHECK(!b.failed, "out of memory");
        json_t *answer = fuzz_parse_json(b.data, b.len, "the malformed_json answer");
        fuzz_check_error(answer, rc);
        json_decref(answer);
        free(b.data);
        return 0;
    }

    struct mlp_exec exec = {MAX_ELEMENTS, NULL, NULL};
    struct mlp_eval_info info;
    rc = mlp_eval_value(root, &exec, &b, &info);
    FUZZ_CHECK(!b.failed, "out of memory");
    json_t *answer = fuzz_parse_json(b.data, b.len, "the /v1/loss answer");
    /* With 4096 elements at most, nothing needs much memory: out_of_memory means an
     * allocation sized by something else than the data. */
    FUZZ_CHECK(rc != ML_ENOMEM, "out_of_memory: %s", b.data);
    if (rc) {
        fuzz_check_error(answer, rc);
        FUZZ_CHECK(info.loss_name == NULL, "a failed request names a loss");
    } else {
        fuzz_check_v1_success(answer);
        FUZZ_CHECK(info.loss_name != NULL, "a success names no loss");
        FUZZ_CHECK(info.elements >= 0 && info.elements <= MAX_ELEMENTS,
                   "%lld elements with a limit of %d", info.elements, MAX_ELEMENTS);
    }
    json_decref(answer);

    struct mlp_request r;
    int drc = mlp_request_decode(root, &r, &err);
    if (drc == 0) {
        round_trip(&r, root, 0, rc, &b);
        round_trip(&r, root, 1, rc, &b);
        mlp_request_free(&r);
    } else {
        FUZZ_CHECK(drc == rc, "decode says %d, the evaluation %d", drc, rc);
    }
    json_decref(root);
    free(b.data);
    return 0;
}
