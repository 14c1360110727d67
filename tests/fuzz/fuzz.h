/*
 * fuzz.h -- what the libFuzzer targets of tests/fuzz/ share: the entry point, the invariant
 * check and the checks of answers (valid JSON, error objects with a known code).
 *
 * Each fuzz_<target>.c defines LLVMFuzzerTestOneInput. It is linked either with libFuzzer
 * (clang -fsanitize=fuzzer: make fuzz) or with replay.c, a main() that runs it over corpus
 * files (make fuzz-replay, part of make check). A broken invariant prints what and where
 * and aborts, which both drivers report as a failure.
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "mlp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Prints "file:line: invariant failed: cond: message" and aborts. */
void fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((noreturn, format(printf, 4, 5)))
#endif
    ;

#define FUZZ_CHECK(cond, ...)                                                                      \
    ((cond) ? (void)0 : fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__))

/* 1 when name is the name of a status of the project's own table (mlp_status_name of some
 * negative code, "internal_error" excluded: that is what an unknown code is called). */
int fuzz_known_code(const char *name);

/* Parses text[0..len) as one JSON document (an answer must be valid JSON); aborts when it
 * is not. `what` names the document in the message. Returns a new reference. */
json_t *fuzz_parse_json(const char *text, size_t len, const char *what);

/*
 * An error object for `status`: status is a known code, "error" a non-empty string, "code"
 * mlp_status_name(status), "field" a string, "index" (if any) a non-negative integer,
 * "line" and "column" only for malformed_json.
 */
void fuzz_check_error(const json_t *answer, int status);

/* A successful /v1 answer: "loss" (a number, a string for NaN/Infinity, or an array),
 * "loss_name", "reduction" and "dtype" strings, no "error". */
void fuzz_check_v1_success(const json_t *answer);

/*
 * The request as a /v1/loss body (proto has no request encoder): loss, reduction, dtype,
 * allow_non_finite, outputs, tensors, params, and the unknown keys (as null). Tensors as
 * JSON numbers where these are exact (float64 data whose NaNs are the decoder's own), as
 * b64 bytes of their dtype otherwise or when all_b64. `weights_key` is the key for the
 * weights ("weights" or its alias "mask"), so that messages name the original field.
 */
void fuzz_encode_request(struct mlp_buf *b, const struct mlp_request *r, int all_b64,
                         const char *weights_key);

/* Aborts unless a and b are the same request: strings, flags, outputs, params (numbers bit
 * for bit), unknown keys, tensors (dtype, shape, bytes). */
void fuzz_same_request(const struct mlp_request *a, const struct mlp_request *b);

#endif /* FUZZ_H */
