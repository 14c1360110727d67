/*
 * test_losses.c -- every loss x every reduction x accepted and rejected weight shapes,
 * randomized against the long-double reference of ref.h, plus hand-derived cases.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "maskloss.h"
#include "ref.h"

#define MAXE 512
#define TRIALS 60

struct T {
    struct ml_tensor t;
    double d[MAXE];
};

static struct ml_tensor *mk(struct T *x, int rank, int64_t d0, int64_t d1, int64_t d2)
{
    memset(&x->t, 0, sizeof(x->t));
    x->t.rank = rank;
    int64_t dims[3] = {d0, d1, d2};
    for (int d = 0; d < rank; d++)
        x->t.shape[d] = dims[d];
    x->t.dtype = ML_FLOAT64;
    x->t.data = x->d;
    return &x->t;
}

static int64_t numel(const struct T *x)
{
    return ml_shape_numel(x->t.rank, x->t.shape);
}

static void check_close(ld want, double got, double rtol, double atol, const char *ctx, int i)
{
    if (isnan(want) && isnan(got))
        return;
    if (!(fabsl((ld)got - want) <= atol + rtol * fabsl(want)))
        fail_msg("%s [%d]: got %.17g, want %.17Lg (diff %.3Lg)", ctx, i, got, want,
                 fabsl((ld)got - want));
}

/* Runs a request; fails the test unless the status is `expect`. */
static int run(struct ml_request *req, struct ml_result *res, int expect, const char *ctx)
{
    struct ml_error err;
    int rc = ml_eval(req, res, &err);
    if (rc != expect)
        fail_msg("%s: status %d (%s), expected %d; message: %s (field %s)", ctx, rc,
                 ml_status_name(rc), expect, rc ? err.message : "", rc ? err.field : "");
    if (rc) {
        assert_true(err.message[0] != '\0');
        assert_true(err.field[0] != '\0' || rc == ML_ENOMEM);
    }
    return rc;
}

/* ---- Reference reductions -------------------------------------------------------------- */

enum red { R_NONE, R_SUM, R_MEAN_W, R_COUNT, R_NONZERO, R_RAW_SW };

static ld ref_reduce(enum red r, const ld *l, const ld *w, int n, int nan_on_zero, ld raw_sw)
{
    ld num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        num += l[i] * w[i];
        den += r == R_COUNT ? 1 : (r == R_NONZERO ? (w[i] != 0) : w[i]);
    }
    if (r == R_SUM)
        return num;
    if (r == R_RAW_SW)
        den = raw_sw;
    if (den == 0 && !nan_on_zero)
        return 0;
    return num / den;
}

static const struct {
    const char *name;
    enum red red;
} tf_reductions[] = {
    {"NONE", R_NONE},
    {"SUM", R_SUM},
    {"mean", R_MEAN_W},
    {"SUM_OVER_BATCH_SIZE", R_COUNT},
    {"SUM_BY_NONZERO_WEIGHTS", R_NONZERO},
    {"sum_over_nonzero_weights", R_NONZERO},
    {"weighted_sum_by_nonzero_weights", R_NONZERO},
};

/* Weight shapes against an [N, C] loss. */
enum wkind { W_NONE, W_SCALAR, W_FULL, W_ROW, W_COL, W_ONE, W_VEC_C, W_KINDS };

static const struct ml_tensor *make_weights(struct T *w, enum wkind k, int n, int c, struct rng *r)
{
    switch (k) {
    case W_NONE:
        return NULL;
    case W_SCALAR:
        mk(w, 0, 0, 0, 0);
        break;
    case W_FULL:
        mk(w, 2, n, c, 0);
        break;
    case W_ROW:
        mk(w, 2, n, 1, 0);
        break;
    case W_COL:
        mk(w, 2, 1, c, 0);
        break;
    case W_ONE:
        mk(w, 2, 1, 1, 0);
        break;
    default:
        mk(w, 1, c, 0, 0);
        break;
    }
    for (int64_t i = 0; i < numel(w); i++)
        w->d[i] = rng_uniform(r, 0, 1) < 0.3 ? 0.0 : rng_uniform(r, -0.5, 3.0);
    return &w->t;
}

static ld weight_at(enum wkind k, const struct T *w, int i, int c)
{
    switch (k) {
    case W_NONE:
        return 1;
    case W_SCALAR:
    case W_ONE:
        return w->d[0];
    case W_FULL:
        return w->d[i];
    case W_ROW:
        return w->d[i / c];
    default:
        return w->d[i % c];
    }
}

/* ---- TF v1 elementwise losses and tf.nn ops -------------------------------------------- */

enum tfloss { L_SCE, L_LOG, L_MSE, L_ABS, L_HUBER, L_HINGE, L_WXENT, L_NN_SCE, L_CWL, L_COUNT };

static const char *const tf_names[L_COUNT] = {
    "tf.compat.v1.losses.sigmoid_cross_entropy",
    "log_loss",
    "tf.compat.v1.losses.mean_squared_error",
    "absolute_difference",
    "tf.compat.v1.losses.huber_loss",
    "hinge_loss",
    "tf.nn.weighted_cross_entropy_with_logits",
    "tf.nn.sigmoid_cross_entropy_with_logits",
    "tf.compat.v1.losses.compute_weighted_loss",
};

static void test_tf_elementwise_random(void **state)
{
    (void)state;
    struct rng r = {0x9e3779b97f4a7c15ULL};
    static struct T z, x, w, q;
    for (int loss = 0; loss < L_COUNT; loss++) {
        for (int trial = 0; trial < TRIALS; trial++) {
            int n = rng_int(&r, 1, 6), c = rng_int(&r, 1, 5), ne = n * c;
            mk(&z, 2, n, c, 0);
            mk(&x, 2, n, c, 0);
            int soft = rng_int(&r, 0, 1);
            for (int i = 0; i < ne; i++) {
                z.d[i] = soft ? rng_uniform(&r, 0, 1) : (double)rng_int(&r, 0, 1);
                x.d[i] = rng_uniform(&r, -6, 6);
                if (loss == L_LOG)
                    x.d[i] = rng_uniform(&r, 0.02, 0.98);
                if (loss == L_MSE || loss == L_ABS || loss == L_HUBER) {
                    z.d[i] = rng_uniform(&r, -3, 3);
                    x.d[i] = rng_uniform(&r, -3, 3);
                }
                if (loss == L_CWL)
                    x.d[i] = rng_uniform(&r, 0, 5);
            }
            enum wkind wk = (enum wkind)rng_int(&r, 0, W_ONE);
            const struct ml_tensor *wt = make_weights(&w, wk, n, c, &r);
            struct ml_param params[2];
            size_t np = 0;
            double ls = 0, eps = 1e-7, delta = 1.0;
            if (loss == L_SCE) {
                ls = (double[]){0, 0.1, 0.3, -0.2}[rng_int(&r, 0, 3)];
                params[np++] = (struct ml_param){
                    .name = "label_smoothing", .kind = ML_PARAM_NUMBER, .number = ls};
            }
            if (loss == L_LOG && rng_int(&r, 0, 1)) {
                eps = 1e-3;
                params[np++] =
                    (struct ml_param){.name = "epsilon", .kind = ML_PARAM_NUMBER, .number = eps};
            }
            if (loss == L_HUBER) {
                delta = (double[]){0.5, 1.0, 2.0}[rng_int(&r, 0, 2)];
                params[np++] =
                    (struct ml_param){.name = "delta", .kind = ML_PARAM_NUMBER, .number = delta};
            }
            if (loss == L_WXENT) {
                mk(&q, 1, c, 0, 0);
                for (int j = 0; j < c; j++)
                    q.d[j] = rng_uniform(&r, 0.2, 3);
                params[np++] =
                    (struct ml_param){.name = "pos_weight", .kind = ML_PARAM_TENSOR, .tensor = q.t};
            }
            int ri = rng_int(&r, 0, (int)(sizeof(tf_reductions) / sizeof(tf_reductions[0])) - 1);

            /* Reference. */
            ld l[MAXE], wv[MAXE];
            for (int i = 0; i < ne; i++) {
                ld zi = z.d[i], xi = x.d[i];
                switch (loss) {
                case L_SCE:
                    if (ls > 0)
                        zi = zi * (1 - (ld)ls) + 0.5L * (ld)ls;
                    l[i] = ref_bce_logits(zi, xi, 1);
                    break;
                case L_NN_SCE:
                    l[i] = ref_bce_logits(zi, xi, 1);
                    break;
                case L_WXENT:
                    l[i] = ref_bce_logits(zi, xi, q.d[i % c]);
                    break;
                case L_LOG:
                    l[i] = -zi * logl(xi + (ld)eps) - (1 - zi) * logl(1 - xi + (ld)eps);
                    break;
                case L_MSE:
                    l[i] = (xi - zi) * (xi - zi);
                    break;
                case L_ABS:
                    l[i] = fabsl(xi - zi);
                    break;
                case L_HUBER: {
                    ld e = fabsl(xi - zi), dl = delta;
                    l[i] = e <= dl ? 0.5L * e * e : 0.5L * dl * dl + dl * (e - dl);
                    break;
                }
                case L_HINGE: {
                    ld m = 1 - (2 * zi - 1) * xi;
                    l[i] = m > 0 ? m : 0;
                    break;
                }
                default:
                    l[i] = xi;
                }
                wv[i] = weight_at(wk, &w, i, c);
            }

            for (int dt = 0; dt < 2; dt++) {
                struct ml_request req;
                ml_request_init(&req);
                req.loss = tf_names[loss];
                req.reduction = tf_reductions[ri].name;
                req.dtype = dt ? ML_FLOAT32 : ML_FLOAT64;
                req.labels = loss == L_CWL ? NULL : &z.t;
                if (loss == L_CWL)
                    req.losses = &x.t;
                else if (loss == L_LOG || loss == L_MSE || loss == L_ABS || loss == L_HUBER)
                    req.predictions = &x.t;
                else
                    req.logits = &x.t;
                req.weights = wt;
                req.params = params;
                req.num_params = np;
                int scalar = tf_reductions[ri].red != R_NONE;
                req.outputs = ML_OUT_LOSS | ML_OUT_PER_ELEMENT |
                              (scalar ? ML_OUT_PER_SAMPLE | ML_OUT_PER_CLASS : 0);
                struct ml_result res;
                char ctx[160];
                snprintf(ctx, sizeof(ctx), "%s %s w=%d %s", tf_names[loss], tf_reductions[ri].name,
                         (int)wk, dt ? "float32" : "float64");
                run(&req, &res, 0, ctx);
                double rtol = dt ? 2e-5 : 1e-12, atol = dt ? 1e-4 : 1e-12;
                for (int i = 0; i < ne; i++)
                    check_close(l[i], res.per_element.data[i], rtol, atol, ctx, i);
                if (!scalar) {
                    assert_true(res.loss_is_tensor);
                    assert_int_equal(res.loss_tensor.numel, ne);
                    for (int i = 0; i < ne; i++)
                        check_close(l[i] * wv[i], res.loss_tensor.data[i], rtol, atol, ctx, i);
                } else {
                    check_close(ref_reduce(tf_reductions[ri].red, l, wv, ne, 0, 0), res.loss, rtol,
                                atol, ctx, -1);
                    /* The same reduction per row and per class. */
                    for (int row = 0; row < n; row++) {
                        ld lr[8], wr[8];
                        for (int j = 0; j < c; j++) {
                            lr[j] = l[row * c + j];
                            wr[j] = wv[row * c + j];
                        }
                        check_close(ref_reduce(tf_reductions[ri].red, lr, wr, c, 0, 0),
                                    res.per_sample.data[row], rtol, atol, ctx, row);
                    }
                    for (int j = 0; j < c; j++) {
                        ld lc[8], wc[8];
                        for (int row = 0; row < n; row++) {
                            lc[row] = l[row * c + j];
                            wc[row] = wv[row * c + j];
                        }
                        check_close(ref_reduce(tf_reductions[ri].red, lc, wc, n, 0, 0),
                                    res.per_class.data[j], rtol, atol, ctx, j);
                    }
                }
                ml_result_free(&res);
            }
        }
    }
}

/* TF accepts a scalar or the loss's rank with dims 1|equal; everything else is an error. */
static void test_tf_weight_shapes(void **state)
{
    (void)state;
    static struct T z, x, w;
    mk(&z, 2, 4, 5, 0);
    mk(&x, 2, 4, 5, 0);
    for (int i = 0; i < 20; i++) {
        z.d[i] = i % 2;
        x.d[i] = 0.1 * i - 1;
    }
    for (int i = 0; i < MAXE; i++)
        w.d[i] = 1;
    struct {
        int rank;
        int64_t d0, d1, d2;
        int ok;
    } shapes[] = {
        {0, 0, 0, 0, 1}, {2, 4, 5, 0, 1}, {2, 4, 1, 0, 1}, {2, 1, 5, 0, 1},
        {2, 1, 1, 0, 1}, {1, 4, 0, 0, 0}, {1, 5, 0, 0, 0}, {1, 1, 0, 0, 0},
        {3, 4, 5, 1, 0}, {2, 2, 5, 0, 0}, {2, 4, 2, 0, 0}, {2, 5, 4, 0, 0},
    };
    const char *losses[] = {"sigmoid_cross_entropy", "tf.nn.sigmoid_cross_entropy_with_logits",
                            "hinge_loss"};
    for (size_t li = 0; li < 3; li++)
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
            struct ml_request req;
            struct ml_result res;
            ml_request_init(&req);
            req.loss = losses[li];
            req.labels = &z.t;
            req.logits = &x.t;
            req.weights = mk(&w, shapes[s].rank, shapes[s].d0, shapes[s].d1, shapes[s].d2);
            char ctx[96];
            snprintf(ctx, sizeof(ctx), "%s weights shape #%zu", losses[li], s);
            if (run(&req, &res, shapes[s].ok ? 0 : ML_EBROADCAST, ctx) == 0)
                ml_result_free(&res);
        }
}

/* ---- PyTorch binary_cross_entropy_with_logits ------------------------------------------ */

static void test_torch_bce_random(void **state)
{
    (void)state;
    struct rng r = {0x1234567887654321ULL};
    static struct T z, x, w, q;
    const char *reds[] = {"mean", "sum", "none"};
    for (int trial = 0; trial < 4 * TRIALS; trial++) {
        int n = rng_int(&r, 1, 6), c = rng_int(&r, 1, 5), ne = n * c;
        mk(&z, 2, n, c, 0);
        mk(&x, 2, n, c, 0);
        for (int i = 0; i < ne; i++) {
            z.d[i] = rng_int(&r, 0, 1) ? rng_uniform(&r, 0, 1) : rng_int(&r, 0, 1);
            x.d[i] = rng_uniform(&r, -7, 7);
        }
        int wk_choice[] = {W_NONE, W_SCALAR, W_FULL, W_ROW, W_COL, W_VEC_C};
        enum wkind wk = (enum wkind)wk_choice[rng_int(&r, 0, 5)];
        const struct ml_tensor *wt = make_weights(&w, wk, n, c, &r);
        int qk = rng_int(&r, 0, 3); /* none, scalar, [C], [N,1] */
        struct ml_param p = {.name = "pos_weight"};
        if (qk == 1) {
            p.kind = ML_PARAM_NUMBER;
            p.number = rng_uniform(&r, 0, 4);
            q.d[0] = p.number;
        } else if (qk >= 2) {
            p.kind = ML_PARAM_TENSOR;
            mk(&q, 2, qk == 2 ? 1 : n, qk == 2 ? c : 1, 0);
            if (qk == 2)
                mk(&q, 1, c, 0, 0);
            for (int64_t i = 0; i < numel(&q); i++)
                q.d[i] = rng_uniform(&r, 0, 4);
            p.tensor = q.t;
        }
        const char *red = reds[rng_int(&r, 0, 2)];
        ld l[MAXE], wv[MAXE];
        for (int i = 0; i < ne; i++) {
            ld qi = qk == 0 ? 1 : (qk == 1 ? q.d[0] : (qk == 2 ? q.d[i % c] : q.d[i / c]));
            l[i] = ref_bce_logits(z.d[i], x.d[i], qi);
            wv[i] = weight_at(wk, &w, i, c);
        }
        struct ml_request req;
        struct ml_result res;
        ml_request_init(&req);
        req.loss = "torch.nn.functional.binary_cross_entropy_with_logits";
        req.reduction = red;
        req.dtype = ML_FLOAT64;
        req.labels = &z.t;
        req.logits = &x.t;
        req.weights = wt;
        req.params = qk ? &p : NULL;
        req.num_params = qk ? 1 : 0;
        req.outputs = ML_OUT_PER_ELEMENT;
        run(&req, &res, 0, red);
        for (int i = 0; i < ne; i++)
            check_close(l[i], res.per_element.data[i], 1e-12, 1e-13, "torch bce per_element", i);
        if (!strcmp(red, "none"))
            for (int i = 0; i < ne; i++)
                check_close(l[i] * wv[i], res.loss_tensor.data[i], 1e-12, 1e-13, "torch none", i);
        else
            check_close(ref_reduce(!strcmp(red, "sum") ? R_SUM : R_COUNT, l, wv, ne, 1, 0),
                        res.loss, 1e-12, 1e-13, red, -1);
        ml_result_free(&res);
    }

    /* torch `weight` must broadcast to the input: [N] with N != C and extra dims fail. */
    mk(&z, 2, 3, 4, 0);
    mk(&x, 2, 3, 4, 0);
    memset(z.d, 0, sizeof(z.d));
    memset(x.d, 0, sizeof(x.d));
    struct ml_request req;
    struct ml_result res;
    ml_request_init(&req);
    req.loss = "binary_cross_entropy_with_logits";
    req.labels = &z.t;
    req.logits = &x.t;
    req.weights = mk(&w, 1, 3, 0, 0);
    run(&req, &res, ML_EBROADCAST, "torch weight [N]");
    req.weights = mk(&w, 3, 3, 4, 1);
    run(&req, &res, ML_EBROADCAST, "torch weight [N,C,1]");
    req.weights = NULL;
    struct ml_param p = {.name = "pos_weight", .kind = ML_PARAM_TENSOR};
    p.tensor = *mk(&q, 1, 3, 0, 0);
    req.params = &p;
    req.num_params = 1;
    run(&req, &res, ML_EBROADCAST, "torch pos_weight [N]");
    /* The empty input: torch's mean of nothing is NaN. */
    req.params = NULL;
    req.num_params = 0;
    req.labels = mk(&z, 2, 0, 4, 0);
    req.logits = mk(&x, 2, 0, 4, 0);
    run(&req, &res, 0, "torch empty mean");
    assert_true(isnan(res.loss));
    ml_result_free(&res);
}

/* ---- torchvision focal and ASL --------------------------------------------------------- */

static void test_focal_asl_random(void **state)
{
    (void)state;
    struct rng r = {0xabcdef0123456789ULL};
    static struct T z, x;
    for (int trial = 0; trial < 3 * TRIALS; trial++) {
        int n = rng_int(&r, 1, 6), c = rng_int(&r, 1, 5), ne = n * c;
        mk(&z, 2, n, c, 0);
        mk(&x, 2, n, c, 0);
        for (int i = 0; i < ne; i++) {
            z.d[i] = rng_int(&r, 0, 3) ? rng_int(&r, 0, 1) : rng_uniform(&r, 0, 1);
            x.d[i] = rng_uniform(&r, -6, 6);
        }
        ld l[MAXE], ones[MAXE];
        struct ml_param p[4];
        struct ml_request req;
        struct ml_result res;
        ml_request_init(&req);
        req.dtype = ML_FLOAT64;
        req.labels = &z.t;
        req.logits = &x.t;
        req.params = p;
        req.outputs = ML_OUT_PER_ELEMENT;
        const char *red;
        int asl = trial % 2;
        if (!asl) {
            /* torchvision applies any alpha >= 0 as written and none below 0. */
            double alpha = (double[]){0.25, -1, 0.9, 0, 2, -0.5}[rng_int(&r, 0, 5)];
            double gamma = (double[]){0, 1.5, 2, 3}[rng_int(&r, 0, 3)];
            p[0] = (struct ml_param){.name = "alpha", .kind = ML_PARAM_NUMBER, .number = alpha};
            p[1] = (struct ml_param){.name = "gamma", .kind = ML_PARAM_NUMBER, .number = gamma};
            req.num_params = 2;
            req.loss = "torchvision.ops.sigmoid_focal_loss";
            red = (const char *[]){"none", "mean", "sum"}[rng_int(&r, 0, 2)];
            for (int i = 0; i < ne; i++) {
                ld zi = z.d[i], s = ref_sigmoid(x.d[i]);
                ld pt = s * zi + (1 - s) * (1 - zi);
                l[i] = ref_bce_logits(zi, x.d[i], 1) * powl(1 - pt, gamma);
                if (alpha >= 0)
                    l[i] *= alpha * zi + (1 - alpha) * (1 - zi);
            }
        } else {
            double gn = (double[]){0, 2, 4}[rng_int(&r, 0, 2)];
            double gp = (double[]){0, 1}[rng_int(&r, 0, 1)];
            double clip = (double[]){0, 0.05, 0.2}[rng_int(&r, 0, 2)];
            double eps = 1e-8;
            p[0] = (struct ml_param){.name = "gamma_neg", .kind = ML_PARAM_NUMBER, .number = gn};
            p[1] = (struct ml_param){.name = "gamma_pos", .kind = ML_PARAM_NUMBER, .number = gp};
            p[2] = (struct ml_param){.name = "clip", .kind = ML_PARAM_NUMBER, .number = clip};
            req.num_params = 3;
            req.loss = "asymmetric_loss";
            red = "sum";
            for (int i = 0; i < ne; i++) {
                ld zi = z.d[i], xp = ref_sigmoid(x.d[i]), xn = 1 - xp;
                if (clip > 0)
                    xn = fminl(xn + clip, 1);
                ld L = zi * logl(fmaxl(xp, eps)) + (1 - zi) * logl(fmaxl(xn, eps));
                if (gn > 0 || gp > 0) {
                    ld pt = xp * zi + xn * (1 - zi);
                    L *= powl(1 - pt, gp * zi + gn * (1 - zi));
                }
                l[i] = -L;
            }
        }
        for (int i = 0; i < ne; i++)
            ones[i] = 1;
        req.reduction = red;
        run(&req, &res, 0, req.loss);
        for (int i = 0; i < ne; i++)
            check_close(l[i], res.per_element.data[i], 1e-11, 1e-14, req.loss, i);
        if (strcmp(red, "none"))
            check_close(ref_reduce(!strcmp(red, "sum") ? R_SUM : R_COUNT, l, ones, ne, 1, 0),
                        res.loss, 1e-11, 1e-14, red, -1);
        ml_result_free(&res);
    }
}

/* ---- Softmax family --------------------------------------------------------------------- */

static void fill_logits(struct rng *r, struct T *x, int ne)
{
    for (int i = 0; i < ne; i++)
        x->d[i] = rng_uniform(r, -5, 5);
}

static void test_tf_softmax_random(void **state)
{
    (void)state;
    struct rng r = {0x5555aaaa5555aaaaULL};
    static struct T y, x, w;
    for (int trial = 0; trial < 2 * TRIALS; trial++) {
        int n = rng_int(&r, 1, 6), c = rng_int(&r, 2, 5);
        int sparse = trial % 2;
        mk(&x, 2, n, c, 0);
        fill_logits(&r, &x, n * c);
        int labels[8];
        for (int i = 0; i < n; i++)
            labels[i] = rng_int(&r, 0, c - 1);
        if (sparse) {
            if (rng_int(&r, 0, 1))
                mk(&y, 2, n, 1, 0);
            else
                mk(&y, 1, n, 0, 0);
            for (int i = 0; i < n; i++)
                y.d[i] = labels[i];
        } else {
            mk(&y, 2, n, c, 0);
            for (int i = 0; i < n * c; i++)
                y.d[i] = (i % c) == labels[i / c];
        }
        /* weights: none, [], [N], [1], and [N,1] (sparse only: squeezed) */
        int wk = rng_int(&r, 0, sparse ? 4 : 3);
        const struct ml_tensor *wt = NULL;
        if (wk == 1)
            wt = mk(&w, 0, 0, 0, 0);
        else if (wk == 2)
            wt = mk(&w, 1, n, 0, 0);
        else if (wk == 3)
            wt = mk(&w, 1, 1, 0, 0);
        else if (wk == 4)
            wt = mk(&w, 2, n, 1, 0);
        for (int i = 0; i < 8; i++)
            w.d[i] = rng_int(&r, 0, 2) ? rng_uniform(&r, 0, 2) : 0;
        double ls = sparse ? 0 : (double[]){0, 0.2}[rng_int(&r, 0, 1)];
        struct ml_param p = {.name = "label_smoothing", .kind = ML_PARAM_NUMBER, .number = ls};
        int ri = rng_int(&r, 0, 6);
        ld l[8], wv[8];
        for (int i = 0; i < n; i++) {
            if (sparse) {
                l[i] = -ref_log_softmax(x.d + i * c, c, labels[i]);
            } else {
                l[i] = 0;
                for (int j = 0; j < c; j++) {
                    ld yj = y.d[i * c + j];
                    if (ls > 0)
                        yj = yj * (1 - (ld)ls) + (ld)ls / c;
                    l[i] -= yj * ref_log_softmax(x.d + i * c, c, j);
                }
            }
            wv[i] = wk == 0 ? 1 : (wk == 2 || wk == 4 ? w.d[i] : w.d[0]);
        }
        struct ml_request req;
        struct ml_result res;
        ml_request_init(&req);
        req.loss = sparse ? "sparse_softmax_cross_entropy" : "softmax_cross_entropy";
        req.reduction = tf_reductions[ri].name;
        req.dtype = ML_FLOAT64;
        req.labels = &y.t;
        req.logits = &x.t;
        req.weights = wt;
        req.params = sparse ? NULL : &p;
        req.num_params = sparse ? 0 : 1;
        req.outputs = ML_OUT_PER_ELEMENT;
        run(&req, &res, 0, req.loss);
        for (int i = 0; i < n; i++)
            check_close(l[i], res.per_element.data[i], 1e-12, 1e-13, req.loss, i);
        if (tf_reductions[ri].red == R_NONE)
            for (int i = 0; i < n; i++)
                check_close(l[i] * wv[i], res.loss_tensor.data[i], 1e-12, 1e-13, "none", i);
        else
            check_close(ref_reduce(tf_reductions[ri].red, l, wv, n, 0, 0), res.loss, 1e-12, 1e-13,
                        tf_reductions[ri].name, -1);
        ml_result_free(&res);
    }
    /* Rejected: [N, C] weights for the per-sample loss; [N,3] weights cannot be squeezed. */
    mk(&x, 2, 3, 4, 0);
    mk(&y, 2, 3, 4, 0);
    memset(y.d, 0, sizeof(y.d));
    struct ml_request req;
    struct ml_result res;
    ml_request_init(&req);
    req.loss = "softmax_cross_entropy";
    req.labels = &y.t;
    req.logits = &x.t;
    req.weights = mk(&w, 2, 3, 4, 0);
    run(&req, &res, ML_EBROADCAST, "softmax [N,C] weights");
    req.weights = mk(&w, 2, 3, 1, 0);
    run(&req, &res, ML_EBROADCAST, "softmax [N,1] weights");
    req.loss = "sparse_softmax_cross_entropy";
    req.labels = mk(&y, 1, 3, 0, 0);
    req.weights = mk(&w, 2, 3, 3, 0);
    run(&req, &res, ML_EBROADCAST, "sparse [N,3] weights");
    y.d[0] = 4;
    req.weights = NULL;
    run(&req, &res, ML_ELABEL, "sparse label out of range");
    y.d[0] = 1.5;
    run(&req, &res, ML_ELABEL, "sparse label not an integer");
}

static void test_torch_ce_random(void **state)
{
    (void)state;
    struct rng r = {0x0f0f0f0f12345678ULL};
    static struct T y, x, w;
    for (int trial = 0; trial < 3 * TRIALS; trial++) {
        int n = rng_int(&r, 1, 6), c = rng_int(&r, 2, 5);
        int probs = trial % 3 == 2;
        mk(&x, 2, n, c, 0);
        fill_logits(&r, &x, n * c);
        int weighted = rng_int(&r, 0, 1);
        if (weighted) {
            mk(&w, 1, c, 0, 0);
            for (int j = 0; j < c; j++)
                w.d[j] = rng_uniform(&r, 0.1, 3);
        }
        double ls = (double[]){0, 0.1, 0.5}[rng_int(&r, 0, 2)];
        int64_t ignore = rng_int(&r, 0, 1) ? -100 : 1;
        int labels[8];
        if (probs) {
            mk(&y, 2, n, c, 0);
            for (int i = 0; i < n; i++) {
                ld s = 0;
                for (int j = 0; j < c; j++)
                    s += y.d[i * c + j] = rng_uniform(&r, 0, 1);
                for (int j = 0; j < c; j++)
                    y.d[i * c + j] /= (double)s;
            }
            ignore = -100;
        } else {
            mk(&y, 1, n, 0, 0);
            for (int i = 0; i < n; i++) {
                labels[i] = rng_int(&r, 0, 5) == 0 ? (int)ignore : rng_int(&r, 0, c - 1);
                y.d[i] = labels[i];
            }
        }
        ld val[8], den[8], ones[8];
        for (int i = 0; i < n; i++) {
            ones[i] = 1;
            const double *row = x.d + i * c;
            if (probs) {
                val[i] = 0;
                for (int j = 0; j < c; j++) {
                    ld t = y.d[i * c + j] * (1 - (ld)ls) + (ld)ls / c;
                    val[i] -= (weighted ? w.d[j] : 1) * t * ref_log_softmax(row, c, j);
                }
                den[i] = 1;
            } else if (labels[i] == ignore) {
                val[i] = den[i] = 0;
            } else {
                ld wy = weighted ? w.d[labels[i]] : 1;
                ld nll = -wy * ref_log_softmax(row, c, labels[i]);
                ld smooth = 0;
                for (int j = 0; j < c; j++)
                    smooth -= (weighted ? w.d[j] : 1) * ref_log_softmax(row, c, j);
                val[i] = (1 - (ld)ls) * nll + (ld)ls / c * smooth;
                den[i] = wy;
            }
        }
        const char *red = (const char *[]){"mean", "sum", "none"}[rng_int(&r, 0, 2)];
        struct ml_param p[2] = {
            {.name = "label_smoothing", .kind = ML_PARAM_NUMBER, .number = ls},
            {.name = "ignore_index", .kind = ML_PARAM_NUMBER, .number = (double)ignore},
        };
        struct ml_request req;
        struct ml_result res;
        ml_request_init(&req);
        req.loss = "torch.nn.functional.cross_entropy";
        req.reduction = red;
        req.dtype = ML_FLOAT64;
        req.labels = &y.t;
        req.logits = &x.t;
        req.weights = weighted ? &w.t : NULL;
        req.params = p;
        req.num_params = 2;
        req.outputs = ML_OUT_PER_ELEMENT | ML_OUT_SUM_WEIGHTS;
        run(&req, &res, 0, "torch ce");
        for (int i = 0; i < n; i++)
            check_close(val[i], res.per_element.data[i], 1e-12, 1e-13, "torch ce value", i);
        ld sum = 0, dsum = 0;
        for (int i = 0; i < n; i++) {
            sum += val[i];
            dsum += den[i];
        }
        if (!strcmp(red, "mean"))
            check_close(sum / dsum, res.loss, 1e-12, 1e-13, "torch ce mean", -1);
        else if (!strcmp(red, "sum"))
            check_close(ref_reduce(R_SUM, val, ones, n, 1, 0), res.loss, 1e-12, 1e-13, "sum", -1);
        else
            for (int i = 0; i < n; i++)
                check_close(val[i], res.loss_tensor.data[i], 1e-12, 1e-13, "torch ce none", i);
        ml_result_free(&res);
    }
    /* Every target ignored: torch's mean is 0/0 = NaN; sum is 0. */
    mk(&x, 2, 2, 3, 0);
    mk(&y, 1, 2, 0, 0);
    y.d[0] = y.d[1] = -100;
    struct ml_request req;
    struct ml_result res;
    ml_request_init(&req);
    req.loss = "cross_entropy";
    req.labels = &y.t;
    req.logits = &x.t;
    run(&req, &res, 0, "all ignored");
    assert_true(isnan(res.loss));
    ml_result_free(&res);
    req.reduction = "sum";
    run(&req, &res, 0, "all ignored sum");
    assert_true(res.loss == 0.0);
    ml_result_free(&res);
    /* Class weights must be [C]; labels in range. */
    req.reduction = NULL;
    req.weights = mk(&w, 1, 2, 0, 0);
    run(&req, &res, ML_EBROADCAST, "ce weight [2] for 3 classes");
    req.weights = NULL;
    y.d[0] = 3;
    run(&req, &res, ML_ELABEL, "ce label 3 of 3 classes");
    req.labels = mk(&y, 1, 3, 0, 0);
    run(&req, &res, ML_ESHAPE, "ce labels of the wrong shape");
}

/* ---- Keras ------------------------------------------------------------------------------ */

static void test_keras_random(void **state)
{
    (void)state;
    struct rng r = {0x7777000011112222ULL};
    static struct T y, x, w;
    const char *losses[] = {
        "keras3.losses.BinaryCrossentropy", "keras.losses.BinaryFocalCrossentropy",
        "keras3.losses.CategoricalCrossentropy", "keras2.losses.BinaryCrossentropy",
        "keras2.losses.BinaryFocalCrossentropy"};
    const char *k3_reds[] = {"sum_over_batch_size", "sum", "none", "mean",
                             "mean_with_sample_weight"};
    const char *k2_reds[] = {"sum_over_batch_size", "AUTO", "sum", "none"};
    for (int trial = 0; trial < 5 * TRIALS; trial++) {
        int li = trial % 5, k2 = li >= 3, focal = li == 1 || li == 4, cce = li == 2;
        int n = rng_int(&r, 1, 6), c = rng_int(&r, cce ? 2 : 1, 5), ne = n * c;
        int from_logits = rng_int(&r, 0, 1);
        mk(&y, 2, n, c, 0);
        mk(&x, 2, n, c, 0);
        for (int i = 0; i < ne; i++) {
            y.d[i] = cce ? 0 : (rng_int(&r, 0, 2) ? rng_int(&r, 0, 1) : rng_uniform(&r, 0, 1));
            x.d[i] = from_logits ? rng_uniform(&r, -5, 5) : rng_uniform(&r, 0.001, 0.999);
        }
        if (cce)
            for (int i = 0; i < n; i++)
                y.d[i * c + rng_int(&r, 0, c - 1)] = 1;
        double ls = (double[]){0, 0.1}[rng_int(&r, 0, 1)];
        double gamma = (double[]){2, 1.5, 0}[rng_int(&r, 0, 2)];
        double alpha = rng_uniform(&r, 0, 1);
        int balance = rng_int(&r, 0, 1);
        struct ml_param p[5];
        size_t np = 0;
        p[np++] =
            (struct ml_param){.name = "from_logits", .kind = ML_PARAM_BOOL, .boolean = from_logits};
        p[np++] =
            (struct ml_param){.name = "label_smoothing", .kind = ML_PARAM_NUMBER, .number = ls};
        if (focal) {
            p[np++] = (struct ml_param){.name = "gamma", .kind = ML_PARAM_NUMBER, .number = gamma};
            p[np++] = (struct ml_param){.name = "alpha", .kind = ML_PARAM_NUMBER, .number = alpha};
            p[np++] = (struct ml_param){
                .name = "apply_class_balancing", .kind = ML_PARAM_BOOL, .boolean = balance};
        }
        /* sample_weight: none, scalar, [N], [N,1] */
        int wk = rng_int(&r, 0, 3);
        const struct ml_tensor *wt = NULL;
        if (wk == 1)
            wt = mk(&w, 0, 0, 0, 0);
        else if (wk == 2)
            wt = mk(&w, 1, n, 0, 0);
        else if (wk == 3)
            wt = mk(&w, 2, n, 1, 0);
        ld raw_sw = 0;
        for (int i = 0; i < 8; i++)
            w.d[i] = rng_int(&r, 0, 3) ? rng_uniform(&r, 0, 2) : 0;
        for (int i = 0; i < (wk >= 2 ? n : (wk == 1 ? 1 : 0)); i++)
            raw_sw += w.d[i];

        ld v[8], sw[8];
        for (int i = 0; i < n; i++) {
            ld acc = 0;
            if (cce) {
                ld s = 0;
                for (int j = 0; j < c; j++)
                    s += x.d[i * c + j];
                for (int j = 0; j < c; j++) {
                    ld yj = y.d[i * c + j];
                    if (ls != 0)
                        yj = yj * (1 - (ld)ls) + (ld)ls / c;
                    ld lo = from_logits ? ref_log_softmax(x.d + i * c, c, j)
                                        : logl(ref_clip(x.d[i * c + j] / s, 1e-7L, 1 - 1e-7L));
                    acc -= yj * lo;
                }
                v[i] = acc;
            } else {
                for (int j = 0; j < c; j++) {
                    ld yj = y.d[i * c + j], xj = x.d[i * c + j];
                    if (ls != 0)
                        yj = yj * (1 - (ld)ls) + 0.5L * (ld)ls;
                    ld e;
                    if (!focal) {
                        e = from_logits ? ref_bce_logits(yj, xj, 1)
                                        : ref_keras_bce_probs(yj, xj, k2);
                    } else {
                        ld pj = from_logits ? ref_sigmoid(xj) : xj;
                        ld bce = k2 ? (from_logits ? ref_bce_logits(yj, xj, 1)
                                                   : ref_keras_bce_probs(yj, xj, 1))
                                    : ref_keras_bce_probs(yj, pj, 0);
                        ld pt = yj * pj + (1 - yj) * (1 - pj);
                        e = powl(1 - pt, gamma) * bce;
                        if (balance)
                            e *= yj * alpha + (1 - yj) * (1 - alpha);
                    }
                    acc += e;
                }
                v[i] = acc / c;
            }
            sw[i] = wk == 0 ? 1 : (wk == 1 ? w.d[0] : w.d[i]);
        }
        const char *red = k2 ? k2_reds[rng_int(&r, 0, 3)] : k3_reds[rng_int(&r, 0, 4)];
        struct ml_request req;
        struct ml_result res;
        ml_request_init(&req);
        req.loss = losses[li];
        req.reduction = red;
        req.dtype = ML_FLOAT64;
        req.labels = &y.t;
        if (from_logits && rng_int(&r, 0, 1))
            req.logits = &x.t;
        else
            req.predictions = &x.t;
        req.weights = wt;
        req.params = p;
        req.num_params = np;
        req.outputs = ML_OUT_PER_ELEMENT;
        char ctx[160];
        snprintf(ctx, sizeof(ctx), "%s %s logits=%d w=%d", losses[li], red, from_logits, wk);
        run(&req, &res, 0, ctx);
        for (int i = 0; i < n; i++)
            check_close(v[i], res.per_element.data[i], 1e-12, 1e-13, ctx, i);
        if (!strcmp(red, "none")) {
            for (int i = 0; i < n; i++)
                check_close(v[i] * sw[i], res.loss_tensor.data[i], 1e-12, 1e-13, ctx, i);
        } else {
            enum red rr = !strcmp(red, "sum")                       ? R_SUM
                          : !strcmp(red, "mean_with_sample_weight") ? (wk ? R_RAW_SW : R_COUNT)
                                                                    : R_COUNT;
            check_close(ref_reduce(rr, v, sw, n, 0, raw_sw), res.loss, 1e-12, 1e-13, ctx, -1);
        }
        ml_result_free(&res);
    }
    /* A per-element sample_weight cannot weigh Keras's per-sample loss. */
    mk(&y, 2, 3, 4, 0);
    mk(&x, 2, 3, 4, 0);
    for (int i = 0; i < 12; i++)
        x.d[i] = 0.5;
    struct ml_request req;
    struct ml_result res;
    ml_request_init(&req);
    req.loss = "binary_crossentropy";
    req.labels = &y.t;
    req.predictions = &x.t;
    req.weights = mk(&w, 2, 3, 4, 0);
    run(&req, &res, ML_EBROADCAST, "keras3 [N,C] sample_weight");
    req.loss = "keras2.losses.BinaryCrossentropy";
    run(&req, &res, ML_EBROADCAST, "keras2 [N,C] sample_weight");
    /* `logits` with from_logits explicitly false is contradictory. */
    struct ml_param p = {.name = "from_logits", .kind = ML_PARAM_BOOL, .boolean = 0};
    req.weights = NULL;
    req.predictions = NULL;
    req.logits = &x.t;
    req.params = &p;
    req.num_params = 1;
    run(&req, &res, ML_EPARAM, "keras logits with from_logits false");
    /* `logits` without from_logits implies from_logits: x = 0 costs log 2 per element, where
     * 0 read as a probability would cost -log(1e-7) for positives. */
    req.num_params = 0;
    for (int i = 0; i < 12; i++) {
        x.d[i] = 0;
        y.d[i] = i % 2;
    }
    run(&req, &res, 0, "keras logits imply from_logits");
    check_close(logl(2), res.loss, 1e-6, 0, "keras logits imply from_logits (float32)", -1);
    ml_result_free(&res);
}

/* ---- The note's identity --------------------------------------------------------------- */

/* sigmoid_cross_entropy(labels, logits, weights=mask) == mean of the elementwise loss
 * gathered at mask > 0, and 0 for an empty mask (the note that started the project; README "The
 * note's masked example"). */
static void test_note_identity(void **state)
{
    (void)state;
    struct rng r = {42};
    static struct T z, x, m, gz, gx;
    for (int trial = 0; trial < 200; trial++) {
        int n = rng_int(&r, 1, 8), c = rng_int(&r, 1, 8), ne = n * c;
        mk(&z, 2, n, c, 0);
        mk(&x, 2, n, c, 0);
        mk(&m, 2, n, c, 0);
        int k = 0;
        for (int i = 0; i < ne; i++) {
            z.d[i] = rng_int(&r, 0, 1);
            x.d[i] = rng_uniform(&r, -4, 4);
            m.d[i] = trial % 10 == 0 ? 0 : rng_int(&r, 0, 1);
            if (m.d[i] > 0) {
                gz.d[k] = z.d[i];
                gx.d[k] = x.d[i];
                k++;
            }
        }
        struct ml_request req;
        struct ml_result masked, gathered;
        ml_request_init(&req);
        req.loss = "tf.compat.v1.losses.sigmoid_cross_entropy";
        req.dtype = ML_FLOAT64;
        req.labels = &z.t;
        req.logits = &x.t;
        req.weights = &m.t;
        run(&req, &masked, 0, "masked");
        if (k == 0) {
            assert_true(masked.loss == 0.0);
            for (int ri = 0; ri < 5; ri++) {
                struct ml_result other;
                req.reduction = tf_reductions[ri + 1 < 5 ? ri + 1 : 4].name;
                run(&req, &other, 0, "empty mask");
                assert_true(other.loss == 0.0);
                ml_result_free(&other);
            }
        } else {
            struct ml_request g;
            ml_request_init(&g);
            g.loss = "tf.nn.sigmoid_cross_entropy_with_logits";
            g.reduction = "SUM";
            g.dtype = ML_FLOAT64;
            g.labels = mk(&gz, 1, k, 0, 0);
            g.logits = mk(&gx, 1, k, 0, 0);
            run(&g, &gathered, 0, "gathered");
            check_close((ld)gathered.loss / k, masked.loss, 1e-14, 1e-15, "identity", trial);
            ml_result_free(&gathered);
        }
        ml_result_free(&masked);
    }
}

/* ---- Hand-derived values ---------------------------------------------------------------- */

static double eval1(const char *loss, const char *red, enum ml_dtype dt, double z, double x,
                    int predictions, const struct ml_param *p, size_t np)
{
    static struct T tz, tx;
    mk(&tz, 1, 1, 0, 0);
    mk(&tx, 1, 1, 0, 0);
    tz.d[0] = z;
    tx.d[0] = x;
    struct ml_request req;
    struct ml_result res;
    ml_request_init(&req);
    req.loss = loss;
    req.reduction = red;
    req.dtype = dt;
    req.labels = &tz.t;
    if (predictions)
        req.predictions = &tx.t;
    else
        req.logits = &tx.t;
    req.params = p;
    req.num_params = np;
    run(&req, &res, 0, loss);
    double v = res.loss;
    ml_result_free(&res);
    return v;
}

/* Distance in units in the last place of `dt` between got and the exact value (rounded to
 * dt first), counted through the ordered bit patterns. */
static double ulps(double got, ld exact, enum ml_dtype dt)
{
    if (dt == ML_FLOAT32) {
        float a = (float)got, b = (float)exact;
        int32_t ia, ib;
        memcpy(&ia, &a, 4);
        memcpy(&ib, &b, 4);
        ia = ia < 0 ? INT32_MIN - ia : ia;
        ib = ib < 0 ? INT32_MIN - ib : ib;
        return fabs((double)ia - (double)ib) + ((double)a != got ? 1e9 : 0);
    }
    double a = got, b = (double)exact;
    int64_t ia, ib;
    memcpy(&ia, &a, 8);
    memcpy(&ib, &b, 8);
    ia = ia < 0 ? INT64_MIN - ia : ia;
    ib = ib < 0 ? INT64_MIN - ib : ib;
    return fabs((double)ia - (double)ib);
}

/* One element's loss on both paths: the general path (per_element) and, for reduction sum of
 * one element, the fused one where the loss has it; both within max_ulps of `exact`. */
static void check_element(const char *loss, enum ml_dtype dt, double z, double x,
                          const struct ml_param *p, size_t np, ld exact, double max_ulps)
{
    for (int general = 0; general < 2; general++) {
        static struct T tz, tx;
        mk(&tz, 1, 1, 0, 0);
        mk(&tx, 1, 1, 0, 0);
        tz.d[0] = z;
        tx.d[0] = x;
        struct ml_request req;
        struct ml_result res;
        ml_request_init(&req);
        req.loss = loss;
        req.reduction = "sum";
        req.dtype = dt;
        req.labels = &tz.t;
        req.logits = &tx.t;
        req.params = p;
        req.num_params = np;
        req.outputs = general ? ML_OUT_LOSS | ML_OUT_PER_ELEMENT : ML_OUT_LOSS;
        run(&req, &res, 0, loss);
        double got = general ? res.per_element.data[0] : res.loss;
        double u = ulps(got, exact, dt);
        if (u > max_ulps)
            fail_msg("%s %s z=%g x=%.17g (%s path): got %.17g, exact %.20Lg: %.0f ulp", loss,
                     dt == ML_FLOAT32 ? "float32" : "float64", z, x,
                     res.path == ML_PATH_FUSED ? "fused" : "general", got, exact, u);
        ml_result_free(&res);
    }
}

/*
 * Issue 10's accuracy defects, against exact values (mpmath at 50 digits: log1p(exp(-10)),
 * log1p(exp(x)) for x = -13.419898768799802, 0.75 sigmoid(x)^2 log1p(exp(x)) for x = -26.98).
 * Before the fix: the sigmoid family lost an ulp of |x| (5.1e-10 relative in float64, 8.3e-3
 * in float32 at x = -10), focal 6.8e-4, and log-softmax an ulp of the largest logit.
 */
static void test_small_losses_exact(void **state)
{
    (void)state;
    const ld sp10 = 4.5398899216864646769487829307105597e-05L; /* log1p(exp(-10)) */
    const ld sp13 = 1.4852914958876284696334459839262409e-06L;
    const ld focal27 = 5.2876889308087240422917019822767347e-36L;
    static const char *const bce[] = {"binary_cross_entropy_with_logits", "sigmoid_cross_entropy",
                                      "tf.nn.sigmoid_cross_entropy_with_logits"};
    for (int l = 0; l < 3; l++) {
        check_element(bce[l], ML_FLOAT64, 0, -13.419898768799802, NULL, 0, sp13, 2);
        check_element(bce[l], ML_FLOAT64, 1, 13.419898768799802, NULL, 0, sp13, 2);
        check_element(bce[l], ML_FLOAT32, 0, -10, NULL, 0, sp10, 2);
        check_element(bce[l], ML_FLOAT32, 1, 10, NULL, 0, sp10, 2);
    }
    /* pos_weight leaves a negative's loss alone. */
    struct ml_param pw = {.name = "pos_weight", .kind = ML_PARAM_NUMBER, .number = 3};
    check_element("binary_cross_entropy_with_logits", ML_FLOAT64, 0, -13.419898768799802, &pw, 1,
                  sp13, 2);
    check_element("weighted_cross_entropy", ML_FLOAT32, 0, -10, &pw, 1, sp10, 2);
    check_element("sigmoid_focal_loss", ML_FLOAT64, 0, -26.98, NULL, 0, focal27, 4);

    /* Softmax rows with a dominant logit: the loss of the top class is log1p(exp(-10)). */
    static const char *const ce[] = {"sparse_softmax_cross_entropy", "cross_entropy",
                                     "softmax_cross_entropy"};
    static const double rows[][2] = {{20, 10}, {10000, 9990}, {-5, -15}};
    for (int l = 0; l < 3; l++)
        for (int r = 0; r < 3; r++)
            for (int dt = 0; dt < 2; dt++) {
                static struct T tz, tx;
                int dense = l == 2;
                mk(&tx, 2, 1, 2, 0);
                tx.d[0] = rows[r][0];
                tx.d[1] = rows[r][1];
                if (dense) {
                    mk(&tz, 2, 1, 2, 0);
                    tz.d[0] = 1;
                    tz.d[1] = 0;
                } else {
                    mk(&tz, 1, 1, 0, 0);
                    tz.d[0] = 0;
                }
                struct ml_request req;
                struct ml_result res;
                ml_request_init(&req);
                req.loss = ce[l];
                req.dtype = dt ? ML_FLOAT64 : ML_FLOAT32;
                req.labels = &tz.t;
                req.logits = &tx.t;
                run(&req, &res, 0, ce[l]);
                double u = ulps(res.loss, sp10, req.dtype);
                if (u > 2)
                    fail_msg("%s %s [[%g, %g]]: got %.17g, exact %.17Lg: %.0f ulp", ce[l],
                             dt ? "float64" : "float32", rows[r][0], rows[r][1], res.loss, sp10, u);
                ml_result_free(&res);
            }
}

/* One element (or one row) with allow_non_finite, the loss as a number (reduction sum). */
static double eval_nf(const char *loss, enum ml_dtype dt, int n, const double *z, const double *x,
                      int sparse, const struct ml_param *p, size_t np)
{
    static struct T tz, tx;
    mk(&tx, 2, 1, n, 0);
    memcpy(tx.d, x, (size_t)n * sizeof(double));
    if (sparse)
        mk(&tz, 1, 1, 0, 0);
    else
        mk(&tz, 2, 1, n, 0);
    memcpy(tz.d, z, (size_t)(sparse ? 1 : n) * sizeof(double));
    struct ml_request req;
    struct ml_result res;
    ml_request_init(&req);
    req.loss = loss;
    req.reduction = "sum";
    req.dtype = dt;
    req.labels = &tz.t;
    req.logits = &tx.t;
    req.params = p;
    req.num_params = np;
    req.allow_non_finite = 1;
    run(&req, &res, 0, loss);
    double v = res.loss;
    ml_result_free(&res);
    return v;
}

/*
 * The frameworks' own answers at their edges (torch 1.13 and torchvision 0.14 printed them;
 * TF from its formula): non-finite logits with allow_non_finite, and label smoothing <= 0.
 */
static void test_framework_edges(void **state)
{
    (void)state;
    const double inf = INFINITY, one = 1, zero = 0;
    const double neg_inf = -INFINITY;
    /* torch BCE: (1 - z) x + max(-x, 0) + ... is -inf + inf at x = -inf, whatever z. */
    assert_true(isnan(
        eval_nf("binary_cross_entropy_with_logits", ML_FLOAT32, 1, &one, &neg_inf, 0, NULL, 0)));
    assert_true(isnan(
        eval_nf("binary_cross_entropy_with_logits", ML_FLOAT32, 1, &zero, &neg_inf, 0, NULL, 0)));
    assert_true(eval_nf("binary_cross_entropy_with_logits", ML_FLOAT32, 1, &zero, &inf, 0, NULL,
                        0) == INFINITY);
    struct ml_param pw = {.name = "pos_weight", .kind = ML_PARAM_NUMBER, .number = 2};
    assert_true(isnan(
        eval_nf("binary_cross_entropy_with_logits", ML_FLOAT64, 1, &one, &neg_inf, 0, &pw, 1)));
    assert_true(isnan(eval_nf("sigmoid_focal_loss", ML_FLOAT32, 1, &one, &neg_inf, 0, NULL, 0)));
    /* TF: max(x, 0) - x z + log1p(exp(-|x|)) at x = -inf, z = 1 is 0 + inf + 0. */
    assert_true(eval_nf("sigmoid_cross_entropy", ML_FLOAT32, 1, &one, &neg_inf, 0, NULL, 0) ==
                INFINITY);
    /* A row with +inf: x - max is inf - inf in log_softmax, NaN for every class. */
    double row[3] = {1, INFINITY, -21.5}, target = 0;
    assert_true(isnan(eval_nf("cross_entropy", ML_FLOAT32, 3, &target, row, 1, NULL, 0)));
    double onehot[3] = {1, 0, 0};
    assert_true(isnan(eval_nf("softmax_cross_entropy", ML_FLOAT64, 3, onehot, row, 0, NULL, 0)));
    /* ASL's sigmoid saturates and its clamps hold: finite at x = +-inf (torch: -0.0,
     * 18.420681, and with eps 0, -log(0.05) (1 - 0.05)^4 in float32). */
    assert_true(eval_nf("asymmetric_loss", ML_FLOAT32, 1, &one, &inf, 0, NULL, 0) == 0);
    double v = eval_nf("asymmetric_loss", ML_FLOAT32, 1, &one, &neg_inf, 0, NULL, 0);
    assert_true(fabs(v - 18.420680743952367) <= 4 * 0x1p-19);
    struct ml_param eps0 = {.name = "eps", .kind = ML_PARAM_NUMBER, .number = 0};
    v = eval_nf("asymmetric_loss", ML_FLOAT32, 1, &zero, &inf, 0, &eps0, 1);
    ld clip = (ld)0.05f, want = -logl(clip) * powl(1 - clip, 4);
    assert_true(fabsl((ld)v - want) <= 4 * 0x1p-22L);
    /* ...and a NaN logit stays NaN. */
    const double nan = NAN;
    assert_true(isnan(eval_nf("asymmetric_loss", ML_FLOAT32, 1, &one, &nan, 0, NULL, 0)));
    /* eps 0: the log of a sigmoid that underflows is the log-sigmoid, finite: x = -110 in
     * float32 (sigmoid 1.7e-48 is 0) costs softplus(110) = 110 + log1p(e^-110). */
    struct ml_param asl0[2] = {{.name = "eps", .kind = ML_PARAM_NUMBER, .number = 0},
                               {.name = "gamma_pos", .kind = ML_PARAM_NUMBER, .number = 0}};
    const double x110 = -110;
    assert_true(eval_nf("asymmetric_loss", ML_FLOAT32, 1, &one, &x110, 0, asl0, 2) == 110.0);
    const double x800 = -800;
    assert_true(eval_nf("asymmetric_loss", ML_FLOAT64, 1, &one, &x800, 0, asl0, 2) == 800.0);
    /* torch 1.13 cross_entropy ignores label_smoothing <= 0 (and refuses > 1): 2.4076059644443806
     * for logits [3, 2, 1], target 2, smoothing -0.1. */
    struct ml_param ls = {.name = "label_smoothing", .kind = ML_PARAM_NUMBER, .number = -0.1};
    double x321[3] = {3, 2, 1}, t2 = 2;
    v = eval_nf("cross_entropy", ML_FLOAT64, 3, &t2, x321, 1, &ls, 1);
    assert_true(fabs(v - 2.4076059644443806) <= 4 * 0x1p-51);
}

/* The review's findings: answers that depended on the outputs asked, torch's +inf. */
static void test_review_findings(void **state)
{
    (void)state;
    /* A loss of no element reads no weight: a NaN among [1, C] weights is still an error, on
     * both paths. */
    static struct T z, x, w;
    mk(&z, 2, 0, 3, 0);
    mk(&x, 2, 0, 3, 0);
    mk(&w, 2, 1, 3, 0);
    w.d[0] = NAN;
    w.d[1] = w.d[2] = 1;
    for (int general = 0; general < 2; general++) {
        struct ml_request req;
        struct ml_result res;
        struct ml_error err;
        ml_request_init(&req);
        req.loss = "sigmoid_cross_entropy";
        req.labels = &z.t;
        req.logits = &x.t;
        req.weights = &w.t;
        req.outputs = general ? ML_OUT_LOSS | ML_OUT_PER_ELEMENT : ML_OUT_LOSS;
        assert_int_equal(ml_eval(&req, &res, &err), ML_ENONFINITE);
        assert_string_equal(err.field, "weights");
    }
    /* A NaN label is found before a later error (predictions for a loss of logits), whatever
     * the outputs. */
    mk(&z, 2, 1, 2, 0);
    mk(&x, 2, 1, 2, 0);
    z.d[0] = NAN;
    z.d[1] = 1;
    x.d[0] = 0.5;
    x.d[1] = 1;
    for (int general = 0; general < 2; general++) {
        struct ml_request req;
        struct ml_result res;
        struct ml_error err;
        ml_request_init(&req);
        req.loss = "sigmoid_cross_entropy";
        req.labels = &z.t;
        req.predictions = &x.t;
        req.outputs = general ? ML_OUT_LOSS | ML_OUT_PER_ELEMENT : ML_OUT_LOSS;
        assert_int_equal(ml_eval(&req, &res, &err), ML_ENONFINITE);
        assert_string_equal(err.field, "labels");
    }
    /* torch 1.13: cross_entropy mean with class weights [-2, 2] over targets [1, 0] divides a
     * positive sum by 0: +inf (NaN only when every kept target has weight 0). */
    double row[4] = {1, 2, 3, -1}, t[2] = {1, 0};
    static struct T tx, tz, tw;
    mk(&tx, 2, 2, 2, 0);
    memcpy(tx.d, row, sizeof(row));
    mk(&tz, 1, 2, 0, 0);
    memcpy(tz.d, t, sizeof(t));
    mk(&tw, 1, 2, 0, 0);
    tw.d[0] = -2;
    tw.d[1] = 2;
    struct ml_request req;
    struct ml_result res;
    ml_request_init(&req);
    req.loss = "cross_entropy";
    req.labels = &tz.t;
    req.logits = &tx.t;
    req.weights = &tw.t;
    run(&req, &res, 0, "cross_entropy");
    assert_true(res.loss == INFINITY);
    ml_result_free(&res);
    /* torch 1.13: pos_weight +inf, label 0.5, logit -800: +inf (not inf * 0 = NaN). */
    struct ml_param pw = {.name = "pos_weight", .kind = ML_PARAM_NUMBER, .number = INFINITY};
    double half = 0.5, x800 = -800;
    assert_true(eval_nf("binary_cross_entropy_with_logits", ML_FLOAT64, 1, &half, &x800, 0, &pw,
                        1) == INFINITY);
}

/* torch cross_entropy, mean, every kept target of class weight 0 and label smoothing: ATen
 * adds (1 - ls) * 0/0 to the smoothing term, NaN (torch 1.13 prints nan), not +inf. */
static void test_torch_ce_zero_weight_nan(void **state)
{
    (void)state;
    static struct T tz, tx, tw;
    double x[6] = {1, 2, 3, 0.5, 0.1, -1};
    mk(&tx, 2, 2, 3, 0);
    memcpy(tx.d, x, sizeof(x));
    mk(&tz, 1, 2, 0, 0);
    tz.d[0] = 0;
    tz.d[1] = 2;
    mk(&tw, 1, 3, 0, 0);
    tw.d[0] = 0;
    tw.d[1] = 1;
    tw.d[2] = 0;
    for (int smoothing = 0; smoothing < 2; smoothing++) {
        struct ml_param ls = {.name = "label_smoothing", .kind = ML_PARAM_NUMBER, .number = 0.1};
        struct ml_request req;
        struct ml_result res;
        ml_request_init(&req);
        req.loss = "cross_entropy";
        req.dtype = ML_FLOAT64;
        req.labels = &tz.t;
        req.logits = &tx.t;
        req.weights = &tw.t;
        req.params = &ls;
        req.num_params = (size_t)smoothing;
        run(&req, &res, 0, "cross_entropy");
        assert_true(isnan(res.loss));
        ml_result_free(&res);
    }
}

static void test_hand_derived(void **state)
{
    (void)state;
    /* x = 0: log 2 whatever the label. */
    assert_float_equal(eval1("sigmoid_cross_entropy", NULL, ML_FLOAT64, 1, 0, 0, NULL, 0),
                       0.69314718055994531, 1e-16);
    /* Huge logits are exact: a correct 1e30 costs 0, a wrong one 1e30. */
    assert_true(eval1("sigmoid_cross_entropy", NULL, ML_FLOAT64, 1, 1e30, 0, NULL, 0) == 0.0);
    assert_true(eval1("sigmoid_cross_entropy", NULL, ML_FLOAT32, 1, -1e30, 0, NULL, 0) ==
                (double)1e30f);
    assert_true(eval1("binary_cross_entropy_with_logits", NULL, ML_FLOAT64, 1, -1e30, 0, NULL, 0) ==
                1e30);
    /* Label smoothing 0.1 on a correct logit of 1e30: z' = 0.95, cost 0.05 * 1e30. */
    struct ml_param ls = {.name = "label_smoothing", .kind = ML_PARAM_NUMBER, .number = 0.1};
    assert_float_equal(eval1("sigmoid_cross_entropy", NULL, ML_FLOAT64, 1, 1e30, 0, &ls, 1), 5e28,
                       5e28 * 1e-15);
    /* log_loss adds epsilon inside the log: p = 1, z = 1 gives -log(1 + 1e-7) < 0. */
    double ll = eval1("log_loss", NULL, ML_FLOAT64, 1, 1, 1, NULL, 0);
    assert_float_equal(ll, -log1p(1e-7), 1e-20);
    /* Keras clipping saturates at -log(1e-7) in float64 and at -log(1 - 0.99999988f) in
     * float32 (1 - 1e-7 rounds to 0.99999988f). */
    assert_float_equal(eval1("binary_crossentropy", "sum", ML_FLOAT64, 1, 0, 1, NULL, 0),
                       16.11809565095832, 1e-12);
    assert_float_equal(eval1("binary_crossentropy", "sum", ML_FLOAT32, 0, 1, 1, NULL, 0),
                       -log(1.0 - (double)(1.0f - 1e-7f)), 2e-5);
    /* Keras 2 adds eps inside the logs: -log(1e-7 + 1e-7) for a saturated wrong positive. */
    assert_float_equal(
        eval1("keras2.losses.BinaryCrossentropy", "sum", ML_FLOAT64, 1, 0, 1, NULL, 0), -log(2e-7),
        1e-12);
    /* Huber at the boundary |e| = delta = 1: 0.5; beyond: 0.5 + (|e| - 1). */
    assert_float_equal(eval1("huber_loss", NULL, ML_FLOAT64, 0, 1, 1, NULL, 0), 0.5, 1e-16);
    assert_float_equal(eval1("huber_loss", NULL, ML_FLOAT64, 0, -3, 1, NULL, 0), 2.5, 1e-16);
    /* Hinge maps {0, 1} to {-1, +1}: z = 0, x = 0.5 costs 1.5. */
    assert_float_equal(eval1("hinge_loss", NULL, ML_FLOAT64, 0, 0.5, 0, NULL, 0), 1.5, 1e-16);
    /* ASL: a wrong positive at x = -88 saturates at -log(1e-8) (gamma_pos = 0). */
    struct ml_param asl[2] = {{.name = "gamma_pos", .kind = ML_PARAM_NUMBER, .number = 0},
                              {.name = "gamma_neg", .kind = ML_PARAM_NUMBER, .number = 0}};
    assert_float_equal(eval1("asymmetric_loss", NULL, ML_FLOAT64, 1, -88, 0, asl, 2), -log(1e-8),
                       1e-10);
    /* Torch focal with gamma 0 and alpha -1 is plain BCE: x = 0 -> log 2. */
    struct ml_param foc[2] = {{.name = "gamma", .kind = ML_PARAM_NUMBER, .number = 0},
                              {.name = "alpha", .kind = ML_PARAM_NUMBER, .number = -1}};
    assert_float_equal(eval1("sigmoid_focal_loss", "sum", ML_FLOAT64, 1, 0, 0, foc, 2),
                       0.69314718055994531, 1e-16);
}

/* ---- Errors ----------------------------------------------------------------------------- */

static void test_errors(void **state)
{
    (void)state;
    static struct T z, x, w;
    mk(&z, 2, 2, 2, 0);
    mk(&x, 2, 2, 2, 0);
    for (int i = 0; i < 4; i++) {
        z.d[i] = i % 2;
        x.d[i] = i;
    }
    struct ml_request req;
    struct ml_result res;
    struct ml_error err;

    ml_request_init(&req);
    req.loss = "sigmoid_crossentropy";
    req.labels = &z.t;
    req.logits = &x.t;
    /* No result to fill, no request: errors, not crashes. */
    assert_int_equal(ml_eval(&req, NULL, &err), ML_EINVAL);
    assert_int_equal(ml_eval(NULL, &res, &err), ML_EINVAL);
    assert_int_equal(ml_eval(&req, &res, &err), ML_EUNKNOWN_LOSS);
    assert_string_equal(err.field, "loss");

    req.loss = "sigmoid_cross_entropy";
    struct ml_param p = {.name = "gamma", .kind = ML_PARAM_NUMBER, .number = 2};
    req.params = &p;
    req.num_params = 1;
    assert_int_equal(ml_eval(&req, &res, &err), ML_EUNKNOWN_PARAM);
    assert_string_equal(err.field, "params.gamma");
    assert_non_null(strstr(err.message, "label_smoothing"));

    p = (struct ml_param){.name = "label_smoothing", .kind = ML_PARAM_BOOL, .boolean = 1};
    assert_int_equal(ml_eval(&req, &res, &err), ML_EPARAM);
    req.num_params = 0;

    req.reduction = "mean_over_everything";
    assert_int_equal(ml_eval(&req, &res, &err), ML_EREDUCTION);
    assert_string_equal(err.field, "reduction");
    req.reduction = "sum_over_batch_size"; /* Keras spelling: TF accepts it case-insensitively */
    assert_int_equal(ml_eval(&req, &res, &err), 0);
    ml_result_free(&res);
    req.reduction = "mean_with_sample_weight"; /* Keras only */
    assert_int_equal(ml_eval(&req, &res, &err), ML_EREDUCTION);
    req.reduction = NULL;

    req.labels = NULL;
    assert_int_equal(ml_eval(&req, &res, &err), ML_EINVAL);
    assert_string_equal(err.field, "labels");
    req.labels = &z.t;
    req.logits = NULL;
    req.predictions = &x.t;
    assert_int_equal(ml_eval(&req, &res, &err), ML_EINVAL);
    assert_string_equal(err.field, "predictions");
    req.predictions = NULL;
    req.logits = &x.t;

    /* Non-finite inputs: rejected with the tensor and the first flat index... */
    x.d[3] = NAN;
    assert_int_equal(ml_eval(&req, &res, &err), ML_ENONFINITE);
    assert_string_equal(err.field, "logits");
    assert_int_equal(err.index, 3);
    /* ...unless allowed, when they propagate (inf - inf = NaN, as upstream). */
    req.allow_non_finite = 1;
    x.d[3] = INFINITY;
    z.d[3] = 1;
    assert_int_equal(ml_eval(&req, &res, &err), 0);
    assert_true(isnan(res.loss));
    ml_result_free(&res);
    req.allow_non_finite = 0;
    x.d[3] = 1e300; /* finite in float64, infinite in float32 */
    assert_int_equal(ml_eval(&req, &res, &err), ML_ENONFINITE);
    assert_non_null(strstr(err.message, "float32"));
    x.d[3] = 3;

    req.max_elements = 3;
    assert_int_equal(ml_eval(&req, &res, &err), ML_ETOOLARGE);
    req.max_elements = 0;

    z.t.rank = 9;
    assert_int_equal(ml_eval(&req, &res, &err), ML_ETENSOR);
    z.t.rank = 2;

    req.outputs = ML_OUT_PER_SAMPLE;
    req.reduction = "none";
    assert_int_equal(ml_eval(&req, &res, &err), ML_EOUTPUT);
    req.reduction = NULL;
    req.loss = "softmax_cross_entropy";
    req.outputs = ML_OUT_PER_CLASS;
    assert_int_equal(ml_eval(&req, &res, &err), ML_EOUTPUT);
    req.outputs = 0;

    req.loss = "tf.nn.weighted_cross_entropy_with_logits";
    assert_int_equal(ml_eval(&req, &res, &err), ML_EPARAM); /* pos_weight is required */
    assert_non_null(strstr(err.message, "pos_weight"));

    req.loss = "compute_weighted_loss";
    assert_int_equal(ml_eval(&req, &res, &err), ML_EINVAL); /* takes losses, no labels */

    req.loss = "sigmoid_cross_entropy";
    req.weights = mk(&w, 1, 2, 0, 0);
    w.d[0] = w.d[1] = 1;
    assert_int_equal(ml_eval(&req, &res, &err), ML_EBROADCAST);
    assert_string_equal(err.field, "weights");
    assert_non_null(strstr(err.message, "weights.rank=1"));
}

/* ---- Accuracy --------------------------------------------------------------------------- */

/* 1M float32 elements, masked sigmoid cross-entropy: within 1e-8 relative of a long-double
 * evaluation of the same float32 inputs (a float32 running sum is ~1e-3 off here). */
static void test_accuracy_1m(void **state)
{
    (void)state;
    const int64_t n = 1 << 20, c = 16;
    float *z = malloc((size_t)n * sizeof(float));
    float *x = malloc((size_t)n * sizeof(float));
    float *m = malloc((size_t)n * sizeof(float));
    assert_non_null(z);
    assert_non_null(x);
    assert_non_null(m);
    ld want = ref_masked_sce_inputs(7, n, z, x, m);
    struct ml_tensor tz = {2, {n / c, c}, ML_FLOAT32, z};
    struct ml_tensor tx = tz, tm = tz;
    tx.data = x;
    tm.data = m;
    for (int dt = 0; dt < 2; dt++) {
        struct ml_request req;
        struct ml_result res;
        ml_request_init(&req);
        req.loss = "sigmoid_cross_entropy";
        req.dtype = dt ? ML_FLOAT64 : ML_FLOAT32;
        req.labels = &tz;
        req.logits = &tx;
        req.weights = &tm;
        run(&req, &res, 0, "accuracy");
        ld rel = fabsl((ld)res.loss - want) / want;
        print_message("accuracy, 1M elements %s: relative error %.3Lg\n",
                      dt ? "float64" : "float32", rel);
        assert_true(rel <= (dt ? 1e-13L : 1e-8L));
        ml_result_free(&res);
    }
    free(z);
    free(x);
    free(m);
}

/* An empty class axis: the softmax family sums nothing (and must not read logits[0]). */
static void test_empty_class_axis(void **state)
{
    (void)state;
    static struct T y, x;
    const char *losses[] = {"softmax_cross_entropy", "cross_entropy", "categorical_crossentropy"};
    for (int i = 0; i < 3; i++) {
        struct ml_request req;
        struct ml_result res;
        ml_request_init(&req);
        req.loss = losses[i];
        req.labels = mk(&y, 2, 2, 0, 0);
        req.logits = mk(&x, 2, 2, 0, 0); /* Keras: `logits` implies from_logits */
        run(&req, &res, 0, losses[i]);
        assert_true(res.loss == 0.0);
        ml_result_free(&res);
    }
}

/* The catalogue: names resolve, aliases share their target's rules, defaults are sane. */
static void test_catalogue(void **state)
{
    (void)state;
    assert_true(ml_loss_count() >= 30);
    for (size_t i = 0; i < ml_loss_count(); i++) {
        const struct ml_loss_info *l = ml_loss_at(i);
        assert_ptr_equal(ml_loss_find(l->name), l);
        if (l->alias_of) {
            const struct ml_loss_info *t = ml_loss_find(l->alias_of);
            assert_non_null(t);
            assert_string_equal(t->default_reduction, l->default_reduction);
            assert_int_equal(t->num_params, l->num_params);
        }
    }
    assert_string_equal(ml_loss_find("sigmoid_cross_entropy")->default_reduction,
                        "SUM_BY_NONZERO_WEIGHTS");
    assert_null(ml_loss_find("nope"));
    assert_null(ml_loss_at(ml_loss_count()));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tf_elementwise_random),
        cmocka_unit_test(test_tf_weight_shapes),
        cmocka_unit_test(test_torch_bce_random),
        cmocka_unit_test(test_focal_asl_random),
        cmocka_unit_test(test_tf_softmax_random),
        cmocka_unit_test(test_torch_ce_random),
        cmocka_unit_test(test_keras_random),
        cmocka_unit_test(test_note_identity),
        cmocka_unit_test(test_hand_derived),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_accuracy_1m),
        cmocka_unit_test(test_catalogue),
        cmocka_unit_test(test_empty_class_axis),
        cmocka_unit_test(test_small_losses_exact),
        cmocka_unit_test(test_torch_ce_zero_weight_nan),
        cmocka_unit_test(test_framework_edges),
        cmocka_unit_test(test_review_findings),
    };
    return cmocka_run_group_tests_name("losses", tests, NULL, NULL);
}
