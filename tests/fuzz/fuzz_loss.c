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
 *     shape and bytes (fuzz_encode_request, fuzz_same_request: common.c). Two
 *     encodings: JSON numbers where they are exact, and every tensor as b64 bytes;
 *   - the re-encoded request gets the same answer, byte for byte, evaluated on the
 *     portable kernels (MASKLOSS_SIMD=baseline) where the original ran on the CPU's best
 *     instruction set: evaluation is a function of the request alone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#define MAX_ELEMENTS 4096

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
    fuzz_encode_request(&enc, r, all_b64, weights_key_of(root));
    FUZZ_CHECK(!enc.failed, "out of memory while encoding");
    int prc = mlp_parse(enc.data, enc.len, &root2, &err);
    FUZZ_CHECK(prc == 0, "the re-encoded request is not JSON: %s\n%s", err.e.message, enc.data);
    int drc = mlp_request_decode(root2, &r2, &err);
    FUZZ_CHECK(drc == 0, "the re-encoded request does not decode (%s: %s): %s",
               mlp_status_name(drc), err.e.message, enc.data);
    fuzz_same_request(r, &r2);
    mlp_request_free(&r2);
    if (!all_b64) {
        struct mlp_buf b2 = {0};
        struct mlp_exec exec = {MAX_ELEMENTS, NULL, NULL};
        /* On the portable kernels this time (the original ran on the CPU's best
         * instruction set): every choice gives the same bits. */
        setenv("MASKLOSS_SIMD", "baseline", 1);
        int rc2 = mlp_eval_value(root2, &exec, &b2, NULL);
        unsetenv("MASKLOSS_SIMD");
        FUZZ_CHECK(rc2 == rc && b2.len == answer->len && !memcmp(b2.data, answer->data, b2.len),
                   "the re-encoded request, on the baseline kernels, gets another answer:\n"
                   "%s\n%s\nrequest: %s",
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
