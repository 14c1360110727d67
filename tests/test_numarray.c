/*
 * test_numarray.c -- the inputs' arrays of numbers decoded from the text (proto/numarray.c,
 * through mlp_parse_request) against the values they must hold.
 *
 * Expected doubles are C hexadecimal literals written from Python's float() (David Gay's
 * correctly rounded conversion, not the code under test) or derived by hand where the
 * comment says so. Each request is also parsed by mlp_parse (jansson alone): the two must
 * agree on the status, and on the error's code, field, message, line and column --
 * tests/fuzz/fuzz_jsonnum.c checks the same on arbitrary bytes. Inputs are copied to a heap
 * buffer of their exact size, unterminated, so that AddressSanitizer sees an over-read.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mlp.h"

struct parsed {
    int parse_rc, decode_rc;
    json_t *root;
    struct mlp_request req;
    struct mlp_error err;
};

/* Parses text with mlp_parse_request (scanner = 1) or mlp_parse, then decodes the document
 * (or, with batch >= 0, its entry "requests"[batch]). */
static void parse(const char *text, int scanner, int batch, struct parsed *p)
{
    size_t len = strlen(text);
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, text, len);
    memset(p, 0, sizeof(*p));
    p->parse_rc = scanner ? mlp_parse_request(copy, len, &p->root, &p->err)
                          : mlp_parse(copy, len, &p->root, &p->err);
    free(copy);
    if (p->parse_rc) {
        p->decode_rc = p->parse_rc;
        return;
    }
    json_t *doc =
        batch >= 0 ? json_array_get(json_object_get(p->root, "requests"), (size_t)batch) : p->root;
    assert_non_null(doc);
    p->decode_rc = mlp_request_decode(doc, &p->req, &p->err);
}

static void release(struct parsed *p)
{
    if (!p->decode_rc)
        mlp_request_free(&p->req);
    json_decref(p->root);
}

/* Both paths parse and decode text alike: same statuses, same error. Returns the scanner's
 * result in *p (release it). */
static void parse_both(const char *text, int batch, struct parsed *p)
{
    struct parsed ref;
    parse(text, 0, batch, &ref);
    parse(text, 1, batch, p);
    assert_int_equal(p->parse_rc, ref.parse_rc);
    assert_int_equal(p->decode_rc, ref.decode_rc);
    if (p->decode_rc) {
        assert_int_equal(p->err.e.code, ref.err.e.code);
        assert_string_equal(p->err.e.field, ref.err.e.field);
        assert_int_equal(p->err.e.index, ref.err.e.index);
        assert_string_equal(p->err.e.message, ref.err.e.message);
        assert_int_equal(p->err.line, ref.err.line);
        assert_int_equal(p->err.column, ref.err.column);
    }
    release(&ref);
}

/* The single logit of {"loss": "l", "logits": [NUMBER]}, decoded by the scanner. */
static double logit_of(const char *number)
{
    char text[256];
    snprintf(text, sizeof(text), "{\"loss\": \"l\", \"logits\": [%s]}", number);
    struct parsed p;
    parse_both(text, -1, &p);
    if (p.decode_rc)
        fail_msg("%s: %s", number, p.err.e.message);
    const struct ml_tensor *t = p.req.req.logits;
    assert_non_null(t);
    assert_int_equal(t->dtype, ML_FLOAT64);
    assert_int_equal(t->rank, 1);
    assert_int_equal(t->shape[0], 1);
    double v = ((const double *)t->data)[0];
    /* decoded by the scanner, not by jansson */
    assert_false(json_is_array(json_object_get(p.root, "logits")));
    release(&p);
    return v;
}

static void assert_same_bits(double got, double want, const char *what)
{
    if (memcmp(&got, &want, sizeof(double)))
        fail_msg("%s: got %a, want %a", what, got, want);
}

static void test_numbers(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        double want;
    } cases[] = {
        {"0", 0.0},
        {"1", 1.0},
        {"-1", -1.0},
        {"0.1", 0x1.999999999999ap-4},
        {"-2.5e-3", -0x1.47ae147ae147bp-9},
        {"1E+2", 100.0},
        {"0.000000000000000000000000000001", 0x1.4484bfeebc2a0p-100},
        {"1e-50", 0x1.dee7a4ad4b81fp-167},
        /* Subnormals: 2^-1075 = 2.47032822920623272088e-324 is half the smallest one; below
         * it rounds to 0, above it to 2^-1074 (by hand). */
        {"4.9e-324", 0x1p-1074},
        {"2.4703282292062327e-324", 0.0},
        {"2.4703282292062328e-324", 0x1p-1074},
        {"1e-400", 0.0},
        /* Integers beyond 2^53: ties to even (2^53 + 1 -> 2^53, 2^53 + 3 -> 2^53 + 4). */
        {"9007199254740992", 0x1p53},
        {"9007199254740993", 0x1p53},
        {"9007199254740995", 0x1.0000000000002p+53},
        {"123456789012345678901234567890", 0x1.8ee90ff6c373ep+96},
        /* The largest double, from a decimal below the halfway point to the next power. */
        {"1.7976931348623158e308", 0x1.fffffffffffffp+1023},
        {"3.1415926535141592653514159265351415926535141592653514159265351415926535",
         0x1.921fb544193d0p+1},
        /* Exactly 1 + 2^-24, a float32 tie: the tensor keeps the double (as the jansson path
         * did), the float32 cast of the computation comes later, the same either way. */
        {"1.00000005960464477539", 0x1.000001p+0},
        {"true", 1.0},
        {"false", 0.0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_same_bits(logit_of(cases[i].text), cases[i].want, cases[i].text);
    /* -0 keeps its sign. */
    double z = logit_of("-0");
    assert_true(z == 0.0 && signbit(z));
    z = logit_of("-0.0e-5");
    assert_true(z == 0.0 && signbit(z));
}

/* Numbers jansson refuses: malformed_json, at the same line and column either way. */
static void test_refused_numbers(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "{\"loss\": \"l\", \"logits\": [1e400]}",
        "{\"loss\": \"l\",\n \"logits\": [[1, 2],\n [3, -1.7976931348623159e308]]}",
        "{\"loss\": \"l\", \"logits\": [01]}",
        "{\"loss\": \"l\", \"logits\": [1.]}",
        "{\"loss\": \"l\", \"logits\": [.5]}",
        "{\"loss\": \"l\", \"logits\": [+1]}",
        "{\"loss\": \"l\", \"logits\": [1, 2,]}",
        "{\"loss\": \"l\", \"logits\": [1 2]}",
        "{\"loss\": \"l\", \"logits\": [tru]}",
        /* An error after an array the scanner decoded: the position in the original text. */
        "{\"loss\": \"l\",\n \"logits\": [[1, 2],\n [3, 4]],\n \"x\": }",
        "{\"loss\": \"l\", \"logits\": [1, 2]} trailing",
        /* Duplicate keys, also where both are decoded arrays. */
        "{\"loss\": \"l\", \"logits\": [1], \"logits\": [2]}",
        "{\"loss\": \"l\", \"logits\": {\"shape\": [1], \"data\": [1], \"data\": [2]}}",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct parsed p;
        parse_both(texts[i], -1, &p);
        if (p.parse_rc != MLP_EMALFORMED)
            fail_msg("%s: status %d", texts[i], p.parse_rc);
        assert_true(p.err.line >= 1);
        release(&p);
    }
    struct parsed p;
    parse_both("{\"loss\": \"l\",\n \"logits\": [[1, 2],\n [3, 4]],\n \"x\": }", -1, &p);
    assert_int_equal(p.err.line, 4); /* by hand: the '}' on the fourth line */
    release(&p);
    parse_both("{\"loss\": \"l\", \"logits\": [1e400]}", -1, &p);
    assert_non_null(strstr(p.err.e.message, "real number overflow"));
    release(&p);
}

/* Shapes: nested, flat under a declared shape, and the rejections of the jansson path. */
static void test_shapes(void **state)
{
    (void)state;
    struct parsed p;
    parse_both("{\"loss\": \"l\", \"logits\": [[[1, 2, 3], [4, 5, 6]]], \"labels\": {\"shape\": "
               "[3, 2], \"data\": [1, 0, 0, 1, 1, 0]}, \"mask\": {\"shape\": [1, 6], \"data\": "
               "[[true, false, true, false, true, false]], \"dtype\": \"float32\"}}",
               -1, &p);
    assert_int_equal(p.decode_rc, 0);
    const struct ml_tensor *x = p.req.req.logits, *y = p.req.req.labels, *m = p.req.req.weights;
    assert_int_equal(x->rank, 3);
    assert_int_equal(x->shape[0], 1);
    assert_int_equal(x->shape[1], 2);
    assert_int_equal(x->shape[2], 3);
    for (int i = 0; i < 6; i++)
        assert_true(((const double *)x->data)[i] == i + 1);
    assert_int_equal(y->rank, 2);
    assert_int_equal(y->shape[0], 3);
    assert_int_equal(y->shape[1], 2);
    assert_true(((const double *)y->data)[3] == 1.0 && ((const double *)y->data)[4] == 1.0);
    assert_int_equal(m->rank, 2);
    assert_int_equal(m->shape[1], 6);
    assert_true(((const double *)m->data)[4] == 1.0 && ((const double *)m->data)[5] == 0.0);
    /* The fast path was taken: the document holds no array of numbers for the logits. */
    assert_false(json_is_array(json_object_get(p.root, "logits")));
    release(&p);

    static const struct {
        const char *text;
        int code;
        const char *field;
        const char *message_part;
    } bad[] = {
        {"{\"loss\": \"l\", \"logits\": [[1, 2], [3]]}", ML_ETENSOR, "logits", "ragged"},
        {"{\"loss\": \"l\", \"logits\": [[1, 2], 3]}", ML_ETENSOR, "logits", "ragged"},
        {"{\"loss\": \"l\", \"logits\": [[1], [[2]]]}", ML_ETENSOR, "logits", "deeper"},
        {"{\"loss\": \"l\", \"logits\": [[[[[[[[[1]]]]]]]]]}", ML_ETENSOR, "logits", "deeper"},
        {"{\"loss\": \"l\", \"logits\": [1, null]}", ML_ETENSOR, "logits", "null"},
        {"{\"loss\": \"l\", \"logits\": [1, \"x\"]}", ML_ETENSOR, "logits", "a string"},
        {"{\"loss\": \"l\", \"logits\": {\"shape\": [4], \"data\": [[1, 2], [3, 4]]}}", ML_ETENSOR,
         "logits", "has shape [2, 2] (4 elements) but logits.shape is [4]"},
        {"{\"loss\": \"l\", \"logits\": {\"shape\": [2], \"data\": [1, 2, 3]}}", ML_ETENSOR,
         "logits", "has shape [3]"},
        {"{\"loss\": \"l\", \"logits\": {\"shape\": [3], \"data\": [1, 2, 3], \"x\": 1}}",
         ML_ETENSOR, "logits", "unknown key 'x'"},
        {"{\"logits\": [1, 2]}", ML_EINVAL, "loss", "needs \"loss\""},
        {"{\"loss\": \"l\", \"weights\": [1], \"mask\": [1]}", ML_EINVAL, "mask", "not both"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        parse_both(bad[i].text, -1, &p);
        if (p.decode_rc != bad[i].code || strcmp(p.err.e.field, bad[i].field) ||
            !strstr(p.err.e.message, bad[i].message_part))
            fail_msg("%s: %d %s: %s", bad[i].text, p.decode_rc, p.err.e.field, p.err.e.message);
        release(&p);
    }
    /* Shapes the jansson path accepts that the scanner leaves to it: empty and rank 8,
     * strings for non-finite values. */
    parse_both("{\"loss\": \"l\", \"logits\": [[], []], \"labels\": [[[[[[[[1]]]]]]]], "
               "\"mask\": [1, \"NaN\", \"-Infinity\"]}",
               -1, &p);
    assert_int_equal(p.decode_rc, 0);
    assert_int_equal(p.req.req.logits->rank, 2);
    assert_int_equal(p.req.req.logits->shape[1], 0);
    assert_int_equal(p.req.req.labels->rank, 8);
    assert_true(isnan(((const double *)p.req.req.weights->data)[1]));
    release(&p);
}

/* A batch: each entry's inputs decoded, the others' untouched. */
static void test_batch(void **state)
{
    (void)state;
    const char *text = "{\"requests\": [{\"loss\": \"a\", \"logits\": [0.5, -0]}, 7, "
                       "{\"loss\": \"b\", \"labels\": {\"shape\": [2], \"data\": [[1e-50, 2]]}},"
                       " {\"loss\": \"c\", \"predictions\": [[1], [2, 3]]}]}";
    struct parsed p;
    parse_both(text, 0, &p);
    assert_int_equal(p.decode_rc, 0);
    assert_true(((const double *)p.req.req.logits->data)[0] == 0.5);
    assert_true(signbit(((const double *)p.req.req.logits->data)[1]));
    release(&p);
    parse_both(text, 2, &p);
    assert_int_equal(p.decode_rc, ML_ETENSOR); /* data [1, 2] nested [1, 2] under shape [2] */
    release(&p);
    parse_both(text, 3, &p);
    assert_int_equal(p.decode_rc, ML_ETENSOR);
    assert_non_null(strstr(p.err.e.message, "ragged"));
    release(&p);
}

/* "b64" strings: their text kept by the scanner, decoded by decode_b64 as before. */
static void test_b64(void **state)
{
    (void)state;
    struct parsed p;
    /* float32 1.0 and 2.0 little-endian (0x3f800000, 0x40000000), base64 by hand */
    parse_both("{\"loss\": \"l\", \"logits\": {\"shape\": [2], \"dtype\": \"float32\", \"b64\": "
               "\"AACAPwAAAEA=\"}}",
               -1, &p);
    assert_int_equal(p.decode_rc, 0);
    assert_int_equal(p.req.req.logits->dtype, ML_FLOAT32);
    assert_true(((const float *)p.req.req.logits->data)[0] == 1.0f);
    assert_true(((const float *)p.req.req.logits->data)[1] == 2.0f);
    /* kept by the scanner, not a json string of jansson's */
    assert_false(json_is_string(json_object_get(json_object_get(p.root, "logits"), "b64")));
    release(&p);
    static const char *const bad[] = {
        /* 5 bytes for 8 */
        "{\"loss\": \"l\", \"logits\": {\"shape\": [2], \"dtype\": \"float32\", \"b64\": "
        "\"AACAPwA=\"}}",
        "{\"loss\": \"l\", \"logits\": {\"shape\": [2], \"dtype\": \"int8\", \"b64\": \"AAE=\"}}",
        "{\"loss\": \"l\", \"logits\": {\"shape\": [2], \"dtype\": \"bool\", \"b64\": \"AAE=\", "
        "\"data\": [1, 0]}}",
        /* an escape: left to jansson, which reads "\/" as "/" */
        "{\"loss\": \"l\", \"logits\": {\"shape\": [3], \"dtype\": \"uint8\", \"b64\": "
        "\"AQ\\/D\"}}",
        "{\"loss\": \"l\", \"logits\": {\"shape\": [3], \"dtype\": \"uint8\", \"b64\": \"AQ*D\"}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        parse_both(bad[i], -1, &p);
        release(&p);
    }
    parse_both(bad[0], -1, &p);
    assert_int_equal(p.decode_rc, ML_ETENSOR);
    assert_non_null(strstr(p.err.e.message, "holds 5 bytes but shape [2] of float32 needs 8"));
    release(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbers), cmocka_unit_test(test_refused_numbers),
        cmocka_unit_test(test_shapes),  cmocka_unit_test(test_batch),
        cmocka_unit_test(test_b64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
