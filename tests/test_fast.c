/*
 * test_fast.c -- the fused SIMD kernels (fast.c) give the bits of the general path, on every
 * instruction set.
 *
 * A request with only reduced outputs takes the fused path; the same request asking for
 * per_element too takes the general path (kernels.h + reduce.c). The general path runs
 * pinned to baseline x86-64 (MASKLOSS_SIMD=baseline), the fused one on each path the
 * machine has (AVX-512, AVX2 + FMA, baseline): their losses and totals must be identical bit
 * for bit, for every weight layout, sizes around the 16-lane, 1024-element block and
 * 65536-element chunk edges, the parameters that change the formulas, and each fused loss.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "maskloss.h"

static uint64_t rng = 12345;

static double uniform(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) * 0x1p-53;
}

/* n labels (1 with probability pos), logits uniform in +-scale/2, weights 0 with
 * probability zero else uniform in [0, wmax) (wmax 0: all 1). The caller frees. */
static void random_inputs(int64_t n, double pos, double scale, double zero, double wmax, float **z,
                          float **x, float **w)
{
    *z = malloc((size_t)n * sizeof(float));
    *x = malloc((size_t)n * sizeof(float));
    *w = malloc((size_t)n * sizeof(float));
    assert_non_null(*z);
    assert_non_null(*x);
    assert_non_null(*w);
    for (int64_t i = 0; i < n; i++) {
        (*z)[i] = uniform() < pos ? 1.0f : 0.0f;
        (*x)[i] = (float)((uniform() - 0.5) * scale);
        (*w)[i] = uniform() < zero ? 0.0f : wmax ? (float)(uniform() * wmax) : 1.0f;
    }
}

static void same_bits(double a, double b, const char *what, const char *ctx)
{
    if (memcmp(&a, &b, sizeof(a)))
        fail_msg("%s: %s fused %.17g != general %.17g", ctx, what, a, b);
}

static void test_fused_equals_general(void **state)
{
    (void)state;
    /* Losses 5 on take predictions (log_loss: probabilities, the others any number). */
    enum { NLOSS = 10, FIRST_PRED = 5, LOG_LOSS = 9 };
    static const char *const losses[NLOSS] = {"sigmoid_cross_entropy",
                                              "tf.nn.sigmoid_cross_entropy_with_logits",
                                              "binary_cross_entropy_with_logits",
                                              "sigmoid_focal_loss",
                                              "asymmetric_loss",
                                              "mean_squared_error",
                                              "absolute_difference",
                                              "huber_loss",
                                              "hinge_loss",
                                              "log_loss"};
    static const char *const tf_reds[3] = {"SUM_BY_NONZERO_WEIGHTS", "SUM", "SUM_OVER_BATCH_SIZE"};
    static const char *const reds[5][3] = {
        {"SUM_BY_NONZERO_WEIGHTS", "SUM", "SUM_OVER_BATCH_SIZE"},
        {"SUM_BY_NONZERO_WEIGHTS", "MEAN", "SUM"},
        {"mean", "sum", "mean"},
        {"mean", "sum", "mean"},
        {"sum", "mean", "sum"},
    };
    /* Parameter variants after the defaults: TF label smoothing; focal gamma 1 without
     * alpha, and gamma 0; ASL without clip, without focusing, with a gamma that is not
     * a small integer (powf on the fused path too), and with other small integer gammas. */
    static const struct ml_param smoothing[] = {
        {.name = "label_smoothing", .kind = ML_PARAM_NUMBER, .number = 0.15}};
    static const struct ml_param focal1[] = {
        {.name = "gamma", .kind = ML_PARAM_NUMBER, .number = 1},
        {.name = "alpha", .kind = ML_PARAM_NUMBER, .number = -1}};
    static const struct ml_param focal0[] = {
        {.name = "gamma", .kind = ML_PARAM_NUMBER, .number = 0}};
    /* torchvision applies an alpha above 1 as written. */
    static const struct ml_param focal_alpha2[] = {
        {.name = "alpha", .kind = ML_PARAM_NUMBER, .number = 2}};
    static const struct ml_param asl_noclip[] = {
        {.name = "clip", .kind = ML_PARAM_NUMBER, .number = 0}};
    static const struct ml_param asl_nofocus[] = {
        {.name = "gamma_neg", .kind = ML_PARAM_NUMBER, .number = 0},
        {.name = "gamma_pos", .kind = ML_PARAM_NUMBER, .number = 0}};
    static const struct ml_param asl_powf[] = {
        {.name = "gamma_neg", .kind = ML_PARAM_NUMBER, .number = 2.5}};
    /* Other small integer powers, each bit of ml__powi4_unit's floors on either side. */
    static const struct ml_param asl_pow32[] = {
        {.name = "gamma_neg", .kind = ML_PARAM_NUMBER, .number = 2},
        {.name = "gamma_pos", .kind = ML_PARAM_NUMBER, .number = 3}};
    static const struct ml_param asl_pow04[] = {
        {.name = "gamma_neg", .kind = ML_PARAM_NUMBER, .number = 0},
        {.name = "gamma_pos", .kind = ML_PARAM_NUMBER, .number = 4},
        {.name = "clip", .kind = ML_PARAM_NUMBER, .number = 0}};
    static const struct ml_param huber_delta[] = {
        {.name = "delta", .kind = ML_PARAM_NUMBER, .number = 2.5}};
    static const struct ml_param log_eps[] = {
        {.name = "epsilon", .kind = ML_PARAM_NUMBER, .number = 1e-3}};
    static const struct {
        const struct ml_param *p;
        size_t n;
    } variants[NLOSS][6] = {{{NULL, 0}, {smoothing, 1}},
                            {{NULL, 0}},
                            {{NULL, 0}},
                            {{NULL, 0}, {focal1, 2}, {focal0, 1}, {focal_alpha2, 1}},
                            {{NULL, 0},
                             {asl_noclip, 1},
                             {asl_nofocus, 2},
                             {asl_powf, 1},
                             {asl_pow32, 2},
                             {asl_pow04, 3}},
                            {{NULL, 0}},
                            {{NULL, 0}},
                            {{NULL, 0}, {huber_delta, 1}},
                            {{NULL, 0}},
                            {{NULL, 0}, {log_eps, 1}}};
    static const int nvariants[NLOSS] = {2, 1, 1, 4, 6, 1, 1, 2, 1, 2};
    /* Sizes around the 8 lanes, the 1024-element blocks and the 65536-element chunks. */
    static const int64_t shapes[][2] = {{1, 1},   {3, 5},     {1, 7},      {8, 1},
                                        {4, 9},   {13, 79},   {1, 1031},   {33, 64},
                                        {300, 7}, {3, 70001}, {1, 131072}, {2049, 64}};
    static const char *const wnames[] = {"none", "scalar", "dense", "row", "col"};
    /* The paths this machine runs: MASKLOSS_SIMD pins narrower ones than the widest. */
    static const char *const paths[] = {"avx512f", "avx2", "baseline"};
    int npaths = 0;
    const char *run[3];
    for (int p = 0; p < 3; p++) {
        setenv("MASKLOSS_SIMD", paths[p], 1);
        if (!strcmp(ml_simd_path(), paths[p]))
            run[npaths++] = paths[p];
    }
    unsetenv("MASKLOSS_SIMD");
    printf("fused paths:");
    for (int p = 0; p < npaths; p++)
        printf(" %s", run[p]);
    printf(" (widest: %s)\n", ml_simd_path());
    int checked = 0;
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        int64_t rows = shapes[s][0], cols = shapes[s][1], n = rows * cols;
        float *z, *x, *w;
        random_inputs(n, 0.4, 30, 0.3, 2, &z, &x, &w);
        float *prob = malloc((size_t)n * sizeof(float));
        assert_non_null(prob);
        for (int64_t i = 0; i < n; i++)
            prob[i] = (float)uniform();
        /* The same values in double, for the float64 kernels. */
        double *zd = malloc((size_t)n * sizeof(double)), *xd = malloc((size_t)n * sizeof(double));
        double *wd = malloc((size_t)n * sizeof(double)), *pd = malloc((size_t)n * sizeof(double));
        assert_true(zd && xd && wd && pd);
        for (int64_t i = 0; i < n; i++) {
            zd[i] = z[i];
            xd[i] = x[i] * (1 + 0x1p-30); /* bits beyond a float's */
            wd[i] = w[i];
            pd[i] = prob[i];
        }
        for (int dt = 0; dt < 2; dt++)
            for (size_t l = 0; l < NLOSS; l++) {
                /* Past one 65536-element chunk, one reduction: what the chunks change is how
                 * the sums are split and added, which every reduction shares (the smaller
                 * shapes check each reduction's own arithmetic), and the general path's
                 * per-element answer made these shapes 90 % of the suite's time. */
                for (int r = 0; r < (n > 65536 ? 1 : 3); r++) {
                    for (int wm = 0; wm < 5; wm++) {
                        for (int v = 0; v < nvariants[l]; v++) {
                            enum ml_dtype dtype = dt ? ML_FLOAT64 : ML_FLOAT32;
                            struct ml_tensor tz = {2, {rows, cols}, dtype, dt ? (void *)zd : z};
                            struct ml_tensor tx = {2,
                                                   {rows, cols},
                                                   dtype,
                                                   l == LOG_LOSS ? (dt ? (void *)pd : prob)
                                                                 : (dt ? (void *)xd : x)};
                            struct ml_tensor tw = {2, {rows, cols}, dtype, dt ? (void *)wd : w};
                            if (wm == 1)
                                tw.rank = 0;
                            else if (wm == 3)
                                tw.shape[1] = 1;
                            else if (wm == 4)
                                tw.shape[0] = 1;
                            struct ml_request req;
                            ml_request_init(&req);
                            req.loss = losses[l];
                            req.dtype = dtype;
                            req.reduction = l < FIRST_PRED ? reds[l][r] : tf_reds[r];
                            req.labels = &tz;
                            if (l < FIRST_PRED || l == 8) /* hinge_loss takes logits */
                                req.logits = &tx;
                            else
                                req.predictions = &tx;
                            req.weights = wm ? &tw : NULL;
                            req.params = variants[l][v].p;
                            req.num_params = variants[l][v].n;
                            struct ml_result fused, general;
                            char ctx[200];
                            req.outputs = ML_OUT_LOSS | ML_OUT_WEIGHTED_SUM | ML_OUT_SUM_WEIGHTS |
                                          ML_OUT_NUM_NONZERO_WEIGHTS | ML_OUT_PER_ELEMENT;
                            setenv("MASKLOSS_SIMD", "baseline", 1);
                            int rc2 = ml_eval(&req, &general, NULL);
                            req.outputs &= ~(unsigned)ML_OUT_PER_ELEMENT;
                            for (int p = 0; p < npaths; p++) {
                                setenv("MASKLOSS_SIMD", run[p], 1);
                                int rc1 = ml_eval(&req, &fused, NULL);
                                snprintf(ctx, sizeof(ctx), "%s %s %s [%lld,%lld] weights %s%s (%s)",
                                         dt ? "float64" : "float32", losses[l], req.reduction,
                                         (long long)rows, (long long)cols, wnames[wm],
                                         v ? " with parameters" : "", run[p]);
                                if (rc1 || rc2)
                                    fail_msg("%s: rc %d / %d", ctx, rc1, rc2);
                                /* Each fused candidate took the fused path, on the path asked
                                 * for; per_element sends it to the general path. */
                                if (fused.path != ML_PATH_FUSED || strcmp(fused.simd, run[p]) ||
                                    general.path != ML_PATH_GENERAL ||
                                    strcmp(general.simd, "baseline"))
                                    fail_msg("%s: ran %s on %s and %s on %s", ctx,
                                             fused.path == ML_PATH_FUSED ? "fused" : "general",
                                             fused.simd,
                                             general.path == ML_PATH_FUSED ? "fused" : "general",
                                             general.simd);
                                same_bits(fused.loss, general.loss, "loss", ctx);
                                same_bits(fused.weighted_sum, general.weighted_sum, "weighted_sum",
                                          ctx);
                                same_bits(fused.sum_weights, general.sum_weights, "sum_weights",
                                          ctx);
                                same_bits(fused.num_nonzero_weights, general.num_nonzero_weights,
                                          "num_nonzero_weights", ctx);
                                ml_result_free(&fused);
                                checked++;
                            }
                            unsetenv("MASKLOSS_SIMD");
                            ml_result_free(&general);
                        }
                    }
                }
            }
        free(z);
        free(x);
        free(w);
        free(prob);
        free(zd);
        free(xd);
        free(wd);
        free(pd);
    }
    printf("%d requests: fused == general (baseline), bit for bit\n", checked);
}

/* ASL beyond binary labels: soft labels (and a NaN-free mix of 0, 1 and fractions) go through
 * the fused kernel's per-element fixup, an epsilon of 0 through its general loop; each on
 * every path, equal bit for bit to the general path on baseline. */
static void test_asl_soft_labels(void **state)
{
    (void)state;
    int64_t rows = 37, cols = 101, n = rows * cols;
    float *z, *x, *w;
    random_inputs(n, 0.4, 30, 0.3, 2, &z, &x, &w);
    for (int64_t i = 0; i < n; i += 7)
        z[i] = (float)uniform(); /* every 7th label soft */
    struct ml_tensor tz = {2, {rows, cols}, ML_FLOAT32, z};
    struct ml_tensor tx = {2, {rows, cols}, ML_FLOAT32, x};
    struct ml_tensor tw = {2, {rows, cols}, ML_FLOAT32, w};
    static const struct ml_param eps0[] = {{.name = "eps", .kind = ML_PARAM_NUMBER, .number = 0}};
    static const struct ml_param gamma_soft[] = {
        {.name = "gamma_pos", .kind = ML_PARAM_NUMBER, .number = 0},
        {.name = "gamma_neg", .kind = ML_PARAM_NUMBER, .number = 2}};
    /* Without focusing, only the soft label itself sends an element to the fixup. */
    static const struct ml_param no_focus[] = {
        {.name = "gamma_pos", .kind = ML_PARAM_NUMBER, .number = 0},
        {.name = "gamma_neg", .kind = ML_PARAM_NUMBER, .number = 0}};
    const struct {
        const struct ml_param *p;
        size_t n;
    } variants[] = {{NULL, 0}, {eps0, 1}, {gamma_soft, 2}, {no_focus, 2}};
    static const char *const paths[] = {"avx512f", "avx2", "baseline"};
    int checked = 0;
    for (size_t v = 0; v < sizeof(variants) / sizeof(variants[0]); v++) {
        struct ml_request req;
        struct ml_result general, fused;
        ml_request_init(&req);
        req.loss = "asymmetric_loss";
        req.reduction = "sum";
        req.labels = &tz;
        req.logits = &tx;
        req.weights = &tw;
        req.params = variants[v].p;
        req.num_params = variants[v].n;
        req.outputs = ML_OUT_LOSS | ML_OUT_PER_ELEMENT;
        setenv("MASKLOSS_SIMD", "baseline", 1);
        assert_int_equal(ml_eval(&req, &general, NULL), 0);
        req.outputs = ML_OUT_LOSS;
        for (int p = 0; p < 3; p++) {
            setenv("MASKLOSS_SIMD", paths[p], 1);
            if (strcmp(ml_simd_path(), paths[p]))
                continue; /* not on this machine */
            assert_int_equal(ml_eval(&req, &fused, NULL), 0);
            same_bits(fused.loss, general.loss, "loss", paths[p]);
            ml_result_free(&fused);
            checked++;
        }
        ml_result_free(&general);
    }
    unsetenv("MASKLOSS_SIMD");
    printf("%d ASL requests with soft labels: fused == general\n", checked);
    free(z);
    free(x);
    free(w);
}

/* pos_weight (torch BCE, tf.nn.weighted_cross_entropy_with_logits) in the fused kernel: a
 * number, one per class ([C]), one per row ([N,1]) and dense ([N,C]), float32 and float64,
 * with a mask; every path equal to the general path on baseline, bit for bit. */
static void test_pos_weight(void **state)
{
    (void)state;
    static const int64_t shapes[][2] = {{3, 5}, {1, 1031}, {33, 64}, {2049, 64}};
    static const char *const losses[] = {"binary_cross_entropy_with_logits",
                                         "tf.nn.weighted_cross_entropy_with_logits"};
    static const char *const reds[] = {"mean", "SUM_BY_NONZERO_WEIGHTS"};
    static const char *const paths[] = {"avx512f", "avx2", "baseline"};
    int checked = 0;
    for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
        int64_t rows = shapes[si][0], cols = shapes[si][1], n = rows * cols;
        float *z, *x, *w;
        random_inputs(n, 0.4, 30, 0.3, 2, &z, &x, &w);
        float *pwf = malloc((size_t)n * sizeof(float));
        double *zd = malloc((size_t)n * sizeof(double)), *xd = malloc((size_t)n * sizeof(double));
        double *wd = malloc((size_t)n * sizeof(double)), *pwd = malloc((size_t)n * sizeof(double));
        assert_true(pwf && zd && xd && wd && pwd);
        for (int64_t i = 0; i < n; i++) {
            pwd[i] = pwf[i] = (float)(0.5 + 2.5 * uniform());
            zd[i] = z[i];
            xd[i] = x[i];
            wd[i] = w[i];
        }
        for (int dt = 0; dt < 2; dt++)
            for (size_t l = 0; l < 2; l++)
                for (int v = 0; v < 4; v++) {
                    enum ml_dtype dtype = dt ? ML_FLOAT64 : ML_FLOAT32;
                    struct ml_tensor tz = {2, {rows, cols}, dtype, dt ? (void *)zd : z};
                    struct ml_tensor tx = {2, {rows, cols}, dtype, dt ? (void *)xd : x};
                    struct ml_tensor tw = {2, {rows, cols}, dtype, dt ? (void *)wd : w};
                    /* v: 0 a number, 1 [C], 2 [N,1], 3 [N,C]. */
                    struct ml_param pw = {
                        .name = "pos_weight", .kind = ML_PARAM_NUMBER, .number = 2.5};
                    if (v) {
                        pw.kind = ML_PARAM_TENSOR;
                        pw.tensor.dtype = dtype;
                        pw.tensor.data = dt ? (void *)pwd : pwf;
                        pw.tensor.rank = v == 1 ? 1 : 2;
                        pw.tensor.shape[0] = v == 1 ? cols : rows;
                        pw.tensor.shape[1] = v == 2 ? 1 : cols;
                    }
                    struct ml_request req;
                    struct ml_result general, fused;
                    ml_request_init(&req);
                    req.loss = losses[l];
                    req.reduction = reds[l];
                    req.dtype = dtype;
                    req.labels = &tz;
                    req.logits = &tx;
                    req.weights = &tw;
                    req.params = &pw;
                    req.num_params = 1;
                    req.outputs = ML_OUT_LOSS | ML_OUT_PER_ELEMENT;
                    setenv("MASKLOSS_SIMD", "baseline", 1);
                    assert_int_equal(ml_eval(&req, &general, NULL), 0);
                    req.outputs = ML_OUT_LOSS;
                    for (int p = 0; p < 3; p++) {
                        setenv("MASKLOSS_SIMD", paths[p], 1);
                        if (strcmp(ml_simd_path(), paths[p]))
                            continue;
                        assert_int_equal(ml_eval(&req, &fused, NULL), 0);
                        char ctx[160];
                        snprintf(ctx, sizeof(ctx), "%s %s pos_weight variant %d [%lld,%lld] (%s)",
                                 losses[l], dt ? "float64" : "float32", v, (long long)rows,
                                 (long long)cols, paths[p]);
                        same_bits(fused.loss, general.loss, "loss", ctx);
                        ml_result_free(&fused);
                        checked++;
                    }
                    ml_result_free(&general);
                }
        unsetenv("MASKLOSS_SIMD");
        free(z);
        free(x);
        free(w);
        free(pwf);
        free(zd);
        free(xd);
        free(wd);
        free(pwd);
    }
    printf("%d requests with pos_weight: fused == general\n", checked);
}

/* The softmax family's rows (16 lanes per row, the library's exp and log): the same bits on
 * every path, for class counts below, at and above the lanes, with and without smoothing,
 * float32 and float64. */
static void test_softmax_paths(void **state)
{
    (void)state;
    static const int64_t classes[] = {1, 7, 16, 64, 1000};
    static const char *const paths[] = {"avx512f", "avx2", "baseline"};
    static const struct ml_param smoothing[] = {
        {.name = "label_smoothing", .kind = ML_PARAM_NUMBER, .number = 0.1}};
    int checked = 0;
    for (size_t ci = 0; ci < sizeof(classes) / sizeof(classes[0]); ci++) {
        int64_t rows = 37, cols = classes[ci], n = rows * cols;
        float *z, *x, *w;
        random_inputs(n, 0.3, 20, 0.3, 2, &z, &x, &w);
        double *zd = malloc((size_t)n * sizeof(double)), *xd = malloc((size_t)n * sizeof(double));
        assert_true(zd && xd);
        for (int64_t i = 0; i < n; i++) {
            zd[i] = z[i];
            xd[i] = x[i];
        }
        for (int dt = 0; dt < 2; dt++)
            for (int smooth = 0; smooth < 2; smooth++) {
                enum ml_dtype dtype = dt ? ML_FLOAT64 : ML_FLOAT32;
                struct ml_tensor tz = {2, {rows, cols}, dtype, dt ? (void *)zd : z};
                struct ml_tensor tx = {2, {rows, cols}, dtype, dt ? (void *)xd : x};
                struct ml_request req;
                struct ml_result base, res;
                ml_request_init(&req);
                req.loss = "softmax_cross_entropy";
                req.dtype = dtype;
                req.labels = &tz;
                req.logits = &tx;
                req.params = smooth ? smoothing : NULL;
                req.num_params = smooth ? 1 : 0;
                setenv("MASKLOSS_SIMD", "baseline", 1);
                assert_int_equal(ml_eval(&req, &base, NULL), 0);
                for (int p = 0; p < 2; p++) {
                    setenv("MASKLOSS_SIMD", paths[p], 1);
                    if (strcmp(ml_simd_path(), paths[p]))
                        continue;
                    assert_int_equal(ml_eval(&req, &res, NULL), 0);
                    same_bits(res.loss, base.loss, "softmax loss", paths[p]);
                    ml_result_free(&res);
                    checked++;
                }
                ml_result_free(&base);
            }
        unsetenv("MASKLOSS_SIMD");
        free(z);
        free(x);
        free(w);
        free(zd);
        free(xd);
    }
    printf("%d softmax requests: every path == baseline\n", checked);
}

/* A NaN or an infinity deep inside a large tensor is found (the fused kernel's sum turns
 * non-finite, then the scan finds the culprit), and the error names the tensor and the first
 * index, in the logits, the labels and the weights (dense, and one per class), for each
 * fused loss: ASL clamps its probabilities (a NaN logit can give a finite loss there) and
 * is checked without its focusing term, where nothing else would propagate the NaN. */
static void test_non_finite_scan(void **state)
{
    (void)state;
    int64_t n = 5000;
    float *x = calloc((size_t)n, sizeof(float)), *z = calloc((size_t)n, sizeof(float));
    float *w = calloc((size_t)n, sizeof(float));
    assert_non_null(x);
    assert_non_null(z);
    assert_non_null(w);
    for (int64_t i = 0; i < n; i++)
        w[i] = 1;
    struct ml_tensor tz = {2, {50, 100}, ML_FLOAT32, z}, tx = {2, {50, 100}, ML_FLOAT32, x};
    struct ml_tensor twd = {2, {50, 100}, ML_FLOAT32, w}, twc = {2, {1, 100}, ML_FLOAT32, w};
    struct {
        float *where;
        int64_t at;
        const struct ml_tensor *weights;
        const char *field;
    } cases[] = {{x, 0, NULL, "logits"},     {x, 7, NULL, "logits"},    {x, 1023, NULL, "logits"},
                 {x, 1024, NULL, "logits"},  {x, 4999, NULL, "logits"}, {z, 4321, NULL, "labels"},
                 {w, 2500, &twd, "weights"}, {w, 77, &twc, "weights"},  {z, 0, &twd, "labels"}};
    /* From 4 on the second input is `predictions` (hinge_loss: logits, but relu drops NaN). */
    static const char *const losses[] = {"sigmoid_cross_entropy",
                                         "binary_cross_entropy_with_logits",
                                         "sigmoid_focal_loss",
                                         "asymmetric_loss",
                                         "mean_squared_error",
                                         "absolute_difference",
                                         "huber_loss",
                                         "log_loss",
                                         "hinge_loss"};
    static const struct ml_param asl_nofocus[] = {
        {.name = "gamma_neg", .kind = ML_PARAM_NUMBER, .number = 0},
        {.name = "gamma_pos", .kind = ML_PARAM_NUMBER, .number = 0}};
    static const float bad[] = {NAN, INFINITY, -INFINITY};
    /* The same in double: the float64 kernels. */
    double *xd = calloc((size_t)n, sizeof(double)), *zd = calloc((size_t)n, sizeof(double));
    double *wd = calloc((size_t)n, sizeof(double));
    assert_true(xd && zd && wd);
    for (int64_t i = 0; i < n; i++)
        wd[i] = 1;
    struct ml_tensor tz64 = {2, {50, 100}, ML_FLOAT64, zd}, tx64 = {2, {50, 100}, ML_FLOAT64, xd};
    struct ml_tensor twd64 = {2, {50, 100}, ML_FLOAT64, wd}, twc64 = {2, {1, 100}, ML_FLOAT64, wd};
    int checked = 0;
    for (int dt = 0; dt < 2; dt++)
        for (size_t l = 0; l < sizeof(losses) / sizeof(losses[0]); l++)
            for (size_t b = 0; b < 3; b++)
                for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
                    float saved = cases[k].where[cases[k].at];
                    cases[k].where[cases[k].at] = bad[b];
                    double *where64 = cases[k].where == x ? xd : cases[k].where == z ? zd : wd;
                    double saved64 = where64[cases[k].at];
                    where64[cases[k].at] = bad[b];
                    struct ml_request req;
                    struct ml_result res;
                    struct ml_error err;
                    ml_request_init(&req);
                    req.loss = losses[l];
                    req.dtype = dt ? ML_FLOAT64 : ML_FLOAT32;
                    req.labels = dt ? &tz64 : &tz;
                    int preds = l >= 4 && l != 8;
                    if (preds)
                        req.predictions = dt ? &tx64 : &tx;
                    else
                        req.logits = dt ? &tx64 : &tx;
                    req.weights = cases[k].weights;
                    if (dt && req.weights)
                        req.weights = req.weights == &twd ? &twd64 : &twc64;
                    const char *field = cases[k].field;
                    if (preds && !strcmp(field, "logits"))
                        field = "predictions";
                    if (l == 3) {
                        req.params = asl_nofocus;
                        req.num_params = 2;
                    }
                    int rc = ml_eval(&req, &res, &err);
                    if (rc != ML_ENONFINITE || err.index != cases[k].at || strcmp(err.field, field))
                        fail_msg("%s %s: %g in %s[%lld]: rc %d, field %s, index %lld",
                                 dt ? "float64" : "float32", losses[l], (double)bad[b], field,
                                 (long long)cases[k].at, rc, rc ? err.field : "-",
                                 rc ? (long long)err.index : -1LL);
                    /* Accepted with allow_non_finite: the fused path (reduced outputs) and the
                     * general path (per_element asked too) give the same number, non-finite,
                     * for mean and for sum. */
                    req.allow_non_finite = 1;
                    for (int r = 0; r < 2; r++) {
                        /* Every one of these losses has both (names are case-insensitive). */
                        req.reduction = r ? "sum" : "mean";
                        struct ml_result fused, general;
                        req.outputs = ML_OUT_LOSS;
                        assert_int_equal(ml_eval(&req, &fused, NULL), 0);
                        req.outputs = ML_OUT_LOSS | ML_OUT_PER_ELEMENT;
                        assert_int_equal(ml_eval(&req, &general, NULL), 0);
                        if (fused.path != ML_PATH_FUSED || general.path != ML_PATH_GENERAL)
                            fail_msg("%s: paths %d %d", losses[l], fused.path, general.path);
                        int same =
                            isnan(fused.loss) ? isnan(general.loss) : fused.loss == general.loss;
                        /* ASL's clamps give torch's finite values at x = +-inf. */
                        int finite_ok = l == 3 && isinf(bad[b]) && cases[k].where == x;
                        if (!same || (isfinite(fused.loss) && !finite_ok))
                            fail_msg("%s %s %s: %g in %s[%lld]: fused %g, general %g",
                                     dt ? "float64" : "float32", losses[l],
                                     req.reduction ? req.reduction : "default", (double)bad[b],
                                     field, (long long)cases[k].at, fused.loss, general.loss);
                        ml_result_free(&fused);
                        ml_result_free(&general);
                        checked++;
                    }
                    req.allow_non_finite = 0;
                    req.reduction = NULL;
                    req.outputs = ML_OUT_LOSS;
                    cases[k].where[cases[k].at] = saved;
                    where64[cases[k].at] = saved64;
                    checked++;
                }
    free(xd);
    free(zd);
    free(wd);
    printf("%d non-finite inputs: found, and with allow_non_finite the same non-finite loss on "
           "both paths\n",
           checked);
    free(w);
    free(x);
    free(z);
}

/* parallel_for runners: in order (the default's order), reversed, and on two threads. */
struct job {
    void (*fn)(void *, int64_t);
    void *arg;
    int64_t n;
    int64_t first; /* this thread runs first, first + 2, ... */
};

static void run_in_order(void *ctx, int64_t n, void (*fn)(void *, int64_t), void *arg)
{
    (void)ctx;
    for (int64_t i = 0; i < n; i++)
        fn(arg, i);
}

static void run_reversed(void *ctx, int64_t n, void (*fn)(void *, int64_t), void *arg)
{
    int *calls = ctx;
    (*calls)++;
    for (int64_t i = n - 1; i >= 0; i--)
        fn(arg, i);
}

static void *thread_main(void *p)
{
    struct job *j = p;
    for (int64_t i = j->first; i < j->n; i += 2)
        j->fn(j->arg, i);
    return NULL;
}

static void run_two_threads(void *ctx, int64_t n, void (*fn)(void *, int64_t), void *arg)
{
    (void)ctx;
    struct job a = {fn, arg, n, 0}, b = {fn, arg, n, 1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, thread_main, &b), 0);
    thread_main(&a);
    pthread_join(t, NULL);
}

/* A request of many chunks gives the same bits run in order, reversed, or on two threads. */
static void test_parallel_same_bits(void **state)
{
    (void)state;
    int64_t rows = 5000, cols = 101, n = rows * cols; /* 8 chunks */
    float *z, *x, *w;
    random_inputs(n, 0.5, 20, 0.5, 0, &z, &x, &w);
    struct ml_tensor tz = {2, {rows, cols}, ML_FLOAT32, z};
    struct ml_tensor tx = {2, {rows, cols}, ML_FLOAT32, x};
    struct ml_tensor tw = {2, {rows, cols}, ML_FLOAT32, w};
    void (*runners[])(void *, int64_t, void (*)(void *, int64_t),
                      void *) = {NULL, run_in_order, run_reversed, run_two_threads};
    double loss[4];
    int reversed_calls = 0;
    for (int k = 0; k < 4; k++) {
        struct ml_request req;
        struct ml_result res;
        ml_request_init(&req);
        req.loss = "sigmoid_cross_entropy";
        req.labels = &tz;
        req.logits = &tx;
        req.weights = &tw;
        req.parallel_for = runners[k];
        req.parallel_ctx = &reversed_calls;
        assert_int_equal(ml_eval(&req, &res, NULL), 0);
        loss[k] = res.loss;
        ml_result_free(&res);
    }
    assert_int_equal(reversed_calls, 1); /* the runner was used */
    for (int k = 1; k < 4; k++)
        same_bits(loss[k], loss[0], "loss", k == 3 ? "two threads" : "reordered");
    free(z);
    free(x);
    free(w);
}

/* The fused path validates as the general one: a focal alpha outside [0, 1] (and not -1)
 * is a bad_parameter whatever the outputs and the reduction. */
int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fused_equals_general), cmocka_unit_test(test_asl_soft_labels),
        cmocka_unit_test(test_non_finite_scan),      cmocka_unit_test(test_parallel_same_bits),
        cmocka_unit_test(test_softmax_paths),        cmocka_unit_test(test_pos_weight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
