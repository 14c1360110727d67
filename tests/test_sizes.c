/*
 * test_sizes.c -- the element limit counts every array, empty ones included.
 *
 * The footprint of a shape is the product over its dims of max(dim, 1): it bounds the
 * elements of an array and the size of its nested JSON (an empty [2^40, 0] array is 2^40
 * "[]"). Inputs and outputs (per_element, per_sample, per_class, the reduction-none loss)
 * are refused with ML_ETOOLARGE when a footprint exceeds max_elements or 2^40, before
 * anything is allocated for them: an allocation of 2^40 group sums would abort this test
 * under AddressSanitizer, and a JSON answer of 2^40 rows would never end.
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

#include "../lib/src/tensor.h"
#include "maskloss.h"
#include "mlp.h"

#define P40 (INT64_C(1) << 40)

static const double no_data[1] = {0};

static struct ml_tensor empty_tensor(int rank, const int64_t *shape)
{
    struct ml_tensor t;
    memset(&t, 0, sizeof(t));
    t.rank = rank;
    memcpy(t.shape, shape, sizeof(int64_t) * (size_t)rank);
    t.dtype = ML_FLOAT64;
    t.data = no_data; /* never read: the shape has no element */
    return t;
}

/* labels and logits of the shape; expects `code`; on ML_ETOOLARGE, that err names field
 * and says the limit. */
static void expect_status(const char *loss, const char *reduction, int rank, const int64_t *shape,
                          unsigned outputs, int64_t max_elements, int code, const char *field)
{
    struct ml_tensor z = empty_tensor(rank, shape), x = z;
    struct ml_request req;
    ml_request_init(&req);
    req.loss = loss;
    req.reduction = reduction;
    req.labels = &z;
    req.logits = &x;
    req.outputs = outputs;
    req.max_elements = max_elements;
    struct ml_result res;
    struct ml_error err;
    char s[200];
    int rc = ml_eval(&req, &res, &err);
    snprintf(s, sizeof(s), "%s %s shape [%lld, %lld, ...] max_elements %lld", loss,
             reduction ? reduction : "(default)", (long long)shape[0],
             (long long)(rank > 1 ? shape[1] : -1), (long long)max_elements);
    if (rc != code)
        fail_msg("%s: %s, expected %s (%s)", s, ml_status_name(rc), ml_status_name(code),
                 rc ? err.message : "");
    if (rc == ML_ETOOLARGE) {
        assert_string_equal(err.field, field);
        char limit[32];
        snprintf(limit, sizeof(limit), "%lld",
                 (long long)(max_elements > 0 && max_elements < P40 ? max_elements : P40));
        if (!strstr(err.message, limit) || !strstr(err.message, field))
            fail_msg("%s: the message does not name %s and the limit %s: %s", s, field, limit,
                     err.message);
        /* Nothing to free: a failed evaluation leaves no array behind. */
        assert_null(res.per_element.data);
        assert_null(res.per_class.data);
        assert_null(res.per_sample.data);
        assert_null(res.loss_tensor.data);
    }
    ml_result_free(&res);
}

/* The issue's shapes, at the library. */
static void test_issue_shapes(void **state)
{
    (void)state;
    const char *sce = "sigmoid_cross_entropy";
    const int64_t rows_no_cols[2] = {P40, 0};
    const int64_t cols_no_rows[2] = {0, 67108864};
    const int64_t four_million[2] = {0, 4000000};
    const int64_t huge3[3] = {P40, 0, P40};
    /* [2^40, 0] with per_element: 2^40 empty rows. Within the absolute limit, over any
     * realistic one (the server's default is 16777216). */
    expect_status(sce, NULL, 2, rows_no_cols, ML_OUT_LOSS | ML_OUT_PER_ELEMENT, 16777216,
                  ML_ETOOLARGE, "labels");
    expect_status(sce, "NONE", 2, rows_no_cols, ML_OUT_LOSS, 16777216, ML_ETOOLARGE, "labels");
    /* [0, 2^26] with per_class: 2^26 classes of no element. */
    expect_status(sce, NULL, 2, cols_no_rows, ML_OUT_LOSS | ML_OUT_PER_CLASS, 16777216,
                  ML_ETOOLARGE, "labels");
    /* [0, 4000000] with a limit of 100. */
    expect_status(sce, NULL, 2, four_million, ML_OUT_LOSS | ML_OUT_PER_CLASS, 100, ML_ETOOLARGE,
                  "labels");
    /* [2^40, 0, 2^40]: a footprint of 2^80, with or without a limit. */
    for (int limit = 0; limit < 2; limit++) {
        int64_t max = limit ? 16777216 : 0;
        expect_status(sce, NULL, 3, huge3, ML_OUT_LOSS | ML_OUT_PER_CLASS, max, ML_ETOOLARGE,
                      "labels");
        expect_status(sce, NULL, 3, huge3, ML_OUT_LOSS | ML_OUT_PER_SAMPLE, max, ML_ETOOLARGE,
                      "labels");
        expect_status(sce, NULL, 3, huge3, ML_OUT_LOSS | ML_OUT_PER_ELEMENT, max, ML_ETOOLARGE,
                      "labels");
        expect_status(sce, "NONE", 3, huge3, ML_OUT_LOSS, max, ML_ETOOLARGE, "labels");
        expect_status("softmax_cross_entropy", NULL, 3, huge3, ML_OUT_LOSS, max, ML_ETOOLARGE,
                      "labels");
        expect_status("cross_entropy", NULL, 3, huge3, ML_OUT_LOSS | ML_OUT_PER_SAMPLE, max,
                      ML_ETOOLARGE, "labels");
        expect_status("categorical_crossentropy", NULL, 3, huge3, ML_OUT_LOSS, max, ML_ETOOLARGE,
                      "labels");
    }
    /* Without a limit the absolute one (2^40) applies: 2^41 empty rows are refused. */
    const int64_t rows41[2] = {2 * P40, 0};
    expect_status(sce, NULL, 2, rows41, ML_OUT_LOSS | ML_OUT_PER_SAMPLE, 0, ML_ETOOLARGE, "labels");
    expect_status(sce, NULL, 2, rows41, ML_OUT_LOSS, 0, ML_ETOOLARGE, "labels");
}

/* The limit is inclusive, for empty and non-empty shapes alike. */
/* Without a caller's limit, an array the evaluation makes may exceed its largest input by
 * 2^24 elements at most (tensor.h): [2^40, 0] names 2^40 empty rows that no input pays for. */
static void test_no_limit_outputs(void **state)
{
    (void)state;
    const int64_t rows_no_cols[2] = {P40, 0}, wide[2] = {0, (INT64_C(1) << 24) + 1};
    const int64_t narrow[2] = {0, 1000};
    const struct {
        const char *reduction;
        unsigned outputs;
        const int64_t *shape;
        int code;
    } cases[] = {
        {NULL, ML_OUT_LOSS | ML_OUT_PER_ELEMENT, rows_no_cols, ML_ETOOLARGE},
        {NULL, ML_OUT_LOSS | ML_OUT_PER_SAMPLE, rows_no_cols, ML_ETOOLARGE},
        {"NONE", ML_OUT_LOSS, rows_no_cols, ML_ETOOLARGE},
        {NULL, ML_OUT_LOSS, rows_no_cols, 0}, /* a number: nothing is made */
        {NULL, ML_OUT_LOSS | ML_OUT_PER_CLASS, wide, ML_ETOOLARGE},
        {NULL, ML_OUT_LOSS | ML_OUT_PER_CLASS, narrow, 0},
    };
    /* A loss per sample has a value per row even where the rows hold no class: 2^30 of them
     * from no input element, refused at once (it took 8 GB and 40 s before). */
    const int64_t rows30[2] = {INT64_C(1) << 30, 0};
    /* (cross_entropy: probability targets of the logits' shape.) */
    static const char *const per_sample[] = {"softmax_cross_entropy", "cross_entropy",
                                             "categorical_crossentropy", "binary_crossentropy"};
    for (int l = 0; l < 4; l++) {
        struct ml_tensor z = empty_tensor(2, rows30), x = z;
        struct ml_request req;
        ml_request_init(&req);
        req.loss = per_sample[l];
        req.labels = &z;
        req.logits = &x;
        struct ml_result res;
        struct ml_error err;
        int rc = ml_eval(&req, &res, &err);
        if (rc != ML_ETOOLARGE)
            fail_msg("%s [2^30, 0]: %s (%s)", per_sample[l], ml_status_name(rc),
                     rc ? err.message : "");
        ml_result_free(&res);
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ml_tensor z = empty_tensor(2, cases[i].shape), x = z;
        struct ml_request req;
        ml_request_init(&req);
        req.loss = "sigmoid_cross_entropy";
        req.reduction = cases[i].reduction;
        req.labels = &z;
        req.logits = &x;
        req.outputs = cases[i].outputs;
        struct ml_result res;
        struct ml_error err;
        int rc = ml_eval(&req, &res, &err);
        if (rc != cases[i].code)
            fail_msg("case %zu: %s, expected %s (%s)", i, ml_status_name(rc),
                     ml_status_name(cases[i].code), rc ? err.message : "");
        if (rc) {
            assert_non_null(strstr(err.message, "16777216"));
            assert_non_null(strstr(err.message, "without max_elements"));
            assert_null(res.per_element.data);
            assert_null(res.per_sample.data);
            assert_null(res.per_class.data);
            assert_null(res.loss_tensor.data);
        } else if (cases[i].outputs & ML_OUT_PER_CLASS) {
            assert_int_equal(res.per_class.numel, 1000);
        }
        ml_result_free(&res);
    }
}

static void test_limit_edges(void **state)
{
    (void)state;
    const char *sce = "sigmoid_cross_entropy";
    const int64_t at[2] = {0, 100}, over[2] = {0, 101}, rows_at[2] = {100, 0},
                  rows_over[2] = {101, 0}, mid[3] = {10, 0, 10}, mid_over[3] = {10, 0, 11};
    unsigned all = ML_OUT_LOSS | ML_OUT_PER_ELEMENT | ML_OUT_PER_SAMPLE | ML_OUT_PER_CLASS;
    expect_status(sce, NULL, 2, at, all, 100, 0, NULL);
    expect_status(sce, NULL, 2, over, all, 100, ML_ETOOLARGE, "labels");
    expect_status(sce, NULL, 2, rows_at, all, 100, 0, NULL);
    expect_status(sce, NULL, 2, rows_over, all, 100, ML_ETOOLARGE, "labels");
    expect_status(sce, NULL, 3, mid, all, 100, 0, NULL);
    expect_status(sce, NULL, 3, mid_over, all, 100, ML_ETOOLARGE, "labels");
    expect_status(sce, "NONE", 3, mid_over, ML_OUT_LOSS, 100, ML_ETOOLARGE, "labels");
}

/* Every input counts: weights, losses, pos_weight. */
static void test_every_input(void **state)
{
    (void)state;
    const int64_t ok[2] = {0, 5}, huge3[3] = {P40, 0, P40};
    struct ml_tensor z = empty_tensor(2, ok), x = z, big = empty_tensor(3, huge3);
    struct ml_request req;
    struct ml_result res;
    struct ml_error err;

    ml_request_init(&req);
    req.loss = "sigmoid_cross_entropy";
    req.labels = &z;
    req.logits = &x;
    req.weights = &big;
    assert_int_equal(ml_eval(&req, &res, &err), ML_ETOOLARGE);
    assert_string_equal(err.field, "weights");

    ml_request_init(&req);
    req.loss = "compute_weighted_loss";
    req.losses = &big;
    req.reduction = "NONE";
    assert_int_equal(ml_eval(&req, &res, &err), ML_ETOOLARGE);
    assert_string_equal(err.field, "losses");

    struct ml_param pw;
    memset(&pw, 0, sizeof(pw));
    pw.name = "pos_weight";
    pw.kind = ML_PARAM_TENSOR;
    pw.tensor = big;
    ml_request_init(&req);
    req.loss = "binary_cross_entropy_with_logits";
    req.labels = &z;
    req.logits = &x;
    req.params = &pw;
    req.num_params = 1;
    req.outputs = ML_OUT_LOSS | ML_OUT_PER_ELEMENT;
    assert_int_equal(ml_eval(&req, &res, &err), ML_ETOOLARGE);
    assert_string_equal(err.field, "params.pos_weight");
}

/* Legitimate empty requests keep their frameworks' answers. */
static void test_empty_requests_work(void **state)
{
    (void)state;
    const int64_t shape[2] = {0, 5};
    struct ml_tensor z = empty_tensor(2, shape), x = z;
    struct ml_request req;
    struct ml_result res;
    struct ml_error err;
    ml_request_init(&req);
    req.loss = "sigmoid_cross_entropy";
    req.labels = &z;
    req.logits = &x;
    req.max_elements = 100;
    req.outputs = ML_OUT_LOSS | ML_OUT_PER_ELEMENT | ML_OUT_PER_CLASS | ML_OUT_PER_SAMPLE;
    assert_int_equal(ml_eval(&req, &res, &err), 0);
    /* TF SUM_BY_NONZERO_WEIGHTS divides with div_no_nan: 0/0 is 0. */
    assert_true(res.loss == 0.0 && !signbit(res.loss));
    assert_int_equal(res.per_element.numel, 0);
    assert_int_equal(res.per_sample.numel, 0);
    assert_int_equal(res.per_class.numel, 5);
    for (int i = 0; i < 5; i++)
        assert_true(res.per_class.data[i] == 0.0);
    ml_result_free(&res);

    /* torch mean of nothing: 0/0 = NaN. */
    req.loss = "binary_cross_entropy_with_logits";
    req.outputs = ML_OUT_LOSS;
    assert_int_equal(ml_eval(&req, &res, &err), 0);
    assert_true(isnan(res.loss));
    ml_result_free(&res);
}

/* ml__check_size itself: the footprint, without overflow, whatever the dims. */
static void test_check_size(void **state)
{
    (void)state;
    struct ml_error err;
    const int64_t scalar[1] = {0};
    assert_int_equal(ml__check_size("x", "x", 0, scalar, 1, &err), 0);
    const int64_t a[2] = {P40, 1};
    assert_int_equal(ml__check_size("x", "x", 2, a, 0, &err), 0);
    assert_int_equal(ml__check_size("x", "x", 2, a, P40, &err), 0);
    assert_int_equal(ml__check_size("x", "x", 2, a, P40 - 1, &err), ML_ETOOLARGE);
    const int64_t b[8] = {INT64_MAX, 0, INT64_MAX, 0, INT64_MAX, 0, INT64_MAX, 0};
    assert_int_equal(ml__check_size("labels", "labels", 8, b, 0, &err), ML_ETOOLARGE);
    assert_string_equal(err.field, "labels");
    const int64_t c[8] = {2, 2, 2, 2, 2, 2, 2, 2};
    assert_int_equal(ml__check_size("x", "x", 8, c, 256, &err), 0);
    assert_int_equal(ml__check_size("x", "x", 8, c, 255, &err), ML_ETOOLARGE);
    const int64_t d[2] = {1 << 20, 1 << 20}; /* exactly 2^40 */
    assert_int_equal(ml__check_size("x", "x", 2, d, 0, &err), 0);
    const int64_t e[3] = {1 << 20, 1 << 20, 2};
    assert_int_equal(ml__check_size("x", "x", 3, e, 0, &err), ML_ETOOLARGE);
    assert_int_equal(ml__check_size("x", "x", 3, e, INT64_MAX, &err), ML_ETOOLARGE);
}

/* The JSON protocol refuses such shapes before it allocates, and never writes an answer the
 * size of 2^40 rows. */
static void expect_json(const char *text, long long max_elements, int code, const char *field)
{
    struct mlp_buf out = {0};
    int rc = mlp_eval_text(text, strlen(text), max_elements, &out);
    assert_false(out.failed);
    json_t *body = json_loads(out.data, 0, NULL);
    if (rc != code || !body)
        fail_msg("%s: status %d, expected %d: %.300s", text, rc, code, out.data);
    if (code) {
        assert_string_equal(json_string_value(json_object_get(body, "code")),
                            mlp_status_name(code));
        assert_string_equal(json_string_value(json_object_get(body, "field")), field);
    }
    json_decref(body);
    free(out.data);
}

static void test_protocol(void **state)
{
    (void)state;
    /* The issue's 167-byte request, under the server's default limit. */
    expect_json("{\"loss\":\"sigmoid_cross_entropy\",\"labels\":{\"shape\":[1099511627776,0],"
                "\"data\":[]},\"logits\":{\"shape\":[1099511627776,0],\"data\":[]},"
                "\"outputs\":[\"per_element\"]}",
                16777216, ML_ETOOLARGE, "labels");
    expect_json("{\"loss\":\"sigmoid_cross_entropy\",\"labels\":{\"shape\":[0,67108864],"
                "\"data\":[]},\"logits\":{\"shape\":[0,67108864],\"data\":[]},"
                "\"outputs\":[\"per_class\"]}",
                16777216, ML_ETOOLARGE, "labels");
    /* A footprint over 2^40 is refused by the decoder, whatever the limit, in JSON data
     * and in base64. */
    expect_json("{\"loss\":\"sigmoid_cross_entropy\",\"labels\":{\"shape\":[1099511627776,0,"
                "1099511627776],\"data\":[]},\"logits\":[0]}",
                0, ML_ETOOLARGE, "labels");
    expect_json("{\"loss\":\"sigmoid_cross_entropy\",\"labels\":[0],\"logits\":{\"shape\":[0,"
                "1099511627776,1099511627776],\"dtype\":\"float32\",\"b64\":\"\"}}",
                0, ML_ETOOLARGE, "logits");
    expect_json("{\"loss\":\"sigmoid_cross_entropy\",\"labels\":{\"shape\":[0,5],\"data\":[]},"
                "\"logits\":{\"shape\":[0,5],\"data\":[]},\"outputs\":[\"loss\","
                "\"per_element\",\"per_class\"]}",
                100, 0, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_issue_shapes),
        cmocka_unit_test(test_limit_edges),
        cmocka_unit_test(test_no_limit_outputs),
        cmocka_unit_test(test_every_input),
        cmocka_unit_test(test_empty_requests_work),
        cmocka_unit_test(test_check_size),
        cmocka_unit_test(test_protocol),
    };
    return cmocka_run_group_tests_name("sizes", tests, NULL, NULL);
}
