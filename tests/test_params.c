/*
 * test_params.c -- loss parameters given as rank-0 tensors of every dtype.
 *
 * A numeric parameter may come as a number or as a rank-0 tensor of any dtype (float32,
 * float64, uint8, bool, int32, int64), and a tensor parameter (pos_weight) as a rank-0 tensor
 * too. Whatever the spelling, the value is the same number and the result the same bits: the
 * expected result of each case is the same request with the plain number, on the fused path
 * (reduced outputs only) and on the general path (per_element asked for). Each scalar lives
 * in a heap block of exactly its dtype's size, so that reading it as a wider type is an
 * AddressSanitizer error (and, without the sanitizer, a wrong value).
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

#include "maskloss.h"

#define ROWS 3
#define COLS 4
#define N (ROWS * COLS)

static const double labels_f64[N] = {1, 0, 0, 1, 0, 1, 1, 0, 1, 1, 0, 0};
static const double logits_f64[N] = {0.5,  -1.25, 2.0, -0.75, 3.5,  0.125,
                                     -2.5, 1.0,   0.0, 4.0,   -3.0, 0.25};
static float labels_f32[N], logits_f32[N];

static const enum ml_dtype all_dtypes[] = {ML_FLOAT32, ML_FLOAT64, ML_UINT8,
                                           ML_BOOL,    ML_INT32,   ML_INT64};

/* A rank-0 tensor of dtype holding v, in a heap block of exactly one element. */
static struct ml_tensor scalar_tensor(enum ml_dtype dtype, double v)
{
    struct ml_tensor t;
    memset(&t, 0, sizeof(t));
    t.rank = 0;
    t.dtype = dtype;
    void *p = malloc(ml_dtype_size(dtype));
    assert_non_null(p);
    switch (dtype) {
    case ML_FLOAT32:
        *(float *)p = (float)v;
        break;
    case ML_FLOAT64:
        *(double *)p = v;
        break;
    case ML_UINT8:
    case ML_BOOL:
        *(uint8_t *)p = (uint8_t)v;
        break;
    case ML_INT32:
        *(int32_t *)p = (int32_t)v;
        break;
    case ML_INT64:
        *(int64_t *)p = (int64_t)v;
        break;
    }
    t.data = p;
    return t;
}

/* The request's inputs in the compute dtype. */
static void inputs(enum ml_dtype dtype, struct ml_tensor *z, struct ml_tensor *x)
{
    memset(z, 0, sizeof(*z));
    z->rank = 2;
    z->shape[0] = ROWS;
    z->shape[1] = COLS;
    z->dtype = dtype;
    *x = *z;
    z->data = dtype == ML_FLOAT32 ? (const void *)labels_f32 : (const void *)labels_f64;
    x->data = dtype == ML_FLOAT32 ? (const void *)logits_f32 : (const void *)logits_f64;
}

struct run {
    const char *loss, *reduction;
    enum ml_dtype dtype;
    unsigned outputs;
};

/* Evaluates r with the given parameters; fails the test unless it succeeds. */
static void eval_ok(const struct run *r, const struct ml_param *params, size_t num_params,
                    struct ml_result *res, const char *ctx)
{
    struct ml_tensor z, x;
    inputs(r->dtype, &z, &x);
    struct ml_request req;
    ml_request_init(&req);
    req.loss = r->loss;
    req.reduction = r->reduction;
    req.dtype = r->dtype;
    req.labels = &z;
    req.logits = &x;
    req.params = params;
    req.num_params = num_params;
    req.outputs = r->outputs;
    struct ml_error err;
    int rc = ml_eval(&req, res, &err);
    if (rc)
        fail_msg("%s: %s (%s: %s)", ctx, ml_status_name(rc), err.field, err.message);
}

static int same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof(a)) == 0;
}

/* got and want are the same bits in every output both computed. */
static void assert_same_result(const struct ml_result *got, const struct ml_result *want,
                               const char *ctx)
{
    if (!same_bits(got->loss, want->loss))
        fail_msg("%s: loss %.17g, expected %.17g", ctx, got->loss, want->loss);
    assert_int_equal(got->path, want->path);
    assert_int_equal(got->per_element.numel, want->per_element.numel);
    for (int64_t i = 0; i < want->per_element.numel; i++)
        if (!same_bits(got->per_element.data[i], want->per_element.data[i]))
            fail_msg("%s: per_element[%lld] %.17g, expected %.17g", ctx, (long long)i,
                     got->per_element.data[i], want->per_element.data[i]);
}

/*
 * name given as a rank-0 tensor of every dtype, value v (1 for bool), against the plain
 * number, in float32 and float64, on both paths. `fused` says whether the reduced request
 * takes the fused path (the test then also checks that it did).
 */
static void check_scalar_param(const char *loss, const char *reduction, const char *name, double v,
                               enum ml_param_kind number_kind, int fused)
{
    for (int p = 0; p < 2; p++) {
        for (int general = 0; general < 2; general++) {
            struct run r = {loss, reduction, p ? ML_FLOAT64 : ML_FLOAT32,
                            ML_OUT_LOSS | (general ? ML_OUT_PER_ELEMENT : 0)};
            for (size_t d = 0; d < sizeof(all_dtypes) / sizeof(all_dtypes[0]); d++) {
                enum ml_dtype dt = all_dtypes[d];
                double value = dt == ML_BOOL ? 1.0 : v;
                struct ml_param plain, tensor;
                memset(&plain, 0, sizeof(plain));
                plain.name = name;
                plain.kind = number_kind;
                plain.number = value;
                memset(&tensor, 0, sizeof(tensor));
                tensor.name = name;
                tensor.kind = ML_PARAM_TENSOR;
                tensor.tensor = scalar_tensor(dt, value);
                char ctx[160];
                snprintf(ctx, sizeof(ctx), "%s %s=%s %g, %s, %s path", loss, name,
                         ml_dtype_name(dt), value, p ? "float64" : "float32",
                         general ? "general" : "fused");
                struct ml_result want, got;
                eval_ok(&r, &plain, 1, &want, ctx);
                eval_ok(&r, &tensor, 1, &got, ctx);
                if (general)
                    assert_int_equal(want.path, ML_PATH_GENERAL);
                else if (fused)
                    assert_int_equal(want.path, ML_PATH_FUSED);
                assert_same_result(&got, &want, ctx);
                ml_result_free(&want);
                ml_result_free(&got);
                free((void *)tensor.tensor.data);
            }
        }
    }
}

/* The request: torchvision's focal loss with gamma an int32 2. */
static void test_focal_gamma_every_dtype(void **state)
{
    (void)state;
    check_scalar_param("sigmoid_focal_loss", "mean", "gamma", 2, ML_PARAM_NUMBER, 1);
    check_scalar_param("sigmoid_focal_loss", "sum", "gamma", 1, ML_PARAM_NUMBER, 1);
    /* gamma 3 and reduction none run the general path only. */
    check_scalar_param("sigmoid_focal_loss", "mean", "gamma", 3, ML_PARAM_NUMBER, 0);
    check_scalar_param("sigmoid_focal_loss", NULL, "gamma", 2, ML_PARAM_NUMBER, 0);
    check_scalar_param("sigmoid_focal_loss", "mean", "alpha", 1, ML_PARAM_NUMBER, 1);
}

/* The value of a rank-0 int32 gamma is the number, not its bytes read as something wider:
 * gamma 0 makes the focal loss alpha_t * BCE, so the answer differs from gamma 2's. */
static void test_focal_gamma_value(void **state)
{
    (void)state;
    struct run r = {"sigmoid_focal_loss", "sum", ML_FLOAT64, ML_OUT_LOSS | ML_OUT_PER_ELEMENT};
    struct ml_param g;
    memset(&g, 0, sizeof(g));
    g.name = "gamma";
    g.kind = ML_PARAM_TENSOR;
    g.tensor = scalar_tensor(ML_INT32, 0);
    struct ml_result res;
    eval_ok(&r, &g, 1, &res, "gamma int32 0");
    /* torchvision: ce = BCE-with-logits; p_t = p*z + (1-p)*(1-z); loss = alpha_t * ce *
     * (1-p_t)^0, alpha_t = 0.25*z + 0.75*(1-z). Long double, by hand. */
    long double want = 0;
    for (int i = 0; i < N; i++) {
        long double x = logits_f64[i], z = labels_f64[i];
        long double ce = fmaxl(x, 0) - x * z + log1pl(expl(-fabsl(x)));
        want += (0.25L * z + 0.75L * (1 - z)) * ce;
    }
    if (!(fabsl((long double)res.loss - want) <= 1e-14L * fabsl(want)))
        fail_msg("gamma int32 0: loss %.17g, expected %.17Lg", res.loss, want);
    ml_result_free(&res);
    free((void *)g.tensor.data);
}

/* Other losses' numeric parameters, on both paths where they have two. */
static void test_other_losses_every_dtype(void **state)
{
    (void)state;
    check_scalar_param("ASL.AsymmetricLoss", NULL, "gamma_neg", 3, ML_PARAM_NUMBER, 1);
    check_scalar_param("ASL.AsymmetricLoss", NULL, "gamma_pos", 2, ML_PARAM_NUMBER, 1);
    check_scalar_param("sigmoid_cross_entropy", "SUM", "label_smoothing", 0, ML_PARAM_NUMBER, 1);
    check_scalar_param("keras3.losses.BinaryFocalCrossentropy", "sum", "gamma", 2, ML_PARAM_NUMBER,
                       0);
    check_scalar_param("keras3.losses.BinaryCrossentropy", "sum", "axis", 1, ML_PARAM_NUMBER, 0);
}

/* pos_weight (a tensor parameter) as a rank-0 tensor of every dtype. */
static void test_pos_weight_every_dtype(void **state)
{
    (void)state;
    check_scalar_param("binary_cross_entropy_with_logits", "mean", "pos_weight", 3, ML_PARAM_NUMBER,
                       1);
    check_scalar_param("binary_cross_entropy_with_logits", "none", "pos_weight", 2, ML_PARAM_NUMBER,
                       0);
    check_scalar_param("tf.nn.weighted_cross_entropy_with_logits", "SUM", "pos_weight", 5,
                       ML_PARAM_NUMBER, 1);
}

/* pos_weight 1e300 is finite as a number but infinite in float32: refused as a non-finite
 * input whichever outputs are asked (the fused path used to answer NaN, the general path
 * refused it), given as a number or as a rank-0 float64 tensor; accepted with
 * allow_non_finite, with the same answer on both paths. */
static void test_pos_weight_overflows_float32(void **state)
{
    (void)state;
    double big = 1e300;
    for (int as_tensor = 0; as_tensor < 2; as_tensor++) {
        struct ml_param p;
        memset(&p, 0, sizeof(p));
        p.name = "pos_weight";
        if (as_tensor) {
            p.kind = ML_PARAM_TENSOR;
            p.tensor.dtype = ML_FLOAT64;
            p.tensor.data = &big;
        } else {
            p.kind = ML_PARAM_NUMBER;
            p.number = big;
        }
        double answers[2];
        for (int general = 0; general < 2; general++) {
            struct ml_tensor z, x;
            inputs(ML_FLOAT32, &z, &x);
            struct ml_request req;
            ml_request_init(&req);
            req.loss = "binary_cross_entropy_with_logits";
            req.labels = &z;
            req.logits = &x;
            req.params = &p;
            req.num_params = 1;
            req.outputs = ML_OUT_LOSS | (general ? ML_OUT_PER_ELEMENT : 0);
            struct ml_result res;
            struct ml_error err;
            int rc = ml_eval(&req, &res, &err);
            if (rc != ML_ENONFINITE)
                fail_msg("pos_weight 1e300 (%s), %s path: %s, loss %g",
                         as_tensor ? "tensor" : "number", general ? "general" : "fused",
                         ml_status_name(rc), rc ? 0.0 : res.loss);
            assert_string_equal(err.field, "params.pos_weight");
            assert_non_null(strstr(err.message, "float32"));
            req.allow_non_finite = 1;
            assert_int_equal(ml_eval(&req, &res, &err), 0);
            answers[general] = res.loss;
            ml_result_free(&res);
        }
        assert_true(same_bits(answers[0], answers[1]) || (isnan(answers[0]) && isnan(answers[1])));
    }
}

/* Runs the focal loss with one parameter and expects code, with field "params.<name>". */
static void expect_param_error(const struct ml_param *p, int code, const char *ctx)
{
    struct run r = {"sigmoid_focal_loss", "mean", ML_FLOAT32, ML_OUT_LOSS};
    struct ml_tensor z, x;
    inputs(r.dtype, &z, &x);
    struct ml_request req;
    ml_request_init(&req);
    req.loss = r.loss;
    req.reduction = r.reduction;
    req.labels = &z;
    req.logits = &x;
    req.params = p;
    req.num_params = 1;
    struct ml_result res;
    struct ml_error err;
    int rc = ml_eval(&req, &res, &err);
    if (rc != code)
        fail_msg("%s: status %s, expected %s (%s)", ctx, ml_status_name(rc), ml_status_name(code),
                 rc ? err.message : "");
    char field[64];
    snprintf(field, sizeof(field), "params.%s", p->name);
    assert_string_equal(err.field, field);
    assert_true(strstr(err.message, p->name) != NULL);
}

static void test_scalar_param_errors(void **state)
{
    (void)state;
    int32_t two[1] = {2};
    struct ml_param p;
    memset(&p, 0, sizeof(p));
    p.name = "gamma";
    p.kind = ML_PARAM_TENSOR;
    p.tensor.dtype = ML_INT32;
    p.tensor.data = two;
    /* A number given as a tensor of rank > 0, even of one element. */
    p.tensor.rank = 1;
    p.tensor.shape[0] = 1;
    expect_param_error(&p, ML_EPARAM, "gamma of shape [1]");
    p.tensor.rank = 2;
    p.tensor.shape[0] = 1;
    p.tensor.shape[1] = 1;
    expect_param_error(&p, ML_EPARAM, "gamma of shape [1, 1]");
    /* A rank-0 tensor without data, or of no known dtype. */
    p.tensor.rank = 0;
    p.tensor.data = NULL;
    expect_param_error(&p, ML_EPARAM, "gamma without data");
    p.tensor.data = two;
    p.tensor.dtype = (enum ml_dtype)99;
    expect_param_error(&p, ML_EPARAM, "gamma of dtype 99");
    /* Non-finite numbers stay refused whatever the spelling. */
    double nan = NAN;
    p.tensor.dtype = ML_FLOAT64;
    p.tensor.data = &nan;
    expect_param_error(&p, ML_EPARAM, "gamma NaN");
}

int main(void)
{
    for (int i = 0; i < N; i++) {
        labels_f32[i] = (float)labels_f64[i];
        logits_f32[i] = (float)logits_f64[i];
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_focal_gamma_every_dtype),
        cmocka_unit_test(test_focal_gamma_value),
        cmocka_unit_test(test_other_losses_every_dtype),
        cmocka_unit_test(test_pos_weight_every_dtype),
        cmocka_unit_test(test_pos_weight_overflows_float32),
        cmocka_unit_test(test_scalar_param_errors),
    };
    return cmocka_run_group_tests_name("params", tests, NULL, NULL);
}
