/*
 * test_softmax.c -- the fused path of the softmax family (lib/src/softmax.c) gives the bits of
 * the general path, on every instruction set and however its chunks are run.
 *
 * A request with only reduced outputs takes the fused path; the same request asking for
 * per_sample too takes the general path (kernels.h + reduce.c), run pinned to baseline x86-64.
 * TF softmax_cross_entropy and sparse_softmax_cross_entropy, torch cross_entropy (class
 * indices and probability targets) and Keras CategoricalCrossentropy, float32 and float64,
 * class counts around the 16 lanes and the exp's pieces, the class axis last and not (stride
 * != 1), ties, rows of -inf and NaN (allow_non_finite), label smoothing, ignore_index, class
 * weights, per-sample and scalar weights, each reduction, and more samples than a chunk:
 * losses, totals and errors must be identical. The values themselves are checked against
 * numpy by test_golden and the accuracy suite.
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

static uint64_t rng = 777;

static double uniform(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) * 0x1p-53;
}

enum { TF_SOFTMAX, TF_SPARSE, TORCH_IDX, TORCH_PROB, KERAS, NLOSS };
static const char *const loss_names[NLOSS] = {
    "softmax_cross_entropy", "sparse_softmax_cross_entropy", "torch.nn.functional.cross_entropy",
    "torch.nn.functional.cross_entropy", "categorical_crossentropy"};
/* Two reductions besides the default of each (NULL): one dividing by the weights or a count,
 * one plain sum. */
static const char *const reductions[NLOSS][3] = {{NULL, "MEAN", "SUM"},
                                                 {NULL, "SUM_OVER_BATCH_SIZE", "SUM"},
                                                 {NULL, "sum", "mean"},
                                                 {NULL, "sum", "mean"},
                                                 {NULL, "sum", "sum_over_batch_size"}};

/* The inputs of one case: logits [rows, classes(, depth)], soft or one-hot labels of that
 * shape, class indices [rows(, depth)], a weight per sample, class weights. */
struct inputs {
    int64_t rows, classes, depth, n, samples;
    float *x, *z, *w, *cw;
    double *xd, *zd, *wd, *cwd;
    int64_t *idx;
};

enum variant { PLAIN, SMOOTH, TIES, DEPTH, SOFT, NONFINITE, NVARIANT };

static void make_inputs(struct inputs *in, int64_t rows, int64_t classes, enum variant v)
{
    memset(in, 0, sizeof(*in));
    in->rows = rows;
    in->classes = classes;
    in->depth = v == DEPTH ? 3 : 1;
    in->samples = rows * in->depth;
    in->n = in->samples * classes;
    in->x = malloc((size_t)in->n * sizeof(float));
    in->z = malloc((size_t)in->n * sizeof(float));
    in->w = malloc((size_t)in->samples * sizeof(float));
    in->cw = malloc((size_t)classes * sizeof(float));
    in->xd = malloc((size_t)in->n * sizeof(double));
    in->zd = malloc((size_t)in->n * sizeof(double));
    in->wd = malloc((size_t)in->samples * sizeof(double));
    in->cwd = malloc((size_t)classes * sizeof(double));
    in->idx = malloc((size_t)in->samples * sizeof(int64_t));
    assert_true(in->x && in->z && in->w && in->cw && in->xd && in->zd && in->wd && in->cwd &&
                in->idx);
    for (int64_t i = 0; i < in->n; i++) {
        double u = (uniform() - 0.5) * 30;
        in->x[i] = (float)(v == TIES ? floor(u / 8) * 8 : u); /* several maxima per row */
        in->z[i] = v == SOFT ? (float)uniform() : uniform() < 0.3 ? 1.0f : 0.0f;
    }
    for (int64_t i = 0; i < in->samples; i++) {
        in->w[i] = uniform() < 0.3 ? 0.0f : (float)(uniform() * 2);
        in->idx[i] = (int64_t)(uniform() * (double)classes);
    }
    for (int64_t c = 0; c < classes; c++)
        in->cw[c] = 0.25f + (float)(c % 5) * 0.5f;
    if (v == NONFINITE && rows >= 8) {
        int64_t C = classes;
        in->x[0 * C + C - 1] = -INFINITY; /* a -inf beside the target */
        in->idx[0] = 0;
        in->x[1 * C] = NAN;
        for (int64_t c = 0; c < C; c++)
            in->x[2 * C + c] = -INFINITY; /* a row of -inf */
        in->x[3 * C + C / 2] = INFINITY;
        in->z[5 * C] = NAN;
    }
    for (int64_t i = 0; i < in->n; i++) {
        in->xd[i] = in->x[i];
        in->zd[i] = in->z[i];
    }
    for (int64_t i = 0; i < in->samples; i++)
        in->wd[i] = in->w[i];
    for (int64_t c = 0; c < classes; c++)
        in->cwd[c] = in->cw[c];
}

static void free_inputs(struct inputs *in)
{
    free(in->x);
    free(in->z);
    free(in->w);
    free(in->cw);
    free(in->xd);
    free(in->zd);
    free(in->wd);
    free(in->cwd);
    free(in->idx);
}

/* The tensors and parameters of one request. */
struct req_case {
    struct ml_tensor x, z, w;
    struct ml_param params[3];
    struct ml_request req;
};

/* wk: 0 no weights, 1 a weight per sample (class weights for torch), 2 a scalar weight. */
static void make_request(struct req_case *rc, const struct inputs *in, int loss, int dt,
                         enum variant v, int wk, const char *reduction)
{
    enum ml_dtype dtype = dt ? ML_FLOAT64 : ML_FLOAT32;
    memset(rc, 0, sizeof(*rc));
    rc->x = (struct ml_tensor){2, {in->rows, in->classes}, dtype, dt ? (void *)in->xd : in->x};
    if (in->depth > 1) {
        rc->x.rank = 3;
        rc->x.shape[2] = in->depth;
    }
    rc->z = rc->x;
    rc->z.data = dt ? (void *)in->zd : in->z;
    if (loss == TF_SPARSE || loss == TORCH_IDX) {
        rc->z = (struct ml_tensor){1, {in->rows}, ML_INT64, in->idx};
        if (in->depth > 1) {
            rc->z.rank = 2;
            rc->z.shape[1] = in->depth;
        }
    }
    rc->w = (struct ml_tensor){1, {in->rows}, dtype, dt ? (void *)in->wd : in->w};
    if (in->depth > 1) {
        rc->w.rank = 2;
        rc->w.shape[1] = in->depth;
    }
    if (wk == 2)
        rc->w.rank = 0;
    if (loss == TORCH_IDX || loss == TORCH_PROB)
        rc->w = (struct ml_tensor){1, {in->classes}, dtype, dt ? (void *)in->cwd : in->cw};
    int np = 0;
    if (v == SMOOTH)
        rc->params[np++] =
            (struct ml_param){.name = "label_smoothing", .kind = ML_PARAM_NUMBER, .number = 0.1};
    if (loss == KERAS)
        rc->params[np++] =
            (struct ml_param){.name = "from_logits", .kind = ML_PARAM_BOOL, .boolean = 1};
    if (loss == KERAS && v == DEPTH)
        rc->params[np++] = (struct ml_param){.name = "axis", .kind = ML_PARAM_NUMBER, .number = 1};
    if (loss == TORCH_IDX && v == SOFT)
        rc->params[np++] =
            (struct ml_param){.name = "ignore_index", .kind = ML_PARAM_NUMBER, .number = 2};
    ml_request_init(&rc->req);
    rc->req.loss = loss_names[loss];
    rc->req.dtype = dtype;
    rc->req.labels = &rc->z;
    rc->req.logits = &rc->x;
    rc->req.params = np ? rc->params : NULL;
    rc->req.num_params = (size_t)np;
    rc->req.reduction = reduction;
    rc->req.weights = wk ? &rc->w : NULL;
    rc->req.allow_non_finite = v == NONFINITE;
}

/* The same bits, or both NaN: a NaN's sign and payload depend on which of two NaN operands
 * an instruction keeps, which the compiler may order either way (nothing reports them). */
static void same_bits(double a, double b, const char *what, const char *ctx)
{
    if (isnan(a) ? !isnan(b) : memcmp(&a, &b, sizeof(a)) != 0)
        fail_msg("%s: %s fused %.17g != general %.17g", ctx, what, a, b);
}

static const unsigned scalars =
    ML_OUT_LOSS | ML_OUT_WEIGHTED_SUM | ML_OUT_SUM_WEIGHTS | ML_OUT_NUM_NONZERO_WEIGHTS;

/* parallel_for runners in other orders than the chunks': reversed, and the even ones before
 * the odd ones (as two threads might take them). ctx counts the calls. */
static void run_reversed(void *ctx, int64_t n, void (*fn)(void *, int64_t), void *arg)
{
    (*(int *)ctx)++;
    for (int64_t i = n - 1; i >= 0; i--)
        fn(arg, i);
}

static void run_interleaved(void *ctx, int64_t n, void (*fn)(void *, int64_t), void *arg)
{
    (*(int *)ctx)++;
    for (int64_t first = 0; first < 2; first++)
        for (int64_t i = first; i < n; i += 2)
            fn(arg, i);
}

/* One case: the general path on baseline, then the fused path on each instruction set (and
 * with the runners): the same result or the same error. Returns the fused runs checked. */
static int check_case(struct req_case *rc, const char *ctx, int runners, int *rc_out)
{
    static const char *const paths[] = {"avx512f", "avx2", "baseline"};
    struct ml_result general, fused;
    struct ml_error gerr, ferr;
    setenv("MASKLOSS_SIMD", "baseline", 1);
    rc->req.outputs = scalars | ML_OUT_PER_SAMPLE;
    int grc = ml_eval(&rc->req, &general, &gerr);
    if (!grc && general.path != ML_PATH_GENERAL)
        fail_msg("%s: per_sample took the fused path", ctx);
    int checked = 0, calls = 0;
    for (int p = 0; p < 3; p++) {
        setenv("MASKLOSS_SIMD", paths[p], 1);
        if (strcmp(ml_simd_path(), paths[p]))
            continue;
        for (int r = 0; r < (runners ? 3 : 1); r++) {
            rc->req.outputs = scalars;
            rc->req.parallel_for = r == 1 ? run_reversed : r == 2 ? run_interleaved : NULL;
            rc->req.parallel_ctx = &calls;
            int frc = ml_eval(&rc->req, &fused, &ferr);
            rc->req.parallel_for = NULL;
            if (frc != grc)
                fail_msg("%s on %s: fused rc %d (%s), general rc %d (%s)", ctx, paths[p], frc,
                         frc ? ferr.message : "", grc, grc ? gerr.message : "");
            if (grc) {
                if (ferr.index != gerr.index || strcmp(ferr.field, gerr.field))
                    fail_msg("%s on %s: fused error %s[%lld], general %s[%lld]", ctx, paths[p],
                             ferr.field, (long long)ferr.index, gerr.field, (long long)gerr.index);
                checked++;
                continue;
            }
            if (fused.path != ML_PATH_FUSED)
                fail_msg("%s on %s: not fused", ctx, paths[p]);
            same_bits(fused.loss, general.loss, "loss", ctx);
            same_bits(fused.weighted_sum, general.weighted_sum, "weighted_sum", ctx);
            same_bits(fused.sum_weights, general.sum_weights, "sum_weights", ctx);
            same_bits(fused.num_nonzero_weights, general.num_nonzero_weights, "nonzero", ctx);
            ml_result_free(&fused);
            checked++;
        }
    }
    if (runners && !grc)
        assert_true(calls > 0); /* the runners were used */
    unsetenv("MASKLOSS_SIMD");
    if (!grc)
        ml_result_free(&general);
    if (rc_out)
        *rc_out = grc;
    return checked;
}

static void test_fused_equals_general(void **state)
{
    (void)state;
    static const int64_t classes[] = {1, 2, 7, 15, 16, 17, 64, 100, 513, 1000, 1037};
    int checked = 0;
    for (size_t ci = 0; ci < sizeof(classes) / sizeof(classes[0]); ci++)
        for (int v = 0; v < NVARIANT; v++) {
            struct inputs in;
            make_inputs(&in, 23, classes[ci], (enum variant)v);
            for (int loss = 0; loss < NLOSS; loss++) {
                /* TF's losses take the class axis last; sparse TF and Keras take no soft
                 * variant of their own, TF sparse no smoothing. */
                if (v == DEPTH && (loss == TF_SOFTMAX || loss == TF_SPARSE))
                    continue;
                if (v == SMOOTH && loss == TF_SPARSE)
                    continue;
                for (int dt = 0; dt < 2; dt++)
                    for (int wk = 0; wk < 3; wk++)
                        for (int r = 0; r < 3; r++) {
                            if ((loss == TORCH_IDX || loss == TORCH_PROB) && wk == 2)
                                continue;
                            struct req_case rc;
                            char ctx[160];
                            make_request(&rc, &in, loss, dt, (enum variant)v, wk,
                                         reductions[loss][r]);
                            snprintf(ctx, sizeof(ctx), "%s%s C=%lld variant %d weights %d %s",
                                     loss_names[loss], loss == TORCH_PROB ? " (probs)" : "",
                                     (long long)classes[ci], v, wk, dt ? "float64" : "float32");
                            checked += check_case(&rc, ctx, 0, NULL);
                        }
            }
            free_inputs(&in);
        }
    printf("%d fused softmax requests == general\n", checked);
}

/* More samples than a chunk (65536), and rows long enough that each block of 1024 is a task
 * of its own: the blocks' sums folded in order, whatever order or threads ran them. */
static void test_chunks(void **state)
{
    (void)state;
    static const int64_t shapes[2][2] = {{3 * 65536 + 1001, 5}, {2100, 1000}};
    int checked = 0;
    for (int sh = 0; sh < 2; sh++) {
        struct inputs in;
        make_inputs(&in, shapes[sh][0], shapes[sh][1], PLAIN);
        for (int loss = 0; loss < NLOSS; loss++)
            for (int dt = 0; dt < 2; dt++) {
                struct req_case rc;
                make_request(&rc, &in, loss, dt, PLAIN, 1, NULL);
                checked += check_case(&rc, loss_names[loss], 1, NULL);
            }
        free_inputs(&in);
    }
    printf("%d fused softmax requests of 4 chunks or 3 tasks == general\n", checked);
}

/* Without allow_non_finite, a NaN or an infinity is the same error on both paths (the fused
 * one finds it at the end): in the logits beside a sparse target (its loss does not show
 * it), in an ignored row of torch, in the labels, the weights and the class weights; and a
 * class index out of range is reported after the inputs' NaN. */
static void test_non_finite(void **state)
{
    (void)state;
    static const float bad[] = {NAN, INFINITY, -INFINITY};
    int checked = 0;
    for (int b = 0; b < 3; b++)
        for (int where = 0; where < 6; where++)
            for (int loss = 0; loss < NLOSS; loss++)
                for (int dt = 0; dt < 2; dt++) {
                    struct inputs in;
                    make_inputs(&in, 40, 37, PLAIN);
                    int64_t C = in.classes;
                    struct req_case rc;
                    make_request(&rc, &in, loss, dt, PLAIN, 1, NULL);
                    float *f = NULL;
                    int64_t at = 0;
                    switch (where) {
                    case 0: /* beside the target of row 11 */
                        in.idx[11] = 3;
                        f = in.x;
                        at = 11 * C + 30;
                        break;
                    case 1: /* an ignored row of torch (ignore_index -100) */
                        in.idx[17] = -100;
                        f = in.x;
                        at = 17 * C + 5;
                        break;
                    case 2:
                        f = loss == TF_SPARSE || loss == TORCH_IDX ? NULL : in.z;
                        at = 25 * C + 36;
                        break;
                    case 3:
                        f = loss == TORCH_IDX || loss == TORCH_PROB ? in.cw : in.w;
                        at = loss == TORCH_IDX || loss == TORCH_PROB ? 20 : 33;
                        break;
                    case 4: /* a class index out of range after a NaN */
                        in.idx[30] = C + 4;
                        f = in.x;
                        at = 31 * C + 2;
                        break;
                    default: /* a class index out of range alone */
                        in.idx[30] = -7;
                        if (loss == TORCH_IDX)
                            in.idx[30] = C;
                        break;
                    }
                    if (where == 1 && loss != TORCH_IDX) {
                        free_inputs(&in);
                        continue;
                    }
                    if (f) {
                        f[at] = bad[b];
                        double *d = f == in.x   ? in.xd
                                    : f == in.z ? in.zd
                                    : f == in.w ? in.wd
                                                : in.cwd;
                        d[at] = bad[b];
                    }
                    char ctx[160];
                    snprintf(ctx, sizeof(ctx), "%s %g at %d %s", loss_names[loss], (double)bad[b],
                             where, dt ? "float64" : "float32");
                    int grc = 0;
                    checked += check_case(&rc, ctx, 0, &grc);
                    int sparse = loss == TF_SPARSE || loss == TORCH_IDX;
                    int expect = f ? ML_ENONFINITE : where == 5 && sparse ? ML_ELABEL : 0;
                    if (grc != expect)
                        fail_msg("%s: rc %d, expected %d", ctx, grc, expect);
                    free_inputs(&in);
                }
    printf("%d softmax requests with a non-finite input or a bad class: same answer\n", checked);
}

/*
 * The rows' vector code and their scalar tails give the same bits: a row of 15 classes is all
 * tail, the same row with a 16th class of -inf (exp 0, no tie) is one whole block of vectors,
 * with the same lanes. Their per-sample losses (sparse: the -inf is never a target) must be
 * identical, on every path, for logits whose exps span the normal floats, the subnormals and
 * 0, ties included.
 */
static void test_vector_equals_tail(void **state)
{
    (void)state;
    static const char *const paths[] = {"avx512f", "avx2", "baseline"};
    enum { ROWS = 4096 };
    float *x15 = malloc(ROWS * 15 * sizeof(float)), *x16 = malloc(ROWS * 16 * sizeof(float));
    double *d15 = malloc(ROWS * 15 * sizeof(double)), *d16 = malloc(ROWS * 16 * sizeof(double));
    int64_t *idx = malloc(ROWS * sizeof(int64_t));
    assert_true(x15 && x16 && d15 && d16 && idx);
    for (int r = 0; r < ROWS; r++) {
        double scale = r % 4 == 0 ? 1 : r % 4 == 1 ? 30 : r % 4 == 2 ? 120 : 800;
        for (int c = 0; c < 16; c++) {
            double v = c == 15 ? -INFINITY : (uniform() - 0.5) * scale;
            if (r % 7 == 0 && c < 15)
                v = floor(v / 4) * 4; /* ties */
            x16[r * 16 + c] = (float)v;
            d16[r * 16 + c] = v;
            if (c < 15) {
                x15[r * 15 + c] = (float)v;
                d15[r * 15 + c] = v;
            }
        }
        idx[r] = (int64_t)(uniform() * 15);
    }
    int checked = 0;
    for (int dt = 0; dt < 2; dt++)
        for (int p = 0; p < 3; p++) {
            setenv("MASKLOSS_SIMD", paths[p], 1);
            if (strcmp(ml_simd_path(), paths[p]))
                continue;
            enum ml_dtype dtype = dt ? ML_FLOAT64 : ML_FLOAT32;
            struct ml_tensor t15 = {2, {ROWS, 15}, dtype, dt ? (void *)d15 : x15};
            struct ml_tensor t16 = {2, {ROWS, 16}, dtype, dt ? (void *)d16 : x16};
            struct ml_tensor labels = {1, {ROWS}, ML_INT64, idx};
            struct ml_result a, b;
            struct ml_request req;
            ml_request_init(&req);
            req.loss = "sparse_softmax_cross_entropy";
            req.dtype = dtype;
            req.labels = &labels;
            req.allow_non_finite = 1;
            req.outputs = ML_OUT_LOSS | ML_OUT_PER_SAMPLE;
            req.logits = &t15;
            assert_int_equal(ml_eval(&req, &a, NULL), 0);
            req.logits = &t16;
            assert_int_equal(ml_eval(&req, &b, NULL), 0);
            for (int r = 0; r < ROWS; r++)
                if (memcmp(&a.per_sample.data[r], &b.per_sample.data[r], sizeof(double)))
                    fail_msg("%s %s row %d: 15 classes %a, with a 16th of -inf %a",
                             dt ? "float64" : "float32", paths[p], r, a.per_sample.data[r],
                             b.per_sample.data[r]);
            ml_result_free(&a);
            ml_result_free(&b);
            checked++;
        }
    unsetenv("MASKLOSS_SIMD");
    free(x15);
    free(x16);
    free(d15);
    free(d16);
    free(idx);
    printf("%d paths: the rows' vectors == their scalar tails\n", checked);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fused_equals_general),
        cmocka_unit_test(test_chunks),
        cmocka_unit_test(test_non_finite),
        cmocka_unit_test(test_vector_equals_tail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
