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

/*
 * The same mistake sent to /v1 (mlp_eval_text) and to /v2 (mlp_v2_eval) gets the same code.
 * The expected code of each is the one proto/README.md's error table gives for that mistake
 * (the HTTP status may differ: the server answers /v2 with 400 where /v1 has 422).
 */
#define SCE "\"loss\": \"sigmoid_cross_entropy\", "
#define V1_Y "\"labels\": [1, 0], "
#define V1_X "\"logits\": [0.5, -1]"
#define V2_IN(name, dt, shape, rest)                                                               \
    "{\"name\": \"" name "\", \"datatype\": \"" dt "\", \"shape\": " shape ", " rest "}"
#define V2_Y V2_IN("LABELS", "FP32", "[2]", "\"data\": [1, 0]")
#define V2_X V2_IN("LOGITS", "FP32", "[2]", "\"data\": [0.5, -1]")
#define BIN(n) "\"parameters\": {\"binary_data_size\": " #n "}"
#define MISTAKE(what, code, v1, model, v2, tail, tail_len, max_elements)                           \
    {                                                                                              \
        what, code, v1, model, v2, tail, tail_len, max_elements                                    \
    }

static const struct mistake {
    const char *what;
    const char *code; /* what both must answer; NULL: both accept */
    const char *v1;
    const char *model; /* the /v2 model */
    const char *v2;    /* the /v2 JSON header */
    const char *tail;  /* the /v2 binary data after the header, NULL when all JSON */
    size_t tail_len;
    long long max_elements;
} mistakes[] = {
    MISTAKE("unknown loss", "unknown_loss", "{\"loss\": \"no_such_loss\", " V1_Y V1_X "}",
            "no_such_loss", "{\"inputs\": [" V2_Y ", " V2_X "]}", NULL, 0, 0),
    MISTAKE("request dtype", "invalid_request", "{" SCE V1_Y V1_X ", \"dtype\": \"float16\"}",
            "sigmoid_cross_entropy",
            "{\"parameters\": {\"dtype\": \"float16\"}, \"inputs\": [" V2_Y ", " V2_X "]}", NULL, 0,
            0),
    MISTAKE("tensor dtype", "invalid_tensor",
            "{" SCE "\"labels\": {\"shape\": [2], \"dtype\": \"float16\", \"b64\": \"AAAA\"}, " V1_X
            "}",
            "sigmoid_cross_entropy",
            "{\"inputs\": [" V2_IN("LABELS", "FP16", "[2]", "\"data\": [1, 0]") ", " V2_X "]}",
            NULL, 0, 0),
    MISTAKE("shape mismatch", "shape_mismatch", "{" SCE "\"labels\": [1, 0, 1], " V1_X "}",
            "sigmoid_cross_entropy",
            "{\"inputs\": [" V2_IN("LABELS", "FP32", "[3]", "\"data\": [1, 0, 1]") ", " V2_X "]}",
            NULL, 0, 0),
    MISTAKE("NaN in JSON", "non_finite_input", "{" SCE V1_Y "\"logits\": [0.5, \"NaN\"]}",
            "sigmoid_cross_entropy",
            "{\"inputs\": [" V2_Y
            ", " V2_IN("LOGITS", "FP32", "[2]", "\"data\": [0.5, \"NaN\"]") "]}",
            NULL, 0, 0),
    MISTAKE("Inf in bytes", "non_finite_input",
            "{" SCE V1_Y
            "\"logits\": {\"shape\": [2], \"dtype\": \"float32\", \"b64\": \"AAAAPwAAgH8=\"}}",
            "sigmoid_cross_entropy",
            "{\"inputs\": [" V2_Y ", " V2_IN("LOGITS", "FP32", "[2]", BIN(8)) "]}",
            "\x00\x00\x00\x3f\x00\x00\x80\x7f", 8, 0),
    MISTAKE("beyond 2^40 elements", "too_large",
            "{" SCE "\"labels\": {\"shape\": [4503599627370496, 4096], \"dtype\": \"float32\", "
            "\"b64\": \"\"}, " V1_X "}",
            "sigmoid_cross_entropy",
            "{\"inputs\": [" V2_IN("LABELS", "FP32", "[4503599627370496, 4096]", BIN(0)) ", " V2_X
                                                                                         "]}",
            "", 0, 0),
    MISTAKE("over the element limit", "too_large", "{" SCE V1_Y V1_X "}", "sigmoid_cross_entropy",
            "{\"inputs\": [" V2_Y ", " V2_X "]}", NULL, 0, 1),
    MISTAKE("data short of the shape", "invalid_tensor",
            "{" SCE "\"labels\": {\"shape\": [2, 2], \"data\": [1, 0, 1]}, " V1_X "}",
            "sigmoid_cross_entropy",
            "{\"inputs\": [" V2_IN("LABELS", "FP32", "[2, 2]", "\"data\": [1, 0, 1]") ", " V2_X
                                                                                      "]}",
            NULL, 0, 0),
    MISTAKE("bytes short of the shape", "invalid_tensor",
            "{" SCE
            "\"labels\": {\"shape\": [2], \"dtype\": \"float32\", \"b64\": \"AACAPw==\"}, " V1_X
            "}",
            "sigmoid_cross_entropy",
            "{\"inputs\": [" V2_IN("LABELS", "FP32", "[2]", BIN(4)) ", " V2_X "]}",
            "\x00\x00\x80\x3f", 4, 0),
    MISTAKE("data given twice", "invalid_tensor",
            "{" SCE "\"labels\": {\"shape\": [2], \"data\": [1, 0], \"dtype\": \"float32\", "
            "\"b64\": \"AACAPwAAAAA=\"}, " V1_X "}",
            "sigmoid_cross_entropy",
            "{\"inputs\": [" V2_IN("LABELS", "FP32", "[2]", "\"data\": [1, 0], " BIN(8)) ", " V2_X
                                                                                         "]}",
            "\x00\x00\x80\x3f\x00\x00\x00\x00", 8, 0),
    MISTAKE("base64 that is not", "invalid_tensor",
            "{" SCE
            "\"labels\": {\"shape\": [2], \"dtype\": \"float32\", \"b64\": \"AAC*PwAAAAA=\"}, " V1_X
            "}",
            "sigmoid_cross_entropy",
            "{\"inputs\": [" V2_IN("LABELS", "FP32", "[2]", "\"data\": \"AACAPwAAAAA=\"") ", " V2_X
                                                                                          "]}",
            NULL, 0, 0),
    MISTAKE("unknown parameter", "unknown_parameter",
            "{\"loss\": \"mean_squared_error\", " V1_Y
            "\"predictions\": [0.5, 1], \"params\": {\"delta\": "
            "1}}",
            "mean_squared_error",
            "{\"parameters\": {\"delta\": 1}, \"inputs\": [" V2_Y
            ", " V2_IN("PREDICTIONS", "FP32", "[2]", "\"data\": [0.5, 1]") "]}",
            NULL, 0, 0),
    MISTAKE("boolean parameter as a number", "bad_parameter",
            "{\"loss\": \"binary_crossentropy\", " V1_Y "\"predictions\": [0.5, 0.25], \"params\": "
            "{\"from_logits\": 1}}",
            "binary_crossentropy",
            "{\"parameters\": {\"from_logits\": 1}, \"inputs\": [" V2_Y
            ", " V2_IN("PREDICTIONS", "FP32", "[2]", "\"data\": [0.5, 0.25]") "]}",
            NULL, 0, 0),
    MISTAKE("number parameter as text", "bad_parameter",
            "{\"loss\": \"huber_loss\", " V1_Y "\"predictions\": [0.5, 1], \"params\": {\"delta\": "
            "\"big\"}}",
            "huber_loss",
            "{\"parameters\": {\"delta\": \"big\"}, \"inputs\": [" V2_Y
            ", " V2_IN("PREDICTIONS", "FP32", "[2]", "\"data\": [0.5, 1]") "]}",
            NULL, 0, 0),
    MISTAKE("parameters not an object", "invalid_request", "{" SCE V1_Y V1_X ", \"params\": [1]}",
            "sigmoid_cross_entropy", "{\"parameters\": [1], \"inputs\": [" V2_Y ", " V2_X "]}",
            NULL, 0, 0),
    MISTAKE("unknown reduction", "unknown_reduction",
            "{" SCE V1_Y V1_X ", \"reduction\": \"average\"}", "sigmoid_cross_entropy",
            "{\"parameters\": {\"reduction\": \"average\"}, \"inputs\": [" V2_Y ", " V2_X "]}",
            NULL, 0, 0),
    MISTAKE("reduction not a string", "invalid_request", "{" SCE V1_Y V1_X ", \"reduction\": 5}",
            "sigmoid_cross_entropy",
            "{\"parameters\": {\"reduction\": 5}, \"inputs\": [" V2_Y ", " V2_X "]}", NULL, 0, 0),
    MISTAKE("allow_non_finite not a boolean", "invalid_request",
            "{" SCE V1_Y V1_X ", \"allow_non_finite\": 1}", "sigmoid_cross_entropy",
            "{\"parameters\": {\"allow_non_finite\": 1}, \"inputs\": [" V2_Y ", " V2_X "]}", NULL,
            0, 0),
    MISTAKE("null: the default", NULL,
            "{" SCE V1_Y V1_X ", \"reduction\": null, \"dtype\": null, \"allow_non_finite\": null}",
            "sigmoid_cross_entropy",
            "{\"parameters\": {\"reduction\": null, \"dtype\": null, \"allow_non_finite\": null}, "
            "\"inputs\": [" V2_Y ", " V2_X "]}",
            NULL, 0, 0),
    MISTAKE("unknown output", "unsupported_output",
            "{" SCE V1_Y V1_X ", \"outputs\": [\"gradient\"]}", "sigmoid_cross_entropy",
            "{\"outputs\": [{\"name\": \"GRADIENT\"}], \"inputs\": [" V2_Y ", " V2_X "]}", NULL, 0,
            0),
    MISTAKE("output not a name", "invalid_request", "{" SCE V1_Y V1_X ", \"outputs\": [3]}",
            "sigmoid_cross_entropy", "{\"outputs\": [3], \"inputs\": [" V2_Y ", " V2_X "]}", NULL,
            0, 0),
    MISTAKE(
        "output the reduction cannot give", "unsupported_output",
        "{" SCE V1_Y V1_X ", \"reduction\": \"none\", \"outputs\": [\"per_sample\"]}",
        "sigmoid_cross_entropy",
        "{\"parameters\": {\"reduction\": \"none\"}, \"outputs\": [{\"name\": \"PER_SAMPLE\"}], "
        "\"inputs\": [" V2_Y ", " V2_X "]}",
        NULL, 0, 0),
    MISTAKE(
        "ragged data", "invalid_tensor",
        "{" SCE "\"labels\": [[1, 0], [1]], \"logits\": [[0.5, -1], [0, 0]]}",
        "sigmoid_cross_entropy",
        "{\"inputs\": [" V2_IN("LABELS", "FP32", "[2, 2]", "\"data\": [[1, 0], [1]]") ", " V2_IN(
            "LOGITS", "FP32", "[2, 2]", "\"data\": [0.5, -1, 0, 0]") "]}",
        NULL, 0, 0),
    MISTAKE("element not a number", "invalid_tensor", "{" SCE "\"labels\": [\"one\", 0], " V1_X "}",
            "sigmoid_cross_entropy",
            "{\"inputs\": [" V2_IN("LABELS", "FP32", "[2]", "\"data\": [\"one\", 0]") ", " V2_X
                                                                                      "]}",
            NULL, 0, 0),
    MISTAKE("negative dimension", "invalid_tensor",
            "{" SCE "\"labels\": {\"shape\": [-2], \"data\": []}, " V1_X "}",
            "sigmoid_cross_entropy",
            "{\"inputs\": [" V2_IN("LABELS", "FP32", "[-2]", "\"data\": []") ", " V2_X "]}", NULL,
            0, 0),
    MISTAKE("rank above 8", "invalid_tensor",
            "{" SCE "\"labels\": {\"shape\": [1, 1, 1, 1, 1, 1, 1, 1, 1], \"data\": [1]}, " V1_X
            "}",
            "sigmoid_cross_entropy",
            "{\"inputs\": [" V2_IN("LABELS", "FP32", "[1, 1, 1, 1, 1, 1, 1, 1, 1]",
                                   "\"data\": [1]") ", " V2_X "]}",
            NULL, 0, 0),
    MISTAKE("missing input", "invalid_request", "{" SCE V1_Y "\"dtype\": \"float64\"}",
            "sigmoid_cross_entropy", "{\"inputs\": [" V2_Y "]}", NULL, 0, 0),
    MISTAKE("input the loss does not take", "invalid_request",
            "{\"loss\": \"mean_squared_error\", " V1_Y V1_X "}", "mean_squared_error",
            "{\"inputs\": [" V2_Y ", " V2_X "]}", NULL, 0, 0),
    MISTAKE("weights given twice", "invalid_request",
            "{" SCE V1_Y V1_X ", \"weights\": [1, 1], \"mask\": [1, 1]}", "sigmoid_cross_entropy",
            "{\"inputs\": [" V2_Y ", " V2_X
            ", " V2_IN("WEIGHTS", "FP32", "[2]", "\"data\": [1, 1]") ", " V2_IN(
                "MASK", "FP32", "[2]", "\"data\": [1, 1]") "]}",
            NULL, 0, 0),
    MISTAKE("weights that cannot broadcast", "broadcast_error",
            "{" SCE V1_Y V1_X ", \"weights\": [1, 1, 1]}", "sigmoid_cross_entropy",
            "{\"inputs\": [" V2_Y ", " V2_X
            ", " V2_IN("WEIGHTS", "FP32", "[3]", "\"data\": [1, 1, 1]") "]}",
            NULL, 0, 0),
    MISTAKE("class index out of range", "invalid_label",
            "{\"loss\": \"cross_entropy\", \"labels\": [7], \"logits\": [[1, 2]]}", "cross_entropy",
            "{\"inputs\": [" V2_IN("LABELS", "INT64", "[1]", "\"data\": [7]") ", " V2_IN(
                "LOGITS", "FP32", "[1, 2]", "\"data\": [[1, 2]]") "]}",
            NULL, 0, 0),
    MISTAKE("malformed JSON", "malformed_json", "{\"loss\": ", "sigmoid_cross_entropy",
            "{\"inputs\": [", NULL, 0, 0),
    MISTAKE("not an object", "invalid_request", "[1]", "sigmoid_cross_entropy", "[1]", NULL, 0, 0),
};

static const char *code_of(const struct mlp_buf *b, int rc, const char *what, const char *side)
{
    if (rc == 0)
        return NULL;
    json_t *body = json_loadb(b->data, b->len, 0, NULL);
    if (!body)
        fail_msg("%s (%s): the error is not JSON: %s", what, side, b->data);
    const char *code = json_string_value(json_object_get(body, "code"));
    if (!code || strcmp(code, mlp_status_name(rc)))
        fail_msg("%s (%s): code %s but status %s", what, side, code ? code : "(none)",
                 mlp_status_name(rc));
    json_decref(body);
    return mlp_status_name(rc); /* static */
}

static void test_same_code_v1_v2(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(mistakes) / sizeof(mistakes[0]); i++) {
        const struct mistake *m = &mistakes[i];
        struct mlp_buf b1 = {0}, b2 = {0};
        int rc1 = mlp_eval_text(m->v1, strlen(m->v1), m->max_elements, &b1);
        const char *c1 = code_of(&b1, rc1, m->what, "/v1");

        size_t hlen = strlen(m->v2), len = hlen + m->tail_len;
        char *body = malloc(len ? len : 1); /* exact size: ASan sees any over-read */
        assert_non_null(body);
        memcpy(body, m->v2, hlen);
        if (m->tail)
            memcpy(body + hlen, m->tail, m->tail_len);
        struct mlp_exec exec = {m->max_elements, NULL, NULL};
        size_t header_len = 0;
        int rc2 = mlp_v2_eval(m->model, body, len, m->tail ? (long long)hlen : -1, &exec, &b2,
                              &header_len, NULL);
        const char *c2 = code_of(&b2, rc2, m->what, "/v2");
        free(body);

        if ((c1 == NULL) != (m->code == NULL) || (c1 && strcmp(c1, m->code)))
            fail_msg("%s: /v1 answers %s, expected %s: %s", m->what, c1 ? c1 : "success",
                     m->code ? m->code : "success", b1.data);
        if ((c2 == NULL) != (m->code == NULL) || (c2 && strcmp(c2, m->code)))
            fail_msg("%s: /v2 answers %s, expected %s: %s", m->what, c2 ? c2 : "success",
                     m->code ? m->code : "success", b2.data);
        free(b1.data);
        free(b2.data);
    }
    print_message("%zu mistakes: the same code on /v1 and /v2\n",
                  sizeof(mistakes) / sizeof(mistakes[0]));
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
        cmocka_unit_test(test_bad_requests),    cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_number_writer),   cmocka_unit_test(test_ignored_fields),
        cmocka_unit_test(test_catalogue_json),  cmocka_unit_test(test_base64),
        cmocka_unit_test(test_v2_alignment),    cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_same_code_v1_v2),
    };
    return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}
