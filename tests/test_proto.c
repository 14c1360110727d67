/*
 * test_proto.c -- the JSON decoder and encoder on hostile input.
 *
 * tests/data/bad_requests.tsv holds one rejected request a line: the expected code, the
 * expected field ("-" for none), and the request text. Every prefix of a valid request is
 * also fed to the decoder from an exact-size heap buffer, so that AddressSanitizer sees any
 * read past the end.
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
#include "mlp_v2.h"

static json_t *eval_json(const char *text, size_t len, int *rc)
{
    char *copy = malloc(len ? len : 1); /* exact size, no terminator */
    assert_non_null(copy);
    memcpy(copy, text, len);
    struct mlp_buf out = {0};
    *rc = mlp_eval_text(copy, len, 0, &out);
    free(copy);
    assert_false(out.failed);
    json_t *body = json_loads(out.data, JSON_DECODE_INT_AS_REAL, NULL);
    if (!body)
        fail_msg("the output is not JSON: %s", out.data);
    free(out.data);
    return body;
}

static void test_bad_requests(void **state)
{
    (void)state;
    FILE *f = fopen("tests/data/bad_requests.tsv", "r");
    if (!f)
        fail_msg("cannot open tests/data/bad_requests.tsv (run from the repository root)");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int count = 0;
    while ((n = getline(&line, &cap, f)) != -1) {
        if (n && line[n - 1] == '\n')
            line[--n] = '\0';
        char *code = line, *field = strchr(line, '\t');
        assert_non_null(field);
        *field++ = '\0';
        char *text = strchr(field, '\t');
        assert_non_null(text);
        *text++ = '\0';
        int rc;
        json_t *body = eval_json(text, strlen(text), &rc);
        if (rc == 0)
            fail_msg("accepted: %s", text);
        const char *got_code = json_string_value(json_object_get(body, "code"));
        const char *got_field = json_string_value(json_object_get(body, "field"));
        const char *message = json_string_value(json_object_get(body, "error"));
        assert_non_null(message);
        assert_true(strlen(message) > 10);
        if (!got_code || strcmp(got_code, code))
            fail_msg("%s: code %s, expected %s (%s)", text, got_code ? got_code : "(none)", code,
                     message);
        if (strcmp(field, "-") && (!got_field || strcmp(got_field, field)))
            fail_msg("%s: field %s, expected %s (%s)", text, got_field ? got_field : "(none)",
                     field, message);
        if (!strcmp(code, "malformed_json"))
            assert_true(json_number_value(json_object_get(body, "line")) >= 1);
        json_decref(body);
        count++;
    }
    free(line);
    fclose(f);
    print_message("%d rejected requests checked\n", count);
    assert_true(count >= 30);
}

static const char blog[] =
    "{\"loss\": \"sigmoid_cross_entropy\", \"dtype\": \"float64\","
    " \"labels\": [[1,1,0,0,0],[0,1,1,1,0],[0,0,0,0,1],[1,1,1,1,1]],"
    " \"logits\": [[0.2,0.2,0.2,0,0.8],[0,0.5,0.5,0.2,0],[0,0.5,0.1,0.0,0.9],"
    "[0.9,0.9,0.7,0.1,0.0]],"
    " \"mask\": {\"shape\": [4, 5], \"data\": [1,0,0,0,0,0,0,1,1,0,0,0,1,0,1,0,1,1,1,1]},"
    " \"outputs\": [\"loss\", \"per_element\", \"num_nonzero_weights\"]}";

static void test_truncations(void **state)
{
    (void)state;
    size_t len = strlen(blog);
    for (size_t cut = 0; cut < len; cut++) {
        int rc;
        json_t *body = eval_json(blog, cut, &rc);
        assert_int_not_equal(rc, 0);
        assert_string_equal(json_string_value(json_object_get(body, "code")), "malformed_json");
        json_decref(body);
    }
    int rc;
    json_t *body = eval_json(blog, len, &rc);
    assert_int_equal(rc, 0);
    /* The exact value is 0.53753211355555677766...: a few ulp (library exp and log1p, 2 ulp). */
    assert_float_equal(json_number_value(json_object_get(body, "loss")), 0.53753211355555677766,
                       4.5e-16);
    assert_float_equal(json_number_value(json_object_get(body, "num_nonzero_weights")), 9, 0);
    assert_int_equal(json_array_size(json_object_get(body, "per_element")), 4);
    json_decref(body);
}

/* Numbers round-trip exactly; non-finite values become strings; -0.0 keeps its sign. */
static void test_number_writer(void **state)
{
    (void)state;
    const double values[] = {0.1,
                             1.0 / 3,
                             5e-324,
                             1.7976931348623157e308,
                             2.0,
                             -0.0,
                             1e30,
                             0.5375321135555567,
                             123456789012345678.0};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        struct mlp_buf b = {0};
        mlp_buf_number(&b, values[i]);
        json_t *v = json_loads(b.data, JSON_DECODE_ANY, NULL);
        assert_non_null(v);
        assert_true(json_is_real(v));
        assert_true(json_real_value(v) == values[i]);
        assert_true(signbit(json_real_value(v)) == signbit(values[i]));
        json_decref(v);
        free(b.data);
    }
    struct mlp_buf b = {0};
    mlp_buf_number(&b, NAN);
    mlp_buf_number(&b, INFINITY);
    mlp_buf_number(&b, -INFINITY);
    assert_string_equal(b.data, "\"NaN\"\"Infinity\"\"-Infinity\"");
    free(b.data);
}

/* Unknown top-level keys are reported back rather than silently dropped. */
static void test_ignored_fields(void **state)
{
    (void)state;
    const char *text = "{\"loss\": \"mean_squared_error\", \"labels\": [1], "
                       "\"predictions\": [3], \"wieghts\": [0]}";
    int rc;
    json_t *body = eval_json(text, strlen(text), &rc);
    assert_int_equal(rc, 0);
    assert_float_equal(json_number_value(json_object_get(body, "loss")), 4.0, 0);
    const json_t *ignored = json_object_get(body, "ignored_fields");
    assert_int_equal(json_array_size(ignored), 1);
    assert_string_equal(json_string_value(json_array_get(ignored, 0)), "wieghts");
    json_decref(body);
}

/* The catalogue is valid JSON and lists every loss with its default reduction. */
static void test_catalogue_json(void **state)
{
    (void)state;
    struct mlp_buf b = {0};
    mlp_catalogue_write(&b);
    json_t *cat = json_loads(b.data, 0, NULL);
    assert_non_null(cat);
    const json_t *losses = json_object_get(cat, "losses");
    assert_int_equal(json_array_size(losses), ml_loss_count());
    for (size_t i = 0; i < json_array_size(losses); i++) {
        const json_t *l = json_array_get(losses, i);
        assert_non_null(json_string_value(json_object_get(l, "default_reduction")));
        assert_true(json_array_size(json_object_get(l, "reductions")) >= 3);
    }
    json_decref(cat);
    free(b.data);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s (run from the repository root)", path);
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    return text;
}

/* Every status either protocol answers has one name, listed by the response schema's code
 * enum and by the error table of proto/README.md, and a text of its own. */
static void test_status_names(void **state)
{
    (void)state;
    json_t *schema = json_load_file("proto/response.schema.json", 0, NULL);
    assert_non_null(schema);
    const json_t *error = json_array_get(json_object_get(schema, "oneOf"), 1);
    const json_t *code = json_object_get(json_object_get(error, "properties"), "code");
    const json_t *codes = json_object_get(code, "enum");
    assert_true(json_array_size(codes) > 0);
    char *readme = read_text("proto/README.md");
    static const int statuses[] = {
        ML_EINVAL,     ML_ETENSOR, ML_EUNKNOWN_LOSS, ML_EUNKNOWN_PARAM, ML_EPARAM,
        ML_EREDUCTION, ML_ESHAPE,  ML_EBROADCAST,    ML_ENONFINITE,     ML_ELABEL,
        ML_ETOOLARGE,  ML_ENOMEM,  ML_EOUTPUT,       MLP_EMALFORMED,    MLP_EBINARY,
    };
    const size_t count = sizeof(statuses) / sizeof(statuses[0]);
    for (size_t k = 0; k < count; k++) {
        const char *name = mlp_status_name(statuses[k]);
        assert_string_not_equal(name, "internal_error");
        assert_string_not_equal(mlp_strerror(statuses[k]), "unknown error");
        for (size_t j = 0; j < k; j++)
            assert_string_not_equal(name, mlp_status_name(statuses[j]));
        int found = 0;
        for (size_t i = 0; i < json_array_size(codes); i++)
            found |= !strcmp(json_string_value(json_array_get(codes, i)), name);
        if (!found)
            fail_msg("%s is not in response.schema.json's code enum", name);
        char cell[64];
        snprintf(cell, sizeof(cell), "| `%s` |", name);
        if (!strstr(readme, cell))
            fail_msg("%s is not in proto/README.md's error table", name);
    }
    assert_int_equal(count, json_array_size(codes)); /* and the schema lists no other */
    assert_string_equal(mlp_status_name(-14), "internal_error");
    json_decref(schema);
}

/* RFC 4648 section 10 test vectors, with and without padding, and broken text. */
static void test_base64(void **state)
{
    (void)state;
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                        "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    unsigned char out[16];
    for (int i = 0; i < 7; i++) {
        size_t len = strlen(coded[i]);
        assert_int_equal(mlp_b64_decoded_size(coded[i], len), strlen(plain[i]));
        assert_int_equal(mlp_b64_decode(coded[i], len, out), (long long)strlen(plain[i]));
        assert_memory_equal(out, plain[i], strlen(plain[i]));
        size_t bare = len;
        while (bare && coded[i][bare - 1] == '=')
            bare--;
        assert_int_equal(mlp_b64_decode(coded[i], bare, out), (long long)strlen(plain[i]));
        struct mlp_buf b = {0};
        mlp_b64_encode(&b, (const unsigned char *)plain[i], strlen(plain[i]));
        assert_string_equal(b.data ? b.data : "", coded[i]);
        free(b.data);
    }
    assert_int_equal(mlp_b64_decode("Zm9v*mFy", 8, out), -5); /* bad character at 4 */
    assert_int_equal(mlp_b64_decode("Zm9vY", 5, out), -6);    /* a lone sextet */
    assert_true(mlp_b64_decode("Zg=a", 4, out) < 0);          /* '=' inside */
    assert_true(mlp_b64_decode("Zg===", 5, out) < 0);         /* three '=' */
}

/* A v2 binary request decodes in place when aligned and from a copy when not; either way
 * the values are the bytes sent. The body is an exact-size heap buffer (ASan sees
 * over-reads). */
static void test_v2_alignment(void **state)
{
    (void)state;
    static const char header[] =
        "{\"inputs\":[{\"name\":\"LABELS\",\"shape\":[3],\"datatype\":\"UINT8\",\"parameters\":"
        "{\"binary_data_size\":3}},{\"name\":\"LOGITS\",\"shape\":[3],\"datatype\":\"FP64\","
        "\"parameters\":{\"binary_data_size\":24}}],\"parameters\":{\"dtype\":\"float64\"}}";
    const size_t hlen = sizeof(header) - 1;
    const unsigned char labels[3] = {1, 0, 1};
    const double logits[3] = {0.5, -1.25, 3.0};
    for (size_t shift = 0; shift < 8; shift++) {
        size_t len = shift + hlen + 3 + 24;
        char *buf = malloc(len);
        assert_non_null(buf);
        memset(buf, ' ', shift);
        memcpy(buf + shift, header, hlen);
        memcpy(buf + shift + hlen, labels, 3);
        memcpy(buf + shift + hlen + 3, logits, 24); /* little-endian host assumed by the test */
        struct mlp_v2_request r;
        struct mlp_error err;
        int rc =
            mlp_v2_decode("sigmoid_cross_entropy", buf, len, (long long)(shift + hlen), &r, &err);
        if (rc)
            fail_msg("shift %zu: %s", shift, err.e.message);
        const char *lp = r.base.req.logits->data;
        int in_place = lp >= buf && lp < buf + len;
        assert_int_equal(in_place, ((uintptr_t)(buf + shift + hlen + 3) % 8) == 0);
        assert_memory_equal(lp, logits, 24);
        assert_memory_equal(r.base.req.labels->data, labels, 3);
        assert_int_equal(r.base.req.labels->dtype, ML_UINT8);
        struct ml_result res;
        assert_int_equal(ml_eval(&r.base.req, &res, NULL), 0);
        double want = 0;
        for (int i = 0; i < 3; i++)
            want += fmax(logits[i], 0) - logits[i] * labels[i] + log1p(exp(-fabs(logits[i])));
        assert_true(fabs(res.loss - want / 3) < 1e-15);
        ml_result_free(&res);
        mlp_request_free(&r.base);
        /* Every truncation of the same body is refused cleanly. */
        for (size_t cut = 0; cut < len; cut++) {
            rc = mlp_v2_decode("sigmoid_cross_entropy", buf, cut,
                               (long long)(shift + hlen) <= (long long)cut
                                   ? (long long)(shift + hlen)
                                   : (long long)cut,
                               &r, &err);
            if (rc == 0)
                fail_msg("shift %zu: a body cut at %zu bytes was accepted", shift, cut);
        }
        free(buf);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_requests),   cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_number_writer),  cmocka_unit_test(test_ignored_fields),
        cmocka_unit_test(test_catalogue_json), cmocka_unit_test(test_base64),
        cmocka_unit_test(test_v2_alignment),   cmocka_unit_test(test_status_names),
    };
    return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
