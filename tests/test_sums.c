/*
 * test_sums.c -- the mergeable sums (ML_OUT_SUMS, ML_OUT_CLASS_SUMS, ml_sums_add,
 * ml_reduction_ratio, ml_sums_loss): every field against a long-double reference (ref.h),
 * the denominator of each reduction family, the loss of a request split into row blocks and
 * merged against ml_eval of the whole, zero denominators, and the errors.
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

/* The shared inputs: NR rows of NC classes. Every value is a float32 number stored in both
 * precisions, so a float32 and a float64 request see the same inputs and one reference. */
#define NR 9
#define NC 5
#define ZERO_CLASS 3 /* a class whose mask is all zeros */
#define ZERO_ROW 2   /* a row whose mask is all zeros */

static double Y[NR * NC], X[NR * NC], W[NR * NC], SW[NR], CW[NC];
static float Yf[NR * NC], Xf[NR * NC], Wf[NR * NC], SWf[NR], CWf[NC];
static int64_t TGT[NR];

static double as_float(double v)
{
    return (double)(float)v;
}

static int setup(void **state)
{
    (void)state;
    struct rng r = {0x5eed5a11ab1e0001ULL};
    static const double wvals[] = {1, 0.5, 2, 1.25};
    for (int i = 0; i < NR * NC; i++) {
        int row = i / NC, col = i % NC;
        Y[i] = rng_int(&r, 0, 4) ? rng_int(&r, 0, 1) : 0.25;
        X[i] = as_float(rng_uniform(&r, -4, 4));
        W[i] = rng_uniform(&r, 0, 1) < 0.35 || col == ZERO_CLASS || row == ZERO_ROW
                   ? 0.0
                   : wvals[rng_int(&r, 0, 3)];
        Yf[i] = (float)Y[i];
        Xf[i] = (float)X[i];
        Wf[i] = (float)W[i];
    }
    for (int i = 0; i < NR; i++) {
        SW[i] = rng_int(&r, 0, 3) ? as_float(rng_uniform(&r, 0.1, 2)) : 0.0;
        SWf[i] = (float)SW[i];
        TGT[i] = rng_int(&r, 0, NC - 1);
    }
    TGT[0] = 2; /* a target of class weight 0 */
    static const double cw[NC] = {0.5, 2, 0, 1.5, 1};
    for (int c = 0; c < NC; c++) {
        CW[c] = cw[c];
        CWf[c] = (float)cw[c];
    }
    return 0;
}

/* ---- Families of reductions and their reference -------------------------------------- */

enum kind {
    K_ELEM,  /* TF sigmoid_cross_entropy / torch BCE with logits: [N, C], weights [N, C] */
    K_ROWW,  /* the same with weights [N, 1], broadcast along the classes */
    K_KERAS, /* keras3 BinaryCrossentropy from logits: per sample, sample_weight [N] */
    K_CE     /* torch cross_entropy: class-index targets [N], class weights [C] */
};

/* What each element adds to the denominator. */
enum den { D_NONZERO, D_WEIGHTS, D_COUNT, D_TARGET_WEIGHT };

struct family {
    const char *loss;
    const char *reduction;
    enum kind kind;
    enum den den;
    int divides; /* 0: the loss is the weighted sum */
    int plain;   /* torch: x / 0 divides plainly */
};

static const struct family families[] = {
    {"sigmoid_cross_entropy", "SUM_BY_NONZERO_WEIGHTS", K_ELEM, D_NONZERO, 1, 0},
    {"sigmoid_cross_entropy", "MEAN", K_ELEM, D_WEIGHTS, 1, 0},
    {"sigmoid_cross_entropy", "SUM_OVER_BATCH_SIZE", K_ELEM, D_COUNT, 1, 0},
    /* sum: the denominator is the element count (the loss does not use it) */
    {"sigmoid_cross_entropy", "SUM", K_ELEM, D_COUNT, 0, 0},
    {"sigmoid_cross_entropy", "SUM_BY_NONZERO_WEIGHTS", K_ROWW, D_NONZERO, 1, 0},
    {"sigmoid_cross_entropy", "MEAN", K_ROWW, D_WEIGHTS, 1, 0},
    {"keras3.losses.BinaryCrossentropy", "sum_over_batch_size", K_KERAS, D_COUNT, 1, 0},
    /* Keras divides by the sum of sample_weight as given: [N] here, so sum(w) */
    {"keras3.losses.BinaryCrossentropy", "mean_with_sample_weight", K_KERAS, D_WEIGHTS, 1, 0},
    {"torch.nn.functional.binary_cross_entropy_with_logits", "mean", K_ELEM, D_COUNT, 1, 1},
    {"torch.nn.functional.cross_entropy", "mean", K_CE, D_TARGET_WEIGHT, 1, 1},
};
#define NFAM (sizeof(families) / sizeof(families[0]))

struct rsums {
    ld ws, den, sw, nz, sq, elements, samples;
};

static void ref_add(struct rsums *s, ld l, ld w, ld d)
{
    s->ws += w * l;
    s->den += d;
    s->sw += w;
    s->nz += w != 0;
    s->sq += w * l * l;
    s->elements += 1;
}

static ld ref_den(enum den den, ld w)
{
    return den == D_NONZERO ? (w != 0) : den == D_WEIGHTS ? w : 1;
}

/* The sums of rows [r0, r0 + nr) of a family; cls >= 0: of that class alone (K_ELEM). */
static struct rsums ref_sums(const struct family *f, int r0, int nr, int cls)
{
    struct rsums s;
    memset(&s, 0, sizeof(s));
    for (int i = r0; i < r0 + nr; i++) {
        if (f->kind == K_ELEM || f->kind == K_ROWW) {
            for (int j = 0; j < NC; j++) {
                if (cls >= 0 && j != cls)
                    continue;
                ld w = f->kind == K_ROWW ? SW[i] : W[i * NC + j];
                ref_add(&s, ref_bce_logits(Y[i * NC + j], X[i * NC + j], 1), w, ref_den(f->den, w));
            }
        } else if (f->kind == K_KERAS) {
            ld l = 0;
            for (int j = 0; j < NC; j++)
                l += ref_bce_logits(Y[i * NC + j], X[i * NC + j], 1);
            ref_add(&s, l / NC, SW[i], ref_den(f->den, SW[i]));
        } else {
            /* The weight of a sample is its target's class weight w[y] (maskloss.h), its
             * loss the negative log-likelihood, its denominator w[y]. */
            ld wy = CW[TGT[i]];
            ref_add(&s, -ref_log_softmax(X + i * NC, NC, (int)TGT[i]), wy, wy);
        }
    }
    s.samples = nr;
    return s;
}

static ld ref_loss(const struct family *f, const struct rsums *s)
{
    if (!f->divides)
        return s->ws;
    if (s->den == 0 && !f->plain)
        return 0;
    if (s->den == 0 && f->kind == K_CE && s->nz == 0)
        return NAN;
    return s->ws / s->den;
}

/* ---- Requests over row blocks of the shared inputs ----------------------------------- */

struct inputs {
    struct ml_tensor y, x, w;
};

static void set_tensor(struct ml_tensor *t, enum ml_dtype dt, const void *data, int rank,
                       int64_t d0, int64_t d1)
{
    memset(t, 0, sizeof(*t));
    t->rank = rank;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->dtype = dt;
    t->data = data;
}

/* The request of rows [r0, r0 + nr) of a family, in precision dt. */
static void build(struct ml_request *req, struct inputs *in, const struct family *f,
                  enum ml_dtype dt, int r0, int nr)
{
    const int f32 = dt == ML_FLOAT32;
    ml_request_init(req);
    req->loss = f->loss;
    req->reduction = f->reduction;
    req->dtype = dt;
    set_tensor(&in->x, dt, f32 ? (const void *)(Xf + r0 * NC) : (const void *)(X + r0 * NC), 2, nr,
               NC);
    if (f->kind == K_CE) {
        set_tensor(&in->y, ML_INT64, TGT + r0, 1, nr, 0);
        set_tensor(&in->w, dt, f32 ? (const void *)CWf : (const void *)CW, 1, NC, 0);
    } else {
        set_tensor(&in->y, dt, f32 ? (const void *)(Yf + r0 * NC) : (const void *)(Y + r0 * NC), 2,
                   nr, NC);
        if (f->kind == K_KERAS || f->kind == K_ROWW)
            set_tensor(&in->w, dt, f32 ? (const void *)(SWf + r0) : (const void *)(SW + r0),
                       f->kind == K_ROWW ? 2 : 1, nr, 1);
        else
            set_tensor(&in->w, dt, f32 ? (const void *)(Wf + r0 * NC) : (const void *)(W + r0 * NC),
                       2, nr, NC);
    }
    req->labels = &in->y;
    req->logits = &in->x;
    req->weights = &in->w;
}

/* Runs a request; fails the test unless the status is `expect`. */
static int run(const struct ml_request *req, struct ml_result *res, int expect, const char *ctx)
{
    struct ml_error err;
    int rc = ml_eval(req, res, &err);
    if (rc != expect)
        fail_msg("%s: status %d (%s), expected %d; message: %s (field %s)", ctx, rc,
                 ml_status_name(rc), expect, rc ? err.message : "", rc ? err.field : "");
    return rc;
}

static struct ml_ratio ratio_of(const char *loss, const char *reduction)
{
    struct ml_ratio r;
    struct ml_error err;
    int rc = ml_reduction_ratio(loss, reduction, &r, &err);
    if (rc)
        fail_msg("ml_reduction_ratio(%s, %s): %d %s", loss, reduction ? reduction : "NULL", rc,
                 err.message);
    return r;
}

/* ---- Comparisons ------------------------------------------------------------------- */

static void check_close(ld want, double got, double rtol, double atol, const char *ctx,
                        const char *what, int i)
{
    if (isnan(want) && isnan(got))
        return;
    if (isinf(want) && (ld)got == want)
        return;
    if (!(fabsl((ld)got - want) <= atol + rtol * fabsl(want)))
        fail_msg("%s: %s [%d]: got %.17g, want %.17Lg (diff %.3Lg)", ctx, what, i, got, want,
                 fabsl((ld)got - want));
}

/* Counts are exact. */
static void check_count(ld want, double got, const char *ctx, const char *what, int i)
{
    if ((ld)got != want)
        fail_msg("%s: %s [%d]: got %.17g, want %.0Lf", ctx, what, i, got, want);
}

static void check_sums(const struct rsums *want, const struct ml_sums *got, enum ml_dtype dt,
                       int check_sq, const char *ctx, int i)
{
    /* float32: the pointwise loss is computed in float32 (a few ulp, 6e-8 each). */
    double rtol = dt == ML_FLOAT32 ? 2e-6 : 1e-13;
    double atol = dt == ML_FLOAT32 ? 1e-6 : 1e-14;
    check_close(want->ws, got->weighted_sum, rtol, atol, ctx, "weighted_sum", i);
    check_close(want->den, got->denominator, 1e-15, 0, ctx, "denominator", i);
    check_close(want->sw, got->sum_weights, 1e-15, 0, ctx, "sum_weights", i);
    if (check_sq)
        check_close(want->sq, got->sum_sq, rtol, atol, ctx, "sum_sq", i);
    check_count(want->nz, got->num_nonzero_weights, ctx, "num_nonzero_weights", i);
    check_count(want->elements, got->elements, ctx, "elements", i);
    check_count(want->samples, got->samples, ctx, "samples", i);
}

/* Two evaluations of the same quantity by different paths: 1e-12 relative, NaN for NaN,
 * the same infinity. */
static void check_same(double want, double got, const char *ctx, const char *what, int i)
{
    if (isnan(want) && isnan(got))
        return;
    if (isinf(want) && got == want)
        return;
    if (!(fabs(got - want) <= 1e-12 * fabs(want)))
        fail_msg("%s: %s [%d]: got %.17g, the other path %.17g", ctx, what, i, got, want);
}

static const char *dtype_tag(enum ml_dtype dt)
{
    return dt == ML_FLOAT32 ? "float32" : "float64";
}

/* ---- 1. TF sigmoid_cross_entropy, SUM_BY_NONZERO_WEIGHTS: every field ------------------- */

static void test_tf_sums_fields(void **state)
{
    (void)state;
    const struct family *f = &families[0];
    for (int p = 0; p < 2; p++) {
        enum ml_dtype dt = p ? ML_FLOAT64 : ML_FLOAT32;
        char ctx[96];
        snprintf(ctx, sizeof(ctx), "tf sce SUM_BY_NONZERO_WEIGHTS %s", dtype_tag(dt));
        struct ml_request req;
        struct inputs in;
        struct ml_result res;
        build(&req, &in, f, dt, 0, NR);
        req.outputs = ML_OUT_LOSS | ML_OUT_SUMS | ML_OUT_CLASS_SUMS | ML_OUT_PER_CLASS;
        run(&req, &res, 0, ctx);
        assert_true(res.outputs & ML_OUT_SUMS);
        assert_true(res.outputs & ML_OUT_CLASS_SUMS);
        assert_string_equal(res.reduction_name, "SUM_BY_NONZERO_WEIGHTS");

        struct rsums want = ref_sums(f, 0, NR, -1);
        /* The mask has zeros, weights other than 1, a zero row and a zero class: the three
         * candidate denominators differ. */
        assert_true(want.nz < want.elements && want.nz != want.sw);
        check_sums(&want, &res.sums, dt, f->kind != K_CE, ctx, -1);
        check_close(want.nz, res.sums.denominator, 0, 0, ctx, "denominator = nonzero", -1);
        double rtol = dt == ML_FLOAT32 ? 2e-6 : 1e-13;
        check_close(ref_loss(f, &want), res.loss, rtol, 0, ctx, "loss", -1);

        assert_int_equal(res.num_classes, NC);
        assert_non_null(res.class_sums);
        assert_int_equal(res.per_class.numel, NC);
        for (int c = 0; c < NC; c++) {
            struct rsums wc = ref_sums(f, 0, NR, c);
            check_sums(&wc, &res.class_sums[c], dt, 1, ctx, c);
            check_close(ref_loss(f, &wc), res.per_class.data[c], rtol, 1e-300, ctx, "per_class", c);
        }
        /* The masked class: nothing to divide by, and TF's div_no_nan gives 0. */
        assert_true(res.class_sums[ZERO_CLASS].denominator == 0);
        assert_true(res.class_sums[ZERO_CLASS].weighted_sum == 0);
        assert_true(res.per_class.data[ZERO_CLASS] == 0);
        ml_result_free(&res);
        assert_null(res.class_sums);

        /* Not asked for: the sums are zero and there are no class sums. */
        req.outputs = ML_OUT_LOSS | ML_OUT_PER_ELEMENT;
        run(&req, &res, 0, ctx);
        struct ml_sums zero;
        memset(&zero, 0, sizeof(zero));
        assert_memory_equal(&res.sums, &zero, sizeof(zero));
        assert_null(res.class_sums);
        assert_false(res.outputs & (ML_OUT_SUMS | ML_OUT_CLASS_SUMS));
        ml_result_free(&res);
    }
}

/* Hand-derived: labels [1, 0], logits [0, 0] (log 2 each), mask [1, 0], one row. */
static void test_hand_derived(void **state)
{
    (void)state;
    const double z[2] = {1, 0}, x[2] = {0, 0}, m[2] = {1, 0};
    struct ml_tensor tz, tx, tm;
    set_tensor(&tz, ML_FLOAT64, z, 1, 2, 0);
    set_tensor(&tx, ML_FLOAT64, x, 1, 2, 0);
    set_tensor(&tm, ML_FLOAT64, m, 1, 2, 0);
    struct ml_request req;
    struct ml_result res;
    ml_request_init(&req);
    req.loss = "sigmoid_cross_entropy";
    req.dtype = ML_FLOAT64;
    req.labels = &tz;
    req.logits = &tx;
    req.weights = &tm;
    req.outputs = ML_OUT_SUMS | ML_OUT_CLASS_SUMS;
    run(&req, &res, 0, "hand");
    const double ln2 = 0.69314718055994530942;
    assert_float_equal(res.sums.weighted_sum, ln2, 1e-16);
    assert_true(res.sums.denominator == 1);
    assert_true(res.sums.sum_weights == 1);
    assert_true(res.sums.num_nonzero_weights == 1);
    assert_float_equal(res.sums.sum_sq, ln2 * ln2, 1e-16);
    assert_true(res.sums.elements == 2);
    assert_true(res.sums.samples == 1);
    assert_float_equal(res.loss, ln2, 1e-16);
    assert_int_equal(res.num_classes, 2);
    assert_float_equal(res.class_sums[0].weighted_sum, ln2, 1e-16);
    assert_true(res.class_sums[0].denominator == 1 && res.class_sums[0].elements == 1);
    assert_true(res.class_sums[0].samples == 1);
    assert_true(res.class_sums[1].weighted_sum == 0 && res.class_sums[1].denominator == 0);
    assert_true(res.class_sums[1].sum_sq == 0 && res.class_sums[1].num_nonzero_weights == 0);
    assert_true(res.class_sums[1].elements == 1 && res.class_sums[1].samples == 1);
    ml_result_free(&res);

    /* ml_sums_add adds field by field. */
    struct ml_sums a = {1, 2, 3, 4, 5, 6, 7}, b = {0.5, -1, 10, 1, 0.25, 2, 1};
    ml_sums_add(&a, &b);
    const struct ml_sums want = {1.5, 1, 13, 5, 5.25, 8, 8};
    assert_memory_equal(&a, &want, sizeof(a));
}

/* ---- 2. The denominator of each reduction family ------------------------------------- */

static void test_family_denominators(void **state)
{
    (void)state;
    for (size_t fi = 0; fi < NFAM; fi++) {
        const struct family *f = &families[fi];
        for (int p = 0; p < 2; p++) {
            enum ml_dtype dt = p ? ML_FLOAT64 : ML_FLOAT32;
            char ctx[160];
            snprintf(ctx, sizeof(ctx), "%s %s %s", f->loss, f->reduction, dtype_tag(dt));
            struct ml_request req;
            struct inputs in;
            struct ml_result res;
            build(&req, &in, f, dt, 0, NR);
            req.outputs = ML_OUT_LOSS | ML_OUT_SUMS;
            const int elem = f->kind == K_ELEM || f->kind == K_ROWW;
            if (elem)
                req.outputs |= ML_OUT_CLASS_SUMS;
            run(&req, &res, 0, ctx);
            struct rsums want = ref_sums(f, 0, NR, -1);
            check_sums(&want, &res.sums, dt, f->kind != K_CE, ctx, -1);
            double rtol = dt == ML_FLOAT32 ? 2e-6 : 1e-13;
            check_close(ref_loss(f, &want), res.loss, rtol, 0, ctx, "loss", -1);

            /* The ratio turns the sums into the loss ml_eval gave. */
            struct ml_ratio r = ratio_of(f->loss, f->reduction);
            assert_int_equal(r.divides, f->divides);
            assert_int_equal(r.plain_division, f->plain);
            assert_int_equal(r.unweighted_is_nan, f->kind == K_CE);
            assert_int_equal(r.elementwise, f->kind == K_ELEM || f->kind == K_ROWW);
            check_same(res.loss, ml_sums_loss(&r, &res.sums), ctx, "ml_sums_loss", -1);

            if (elem) {
                assert_int_equal(res.num_classes, NC);
                for (int c = 0; c < NC; c++) {
                    struct rsums wc = ref_sums(f, 0, NR, c);
                    check_sums(&wc, &res.class_sums[c], dt, 1, ctx, c);
                }
            } else {
                assert_null(res.class_sums);
            }
            ml_result_free(&res);
        }
    }
}

/* torch cross_entropy's sum_sq is sum(w[y] * nll^2), the weight times the loss squared as for
 * every other loss (and what a weighted variance needs: sum_sq / sum_weights - mean^2), not
 * the square of the weighted value (w[y] nll)^2. Hand-derived: logits [[1, 2, 3], [0.5, 0.1,
 * -1]], targets [0, 2], class weights [2, 1, 3]. */
static void test_torch_ce_sum_sq(void **state)
{
    (void)state;
    static const double x[6] = {1, 2, 3, 0.5, 0.1, -1}, cw[3] = {2, 1, 3};
    static const int64_t t[2] = {0, 2};
    struct ml_tensor tt, tx, tw;
    set_tensor(&tt, ML_INT64, t, 1, 2, 0);
    set_tensor(&tx, ML_FLOAT64, x, 2, 2, 3);
    set_tensor(&tw, ML_FLOAT64, cw, 1, 3, 0);
    struct ml_request req;
    struct ml_result res;
    ml_request_init(&req);
    req.loss = "cross_entropy";
    req.dtype = ML_FLOAT64;
    req.labels = &tt;
    req.logits = &tx;
    req.weights = &tw;
    req.outputs = ML_OUT_LOSS | ML_OUT_SUMS;
    run(&req, &res, 0, "torch ce sum_sq");
    /* nll0 = log(e + e^2 + e^3) - 1, nll1 = log(e^0.5 + e^0.1 + e^-1) + 1 */
    ld nll0 = logl(expl(1) + expl(2) + expl(3)) - 1;
    ld nll1 = logl(expl(0.5L) + expl(0.1L) + expl(-1)) + 1;
    check_close(2 * nll0 + 3 * nll1, res.sums.weighted_sum, 1e-14, 0, "torch ce", "ws", -1);
    check_close(5, res.sums.denominator, 0, 0, "torch ce", "denominator", -1);
    check_close(5, res.sums.sum_weights, 0, 0, "torch ce", "sum_weights", -1);
    check_close((2 * nll0 + 3 * nll1) / 5, res.loss, 1e-14, 0, "torch ce", "loss", -1);
    check_close(2 * nll0 * nll0 + 3 * nll1 * nll1, res.sums.sum_sq, 1e-14, 0, "torch ce",
                "sum_sq = sum w[y] nll^2", -1);
    ml_result_free(&res);

    /* And on the shared inputs (class weights with a 0, several classes). */
    const struct family *f = &families[NFAM - 1];
    assert_int_equal(f->kind, K_CE);
    for (int p = 0; p < 2; p++) {
        enum ml_dtype dt = p ? ML_FLOAT64 : ML_FLOAT32;
        struct inputs in;
        build(&req, &in, f, dt, 0, NR);
        req.outputs = ML_OUT_SUMS;
        run(&req, &res, 0, "torch ce shared");
        struct rsums want = ref_sums(f, 0, NR, -1);
        check_sums(&want, &res.sums, dt, 1, "torch ce shared", -1);
        ml_result_free(&res);
    }
}

/* ---- 3. Row blocks merged give the whole ------------------------------------------- */

static void merge_case(const struct family *f, enum ml_dtype dt, int split)
{
    char ctx[192];
    snprintf(ctx, sizeof(ctx), "%s %s %s split %d", f->loss, f->reduction, dtype_tag(dt), split);
    const int elem = f->kind == K_ELEM || f->kind == K_ROWW;
    struct ml_ratio r = ratio_of(f->loss, f->reduction);
    struct ml_sums total, classes[NC];
    memset(&total, 0, sizeof(total));
    memset(classes, 0, sizeof(classes));

    const int r0[2] = {0, split}, nr[2] = {split, NR - split};
    for (int b = 0; b < 2; b++) {
        struct ml_request req;
        struct inputs in;
        struct ml_result res;
        build(&req, &in, f, dt, r0[b], nr[b]);
        req.outputs = ML_OUT_SUMS | (elem ? ML_OUT_CLASS_SUMS : 0);
        run(&req, &res, 0, ctx);
        assert_true(res.outputs & ML_OUT_SUMS);
        assert_true(res.sums.samples == nr[b]);
        ml_sums_add(&total, &res.sums);
        if (elem) {
            assert_true(res.outputs & ML_OUT_CLASS_SUMS);
            assert_int_equal(res.num_classes, NC);
            for (int c = 0; c < NC; c++)
                ml_sums_add(&classes[c], &res.class_sums[c]);
        }
        ml_result_free(&res);
    }

    /* The whole, asking only what a plain caller asks (it may take the fused path). */
    struct ml_request req;
    struct inputs in;
    struct ml_result whole;
    build(&req, &in, f, dt, 0, NR);
    req.outputs = ML_OUT_LOSS | (elem ? ML_OUT_PER_CLASS : 0);
    run(&req, &whole, 0, ctx);
    assert_true(total.samples == NR);
    assert_true(total.elements == (elem ? NR * NC : NR));
    check_same(whole.loss, ml_sums_loss(&r, &total), ctx, "loss", -1);
    if (elem) {
        assert_true(whole.outputs & ML_OUT_PER_CLASS);
        assert_int_equal(whole.per_class.numel, NC);
        for (int c = 0; c < NC; c++)
            check_same(whole.per_class.data[c], ml_sums_loss(&r, &classes[c]), ctx, "per_class", c);
    }
    ml_result_free(&whole);
}

/* A block of no rows (an empty window) has zero sums and merges as nothing. */
static void test_empty_block(void **state)
{
    (void)state;
    for (size_t fi = 0; fi < NFAM; fi++) {
        const struct family *f = &families[fi];
        const int elem = f->kind == K_ELEM || f->kind == K_ROWW;
        char ctx[160];
        snprintf(ctx, sizeof(ctx), "%s %s, no rows", f->loss, f->reduction);
        struct ml_request req;
        struct inputs in;
        struct ml_result res;
        build(&req, &in, f, ML_FLOAT64, NR, 0);
        req.outputs = ML_OUT_SUMS | (elem ? ML_OUT_CLASS_SUMS : 0);
        run(&req, &res, 0, ctx);
        struct ml_sums zero;
        memset(&zero, 0, sizeof(zero));
        assert_memory_equal(&res.sums, &zero, sizeof(zero));
        if (elem) {
            assert_int_equal(res.num_classes, NC);
            for (int c = 0; c < NC; c++)
                assert_memory_equal(&res.class_sums[c], &zero, sizeof(zero));
        }
        ml_result_free(&res);
        merge_case(f, ML_FLOAT64, 0);
        merge_case(f, ML_FLOAT64, NR);
    }
}

static void test_merge(void **state)
{
    (void)state;
    static const int splits[] = {1, 4, 8};
    for (size_t fi = 0; fi < NFAM; fi++)
        for (int p = 0; p < 2; p++)
            for (size_t s = 0; s < sizeof(splits) / sizeof(splits[0]); s++)
                merge_case(&families[fi], p ? ML_FLOAT64 : ML_FLOAT32, splits[s]);
}

/* ---- 4. Zero denominators ----------------------------------------------------------- */

/* ml_eval's loss of a request against ml_sums_loss of its own sums and of zero sums. */
static double zero_case(const struct ml_request *req0, const char *ctx, double zero_sums_want)
{
    struct ml_request req = *req0;
    struct ml_result res;
    req.outputs = ML_OUT_LOSS | ML_OUT_SUMS;
    run(&req, &res, 0, ctx);
    struct ml_ratio r = ratio_of(req.loss, req.reduction);
    assert_true(res.sums.denominator == 0);
    check_same(res.loss, ml_sums_loss(&r, &res.sums), ctx, "real sums", -1);
    struct ml_sums zero;
    memset(&zero, 0, sizeof(zero));
    check_same(zero_sums_want, ml_sums_loss(&r, &zero), ctx, "zero sums", -1);
    double loss = res.loss;
    ml_result_free(&res);
    /* The plain request (perhaps the fused path) agrees. */
    req.outputs = ML_OUT_LOSS;
    run(&req, &res, 0, ctx);
    check_same(loss, res.loss, ctx, "plain request", -1);
    ml_result_free(&res);
    return loss;
}

static void test_zero_denominators(void **state)
{
    (void)state;
    static const double z[6] = {1, 0, 1, 0, 1, 1}, x[6] = {0.5, -1, 2, 0.25, -3, 1};
    static const double zeros[6] = {0};
    struct ml_tensor tz, tx, tw;
    struct ml_request req;

    /* TF: an all-zero mask divides by no element; divide_no_nan gives 0. */
    set_tensor(&tz, ML_FLOAT64, z, 2, 2, 3);
    set_tensor(&tx, ML_FLOAT64, x, 2, 2, 3);
    set_tensor(&tw, ML_FLOAT64, zeros, 2, 2, 3);
    ml_request_init(&req);
    req.loss = "sigmoid_cross_entropy";
    req.reduction = "SUM_BY_NONZERO_WEIGHTS";
    req.dtype = ML_FLOAT64;
    req.labels = &tz;
    req.logits = &tx;
    req.weights = &tw;
    assert_true(zero_case(&req, "tf nonzero, zero mask", 0.0) == 0.0);
    req.reduction = "MEAN";
    assert_true(zero_case(&req, "tf mean, zero mask", 0.0) == 0.0);
    /* Weights of both signs summing to 0: TF's MEAN still gives 0. */
    static const double pm[6] = {1, -1, 0, 0, 0, 0};
    set_tensor(&tw, ML_FLOAT64, pm, 2, 2, 3);
    assert_true(zero_case(&req, "tf mean, weights summing to 0", 0.0) == 0.0);

    /* torch BCE mean over no element: 0/0, NaN; an empty block merges as nothing. */
    set_tensor(&tz, ML_FLOAT64, z, 2, 0, 3);
    set_tensor(&tx, ML_FLOAT64, x, 2, 0, 3);
    ml_request_init(&req);
    req.loss = "binary_cross_entropy_with_logits";
    req.reduction = "mean";
    req.dtype = ML_FLOAT64;
    req.labels = &tz;
    req.logits = &tx;
    assert_true(isnan(zero_case(&req, "torch bce mean, empty", NAN)));
    req.reduction = "sum";
    assert_true(zero_case(&req, "torch bce sum, empty", 0.0) == 0.0);

    /* torch cross_entropy mean, every target of class weight 0: NaN, also with label
     * smoothing, whose numerator is not 0 (ATen adds (1 - ls) * 0/0). */
    static const double cx[6] = {1, 2, 3, 0.5, 0.1, -1};
    static const int64_t tgt[2] = {0, 2};
    static const double cw[3] = {0, 1, 0};
    struct ml_tensor tt, tcw;
    set_tensor(&tt, ML_INT64, tgt, 1, 2, 0);
    set_tensor(&tx, ML_FLOAT64, cx, 2, 2, 3);
    set_tensor(&tcw, ML_FLOAT64, cw, 1, 3, 0);
    struct ml_param ls = {.name = "label_smoothing", .kind = ML_PARAM_NUMBER, .number = 0.1};
    ml_request_init(&req);
    req.loss = "cross_entropy";
    req.reduction = "mean";
    req.dtype = ML_FLOAT64;
    req.labels = &tt;
    req.logits = &tx;
    req.weights = &tcw;
    assert_true(isnan(zero_case(&req, "torch ce mean, zero target weights", NAN)));
    req.params = &ls;
    req.num_params = 1;
    assert_true(isnan(zero_case(&req, "torch ce mean, zero target weights, smoothing", NAN)));
    req.params = NULL;
    req.num_params = 0;
    /* ... but class weights [-2, 2] over targets [1, 0] sum to 0 with weights present:
     * a plain division, +inf (torch 1.13). */
    static const double row[4] = {1, 2, 3, -1};
    static const int64_t tgt2[2] = {1, 0};
    static const double cw2[2] = {-2, 2};
    set_tensor(&tt, ML_INT64, tgt2, 1, 2, 0);
    set_tensor(&tx, ML_FLOAT64, row, 2, 2, 2);
    set_tensor(&tcw, ML_FLOAT64, cw2, 1, 2, 0);
    assert_true(zero_case(&req, "torch ce mean, weights summing to 0", NAN) == INFINITY);

    /* Keras sum_over_batch_size divides by the samples: zero sample weights give 0, and
     * zero sums divide_no_nan to 0. */
    static const double sw0[2] = {0, 0};
    static const double kz[6] = {1, 0, 1, 0, 1, 1};
    struct ml_tensor tk, tkx, tsw;
    set_tensor(&tk, ML_FLOAT64, kz, 2, 2, 3);
    set_tensor(&tkx, ML_FLOAT64, x, 2, 2, 3);
    set_tensor(&tsw, ML_FLOAT64, sw0, 1, 2, 0);
    ml_request_init(&req);
    req.loss = "binary_crossentropy";
    req.reduction = "sum_over_batch_size";
    req.dtype = ML_FLOAT64;
    req.labels = &tk;
    req.logits = &tkx;
    req.weights = &tsw;
    req.outputs = ML_OUT_LOSS | ML_OUT_SUMS;
    struct ml_result res;
    run(&req, &res, 0, "keras zero sample weights");
    assert_true(res.loss == 0.0 && res.sums.denominator == 2 && res.sums.weighted_sum == 0);
    struct ml_ratio r = ratio_of(req.loss, req.reduction);
    assert_true(ml_sums_loss(&r, &res.sums) == 0.0);
    ml_result_free(&res);
    struct ml_sums zero;
    memset(&zero, 0, sizeof(zero));
    assert_true(ml_sums_loss(&r, &zero) == 0.0);
}

/* ---- 5. ml_reduction_ratio ------------------------------------------------------------ */

static void expect_ratio_error(const char *loss, const char *reduction, int code, const char *field)
{
    struct ml_ratio r;
    struct ml_error err;
    memset(&r, 0x55, sizeof(r));
    int rc = ml_reduction_ratio(loss, reduction, &r, &err);
    if (rc != code)
        fail_msg("ml_reduction_ratio(%s, %s): %d, expected %d", loss ? loss : "NULL",
                 reduction ? reduction : "NULL", rc, code);
    assert_int_equal(err.code, code);
    assert_string_equal(err.field, field);
    assert_true(err.message[0] != '\0');
    /* Also without an error detail. */
    assert_int_equal(ml_reduction_ratio(loss, reduction, &r, NULL), code);
}

static void test_reduction_ratio(void **state)
{
    (void)state;
    expect_ratio_error("no_such_loss", NULL, ML_EUNKNOWN_LOSS, "loss");
    expect_ratio_error("sigmoid_cross_entropy", "NONE", ML_EREDUCTION, "reduction");
    expect_ratio_error("binary_cross_entropy_with_logits", "none", ML_EREDUCTION, "reduction");
    expect_ratio_error("sigmoid_cross_entropy", "no_such_reduction", ML_EREDUCTION, "reduction");
    expect_ratio_error("binary_cross_entropy_with_logits", "SUM_BY_NONZERO_WEIGHTS", ML_EREDUCTION,
                       "reduction");
    /* tf.nn ops: their own default is none. */
    expect_ratio_error("tf.nn.sigmoid_cross_entropy_with_logits", NULL, ML_EREDUCTION, "reduction");
    expect_ratio_error(NULL, "mean", ML_EINVAL, "loss");
    assert_int_equal(ml_reduction_ratio("sigmoid_cross_entropy", NULL, NULL, NULL), ML_EINVAL);

    /* NULL: the loss's default. */
    struct ml_ratio r = ratio_of("sigmoid_cross_entropy", NULL);
    assert_string_equal(r.reduction, "SUM_BY_NONZERO_WEIGHTS");
    assert_int_equal(r.divides, 1);
    assert_int_equal(r.plain_division, 0);
    assert_int_equal(r.unweighted_is_nan, 0);
    assert_int_equal(r.elementwise, 1);
    /* An alias, case-insensitive, answers the canonical spelling. */
    r = ratio_of("tf.compat.v1.losses.sigmoid_cross_entropy", "sum_over_nonzero_weights");
    assert_string_equal(r.reduction, "SUM_BY_NONZERO_WEIGHTS");
    r = ratio_of("sigmoid_cross_entropy", "sum");
    assert_string_equal(r.reduction, "SUM");
    assert_int_equal(r.divides, 0);

    r = ratio_of("softmax_cross_entropy", NULL);
    assert_int_equal(r.elementwise, 0);
    assert_int_equal(r.divides, 1);
    r = ratio_of("cross_entropy", NULL);
    assert_string_equal(r.reduction, "mean");
    assert_int_equal(r.plain_division, 1);
    assert_int_equal(r.unweighted_is_nan, 1);
    assert_int_equal(r.elementwise, 0);
    r = ratio_of("cross_entropy", "sum");
    assert_int_equal(r.divides, 0);
    assert_int_equal(r.unweighted_is_nan, 0);
    r = ratio_of("binary_cross_entropy_with_logits", NULL);
    assert_string_equal(r.reduction, "mean");
    assert_int_equal(r.plain_division, 1);
    assert_int_equal(r.unweighted_is_nan, 0);
    assert_int_equal(r.elementwise, 1);
    r = ratio_of("keras3.losses.BinaryCrossentropy", NULL);
    assert_string_equal(r.reduction, "sum_over_batch_size");
    assert_int_equal(r.plain_division, 0);
    assert_int_equal(r.elementwise, 0);
    r = ratio_of("tf.nn.sigmoid_cross_entropy_with_logits", "MEAN");
    assert_int_equal(r.divides, 1);
    assert_int_equal(r.elementwise, 1);

    /* A sum ratio ignores the denominator; a divide_no_nan one gives 0 on 0. */
    struct ml_sums s = {3, 0, 0, 0, 0, 0, 0};
    const struct ml_ratio tf_sum = ratio_of("sigmoid_cross_entropy", "SUM");
    const struct ml_ratio tf_mean = ratio_of("sigmoid_cross_entropy", "MEAN");
    const struct ml_ratio torch_mean = ratio_of("binary_cross_entropy_with_logits", "mean");
    assert_true(ml_sums_loss(&tf_sum, &s) == 3);
    assert_true(ml_sums_loss(&tf_mean, &s) == 0);
    assert_true(ml_sums_loss(&torch_mean, &s) == INFINITY);
    s.denominator = 4;
    assert_true(ml_sums_loss(&tf_mean, &s) == 0.75);
}

/* ---- 6. Outputs the loss or reduction cannot give, and ownership -------------------- */

static void expect_output_error(const struct ml_request *req, const char *ctx)
{
    struct ml_result res;
    struct ml_error err;
    int rc = ml_eval(req, &res, &err);
    if (rc != ML_EOUTPUT)
        fail_msg("%s: status %d, expected ML_EOUTPUT", ctx, rc);
    assert_string_equal(err.field, "outputs");
    assert_null(res.class_sums);
}

static void test_output_errors(void **state)
{
    (void)state;
    static const double z[6] = {1, 0, 0, 0, 1, 0}, x[6] = {0.5, -1, 2, 0.25, -3, 1};
    struct ml_tensor tz, tx;
    set_tensor(&tz, ML_FLOAT64, z, 2, 2, 3);
    set_tensor(&tx, ML_FLOAT64, x, 2, 2, 3);
    struct ml_request req;
    ml_request_init(&req);
    req.loss = "softmax_cross_entropy";
    req.dtype = ML_FLOAT64;
    req.labels = &tz;
    req.logits = &tx;
    req.outputs = ML_OUT_LOSS | ML_OUT_CLASS_SUMS;
    expect_output_error(&req, "softmax ce class_sums");
    /* Its plain sums are fine: one value per sample. */
    req.outputs = ML_OUT_LOSS | ML_OUT_SUMS;
    struct ml_result res;
    run(&req, &res, 0, "softmax ce sums");
    assert_true(res.sums.elements == 2 && res.sums.samples == 2 && res.sums.denominator == 2);
    ml_result_free(&res);

    req.loss = "sigmoid_cross_entropy";
    req.reduction = "NONE";
    req.outputs = ML_OUT_LOSS | ML_OUT_SUMS;
    expect_output_error(&req, "sums with reduction none");
    req.outputs = ML_OUT_LOSS | ML_OUT_CLASS_SUMS;
    expect_output_error(&req, "class_sums with reduction none");
    req.loss = "binary_cross_entropy_with_logits";
    req.reduction = "none";
    req.outputs = ML_OUT_SUMS;
    expect_output_error(&req, "torch sums with reduction none");

    /* class_sums are the result's: ml_result_free releases them (ASan checks the leak),
     * also beside every other array. */
    req.loss = "sigmoid_cross_entropy";
    req.reduction = NULL;
    req.outputs = ML_OUT_LOSS | ML_OUT_PER_ELEMENT | ML_OUT_PER_SAMPLE | ML_OUT_PER_CLASS |
                  ML_OUT_SUMS | ML_OUT_CLASS_SUMS;
    run(&req, &res, 0, "every output");
    assert_non_null(res.class_sums);
    assert_int_equal(res.num_classes, 3);
    ml_result_free(&res);
    assert_null(res.class_sums);
    ml_result_free(&res); /* twice is harmless */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tf_sums_fields),
        cmocka_unit_test(test_hand_derived),
        cmocka_unit_test(test_family_denominators),
        cmocka_unit_test(test_torch_ce_sum_sq),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_empty_block),
        cmocka_unit_test(test_zero_denominators),
        cmocka_unit_test(test_reduction_ratio),
        cmocka_unit_test(test_output_errors),
    };
    return cmocka_run_group_tests_name("sums", tests, setup, NULL);
}
