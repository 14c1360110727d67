/*
 * fuzz_jsonnum.c -- differential: mlp_parse_request (the inputs' arrays of numbers decoded by
 * proto/numarray.c, the rest by jansson) against mlp_parse (jansson alone) on the same bytes.
 *
 * The scanner also keeps the text of "b64" strings (jansson would copy it a byte at a
 * time): the same comparison covers them.
 *
 * Invariant: both give the same answer. The same parse status, and for an error the same
 * code, message, line and column; for a document, the same decoding by mlp_request_decode of
 * the document and of each entry of its "requests" (a batch): the same status, code, field,
 * index and message, or the same request (fuzz_same_request: strings, flags, outputs,
 * params, unknown keys, and tensors of the same dtype and shape, every value bit for bit --
 * strtod's double of each decimal, -0 kept, overflow refused, underflow to subnormals or 0).
 *
 * The first byte picks where the rest goes, so that libFuzzer spends its time on the
 * numbers rather than on finding a request around them:
 *   'W' {"loss": "l", "logits": REST}               an input given as a nested array
 *   'D' {"loss": "l", "labels": {"shape": [2, 2], "data": REST}}
 *   'B' {"requests": [{"loss": "l", "mask": REST}, {"loss": "l", "weights": [REST]}]}
 *   'S' {"loss": "l", "labels": {"shape": [3], "dtype": "uint8", "b64": "REST"}}  (the
 *       text of a "b64" string, which the scanner keeps as it is when jansson would)
 *   anything else: the whole input is the document.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

static void same_error(const struct mlp_error *a, const struct mlp_error *b, const char *what)
{
    FUZZ_CHECK(a->e.code == b->e.code, "%s: code %d != %d (%s | %s)", what, a->e.code, b->e.code,
               a->e.message, b->e.message);
    FUZZ_CHECK(!strcmp(a->e.field, b->e.field), "%s: field '%s' != '%s'", what, a->e.field,
               b->e.field);
    FUZZ_CHECK(a->e.index == b->e.index, "%s: index %lld != %lld", what, (long long)a->e.index,
               (long long)b->e.index);
    FUZZ_CHECK(!strcmp(a->e.message, b->e.message), "%s: message\n  %s\n!=%s", what, a->e.message,
               b->e.message);
    FUZZ_CHECK(a->line == b->line && a->column == b->column, "%s: at %d:%d != %d:%d", what, a->line,
               a->column, b->line, b->column);
}

/* Decodes a (jansson's) and b (the scanner's) as requests and compares. */
static void same_decoding(json_t *a, json_t *b, const char *what)
{
    struct mlp_request ra, rb;
    struct mlp_error ea, eb;
    int rca = mlp_request_decode(a, &ra, &ea);
    int rcb = mlp_request_decode(b, &rb, &eb);
    FUZZ_CHECK(rca == rcb, "%s: decoded %d by jansson, %d with the scanner (%s | %s)", what, rca,
               rcb, rca ? ea.e.message : "", rcb ? eb.e.message : "");
    if (rca) {
        same_error(&ea, &eb, what);
        return;
    }
    fuzz_same_request(&ra, &rb);
    mlp_request_free(&ra);
    mlp_request_free(&rb);
}

static void differential(const char *text, size_t len)
{
    json_t *a = NULL, *b = NULL;
    struct mlp_error ea, eb;
    memset(&ea, 0, sizeof(ea));
    memset(&eb, 0, sizeof(eb));
    int rca = mlp_parse(text, len, &a, &ea);
    int rcb = mlp_parse_request(text, len, &b, &eb);
    FUZZ_CHECK(rca == rcb, "parsed %d by jansson, %d with the scanner (%s | %s)", rca, rcb,
               ea.e.message, eb.e.message);
    if (rca) {
        same_error(&ea, &eb, "parse");
        return;
    }
    same_decoding(a, b, "request");
    json_t *la = json_object_get(a, "requests"), *lb = json_object_get(b, "requests");
    FUZZ_CHECK(json_is_array(la) == json_is_array(lb), "requests: an array once only");
    if (json_is_array(la)) {
        FUZZ_CHECK(json_array_size(la) == json_array_size(lb), "requests: sizes differ");
        for (size_t i = 0; i < json_array_size(la); i++)
            same_decoding(json_array_get(la, i), json_array_get(lb, i), "requests[i]");
    }
    json_decref(a);
    json_decref(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const wrap[][3] = {
        {"W", "{\"loss\": \"l\", \"logits\": ", "}"},
        {"D", "{\"loss\": \"l\", \"labels\": {\"shape\": [2, 2], \"data\": ", "}}"},
        {"B", "{\"requests\": [{\"loss\": \"l\", \"mask\": ", "}]}"},
        {"S", "{\"loss\": \"l\", \"labels\": {\"shape\": [3], \"dtype\": \"uint8\", \"b64\": \"",
         "\"}}"},
    };
    const char *rest = (const char *)data + 1;
    size_t rest_len = size ? size - 1 : 0;
    for (size_t w = 0; size && w < sizeof(wrap) / sizeof(wrap[0]); w++) {
        if (data[0] != (uint8_t)wrap[w][0][0])
            continue;
        size_t pre = strlen(wrap[w][1]), post = strlen(wrap[w][2]);
        /* 'B' has a second entry, "}, {...": [REST]" before the end. */
        const char *second = w == 2 ? ", {\"loss\": \"l\", \"weights\": [" : "";
        size_t second_len = strlen(second);
        size_t len = pre + rest_len + (w == 2 ? second_len + rest_len + 2 : 0) + post;
        /* Exactly the document's bytes, unterminated: a sanitizer sees an over-read. */
        char *text = malloc(len ? len : 1);
        if (!text)
            return 0;
        size_t at = 0;
        memcpy(text + at, wrap[w][1], pre);
        at += pre;
        memcpy(text + at, rest, rest_len);
        at += rest_len;
        if (w == 2) {
            memcpy(text + at, "}", 1);
            at += 1;
            memcpy(text + at, second, second_len);
            at += second_len;
            memcpy(text + at, rest, rest_len);
            at += rest_len;
            memcpy(text + at, "]", 1);
            at += 1;
        }
        memcpy(text + at, wrap[w][2], post);
        differential(text, len);
        free(text);
        return 0;
    }
    differential((const char *)data, size);
    return 0;
}
