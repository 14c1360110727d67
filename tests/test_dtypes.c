/*
 * test_dtypes.c -- inputs of every element type give the numbers of their float form.
 *
 * Labels and masks arrive as bool, uint8, int32 or int64 (numpy's and the v2 protocol's
 * types); class indices as int64. Expected values: the note's masked example from the golden
 * vectors (TensorFlow's 0.5375321135555567), and the float path of the same request.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "maskloss.h"

static const double note_labels[20] = {1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1};
static const double note_logits[20] = {0.2, 0.2, 0.2, 0,   0.8, 0,   0.5, 0.5, 0.2, 0,
                                       0,   0.5, 0.1, 0.0, 0.9, 0.9, 0.9, 0.7, 0.1, 0.0};
static const double note_mask[20] = {1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 1};
#define NOTE_LOSS 0.5375321135555567 /* tests/data/golden.json tf_sce_blog_mask_... */

/* A 4x5 tensor of `dtype` holding v (0/1 values or small integers). */
static struct ml_tensor typed(enum ml_dtype dtype, const double *v, void *buf)
{
    struct ml_tensor t = {.rank = 2, .shape = {4, 5}, .dtype = dtype, .data = buf};
    for (int i = 0; i < 20; i++) {
        switch (dtype) {
        case ML_FLOAT32:
            ((float *)buf)[i] = (float)v[i];
            break;
        case ML_FLOAT64:
            ((double *)buf)[i] = v[i];
            break;
        case ML_UINT8:
            ((uint8_t *)buf)[i] = (uint8_t)v[i];
            break;
        case ML_BOOL:
            /* Any non-zero byte is true: numpy writes 1, a C caller may write 0xff. */
            ((uint8_t *)buf)[i] = v[i] != 0 ? (uint8_t)(i % 2 ? 0xff : 1) : 0;
            break;
        case ML_INT32:
            ((int32_t *)buf)[i] = (int32_t)v[i];
            break;
        case ML_INT64:
            ((int64_t *)buf)[i] = (int64_t)v[i];
            break;
        }
    }
    return t;
}

static void test_note_every_dtype(void **state)
{
    (void)state;
    static const enum ml_dtype all[] = {ML_FLOAT32, ML_FLOAT64, ML_UINT8,
                                        ML_BOOL,    ML_INT32,   ML_INT64};
    double lbuf[20], mbuf[20];
    struct ml_tensor logits = {
        .rank = 2, .shape = {4, 5}, .dtype = ML_FLOAT64, .data = note_logits};
    for (size_t a = 0; a < 6; a++) {
        for (size_t b = 0; b < 6; b++) {
            struct ml_tensor labels = typed(all[a], note_labels, lbuf);
            struct ml_tensor mask = typed(all[b], note_mask, mbuf);
            struct ml_request req;
            struct ml_result res;
            ml_request_init(&req);
            req.loss = "sigmoid_cross_entropy";
            req.dtype = ML_FLOAT64;
            req.labels = &labels;
            req.logits = &logits;
            req.weights = &mask;
            assert_int_equal(ml_eval(&req, &res, NULL), 0);
            if (fabs(res.loss - NOTE_LOSS) > 1e-15)
                fail_msg("labels %s, mask %s: %.17g, expected %.17g", ml_dtype_name(all[a]),
                         ml_dtype_name(all[b]), res.loss, NOTE_LOSS);
            assert_true(res.num_nonzero_weights == 9);
            ml_result_free(&res);
        }
    }
}

/* Class indices as integers: the same as their float form, exact beyond float32's 2^24. */
static void test_class_indices(void **state)
{
    (void)state;
    static const float x[12] = {0.1f, 2.0f, -1.0f, 0.5f, 0.5f, 0.5f,
                                3.0f, 0.0f, 1.0f,  -2.f, 1.0f, 0.0f};
    struct ml_tensor logits = {.rank = 2, .shape = {4, 3}, .dtype = ML_FLOAT32, .data = x};
    static const float lf[4] = {1, 0, 2, -100};
    static const int64_t l64[4] = {1, 0, 2, -100};
    static const int32_t l32[4] = {1, 0, 2, -100};
    struct ml_tensor tf = {.rank = 1, .shape = {4}, .dtype = ML_FLOAT32, .data = lf};
    struct ml_tensor t64 = {.rank = 1, .shape = {4}, .dtype = ML_INT64, .data = l64};
    struct ml_tensor t32 = {.rank = 1, .shape = {4}, .dtype = ML_INT32, .data = l32};
    const struct ml_tensor *labels[3] = {&tf, &t64, &t32};
    double got[3];
    for (int i = 0; i < 3; i++) {
        struct ml_request req;
        struct ml_result res;
        ml_request_init(&req);
        req.loss = "torch.nn.functional.cross_entropy"; /* -100: ignore_index */
        req.labels = labels[i];
        req.logits = &logits;
        assert_int_equal(ml_eval(&req, &res, NULL), 0);
        got[i] = res.loss;
        ml_result_free(&res);
    }
    assert_true(got[0] == got[1] && got[1] == got[2]);
    assert_true(isfinite(got[0]) && got[0] > 0);

    /* 16777217 is not a float32: read as int64 it is reported exactly. */
    static const int64_t big[4] = {1, 0, 16777217, 2};
    struct ml_tensor tb = {.rank = 1, .shape = {4}, .dtype = ML_INT64, .data = big};
    struct ml_request req;
    struct ml_result res;
    struct ml_error err;
    ml_request_init(&req);
    req.loss = "tf.compat.v1.losses.sparse_softmax_cross_entropy";
    req.labels = &tb;
    req.logits = &logits;
    assert_int_equal(ml_eval(&req, &res, &err), ML_ELABEL);
    assert_int_equal(err.index, 2);
    assert_non_null(strstr(err.message, "16777217"));
}

static void test_bad_dtype(void **state)
{
    (void)state;
    float x[2] = {0, 1};
    struct ml_tensor logits = {.rank = 1, .shape = {2}, .dtype = ML_FLOAT32, .data = x};
    struct ml_tensor labels = logits;
    labels.dtype = (enum ml_dtype)99;
    struct ml_request req;
    struct ml_result res;
    struct ml_error err;
    ml_request_init(&req);
    req.loss = "sigmoid_cross_entropy";
    req.labels = &labels;
    req.logits = &logits;
    assert_int_equal(ml_eval(&req, &res, &err), ML_ETENSOR);
    assert_string_equal(err.field, "labels");
    assert_int_equal(ml_dtype_size((enum ml_dtype)99), 0);
    assert_null(ml_dtype_name((enum ml_dtype)99));
    assert_int_equal(ml_dtype_size(ML_INT64), 8);
    assert_string_equal(ml_dtype_name(ML_BOOL), "bool");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_note_every_dtype),
        cmocka_unit_test(test_class_indices),
        cmocka_unit_test(test_bad_dtype),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
