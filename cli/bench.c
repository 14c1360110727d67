/*
 * bench.c -- `maskloss bench`: elements per second of ml_eval against a naive scalar loop
 * run in the same process on the same data, the accuracy of both, and the memory-read limit:
 * a loop that only reads the arrays the evaluation reads (readlimit.c), timed the same way,
 * so that each kernel's distance from what the machine's memory allows is visible.
 *
 * The naive reference is what one writes first: libm expf/log1pf per element and a float
 * running sum for float32 (exp/log1p and a double sum for float64). The accuracy reference is
 * the formula in double with a compensated sum.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "maskloss.h"
#include "readlimit.h"

enum wkind { W_NONE, W_MASK, W_CLASS };
static const char *const wnames[] = {"none", "mask", "class"};

/* How a case is evaluated: an elementwise loss over [n / 64, 64], or a loss of the softmax
 * family over rows of `cols` classes. */
enum kind {
    K_POINT,   /* labels, logits (or predictions) and weights of one shape */
    K_SOFTMAX, /* TF softmax_cross_entropy: one-hot (or multi-hot) labels, a weight per row */
    K_SPARSE,  /* TF sparse_softmax_cross_entropy: int64 class indices, a weight per row */
    K_TORCH,   /* torch cross_entropy: int64 class indices, class weights [C] */
    K_KERAS    /* Keras CategoricalCrossentropy(from_logits=True): a weight per row */
};

struct loss_case {
    const char *name; /* catalogue name */
    const char *reduction;
    int weights_ok[3];
    enum kind kind;
    int64_t cols; /* classes of a row (the softmax family) */
};

static const struct loss_case losses[] = {
    {"sigmoid_cross_entropy", NULL, {1, 1, 1}, K_POINT, 64},
    {"binary_cross_entropy_with_logits", NULL, {1, 1, 1}, K_POINT, 64},
    {"tf.nn.sigmoid_cross_entropy_with_logits", "SUM", {1, 1, 1}, K_POINT, 64},
    {"sigmoid_focal_loss", "mean", {1, 1, 1}, K_POINT, 64},
    {"asymmetric_loss", "mean", {1, 1, 1}, K_POINT, 64},
    {"mean_squared_error", NULL, {1, 1, 1}, K_POINT, 64}, /* regression: predictions */
    {"log_loss", NULL, {1, 1, 1}, K_POINT, 64}, /* binary cross-entropy on probabilities */
    /* The softmax family, the mask per sample: 64 and 1000 classes. */
    {"softmax_cross_entropy", NULL, {1, 1, 0}, K_SOFTMAX, 64},
    {"softmax_cross_entropy", NULL, {1, 1, 0}, K_SOFTMAX, 1000},
    {"sparse_softmax_cross_entropy", NULL, {1, 1, 0}, K_SPARSE, 64},
    {"sparse_softmax_cross_entropy", NULL, {1, 1, 0}, K_SPARSE, 1000},
    {"torch.nn.functional.cross_entropy", "mean", {1, 0, 1}, K_TORCH, 64},
    {"torch.nn.functional.cross_entropy", "mean", {1, 0, 1}, K_TORCH, 1000},
    {"categorical_crossentropy", NULL, {1, 1, 0}, K_KERAS, 64},
    {"categorical_crossentropy", NULL, {1, 1, 0}, K_KERAS, 1000},
};

/* Losses from here on take `predictions`: log_loss probabilities, MSE any number. */
#define FIRST_PRED 5
#define LOG_LOSS 6
#define MAX_COLS 1000

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The pointwise loss in double, for the accuracy reference. */
static double loss_d(int which, double z, double x)
{
    if (which == FIRST_PRED)
        return (x - z) * (x - z);
    if (which == LOG_LOSS)
        return -z * log(x + 1e-7) - (1 - z) * log(1 - x + 1e-7);
    double sp = log1p(exp(-fabs(x)));
    double sce = fmax(x, 0) - x * z + sp;
    if (which <= 2)
        return sce;
    double p = 1 / (1 + exp(-x));
    if (which == 3) {
        double pt = p * z + (1 - p) * (1 - z);
        return sce * (1 - pt) * (1 - pt) * (0.25 * z + 0.75 * (1 - z));
    }
    /* ASL defaults: gamma_neg 4, gamma_pos 1, clip 0.05, eps 1e-8. */
    double xn = fmin(1 - p + 0.05, 1.0);
    double l = z * log(fmax(p, 1e-8)) + (1 - z) * log(fmax(xn, 1e-8));
    double pt = p * z + xn * (1 - z);
    double g = 1 * z + 4 * (1 - z);
    return -(l * pow(1 - pt, g));
}

/* The same in float with libm, for the naive loop. */
static float loss_f(int which, float z, float x)
{
    if (which == FIRST_PRED)
        return (x - z) * (x - z);
    if (which == LOG_LOSS)
        return -z * logf(x + 1e-7f) - (1 - z) * logf(1 - x + 1e-7f);
    float sp = log1pf(expf(-fabsf(x)));
    float sce = fmaxf(x, 0) - x * z + sp;
    if (which <= 2)
        return sce;
    float p = 1 / (1 + expf(-x));
    if (which == 3) {
        float pt = p * z + (1 - p) * (1 - z);
        return sce * (1 - pt) * (1 - pt) * (0.25f * z + 0.75f * (1 - z));
    }
    float xn = fminf(1 - p + 0.05f, 1.0f);
    float l = z * logf(fmaxf(p, 1e-8f)) + (1 - z) * logf(fmaxf(xn, 1e-8f));
    float pt = p * z + xn * (1 - z);
    float g = 1 * z + 4 * (1 - z);
    return -(l * powf(1 - pt, g));
}

/* The reduction of each case: 0 masked mean (non-zero weights), 1 mean over all, 2 sum. */
static int reduction_kind(int which)
{
    return which == 0 || which >= FIRST_PRED ? 0 : which == 2 ? 2 : 1;
}

static double weight_at(enum wkind wk, const float *w, int64_t i, int64_t cols)
{
    return wk == W_NONE ? 1.0 : wk == W_MASK ? (double)w[i] : (double)w[i % cols];
}

static double reference(int which, const float *z, const float *x, const float *w, enum wkind wk,
                        int64_t n, int64_t cols)
{
    double s = 0, c = 0;
    int64_t nonzero = 0;
    for (int64_t i = 0; i < n; i++) {
        double wi = weight_at(wk, w, i, cols);
        double v = loss_d(which, z[i], x[i]) * wi;
        double t = s + v; /* Neumaier */
        c += fabs(s) >= fabs(v) ? (s - t) + v : (v - t) + s;
        s = t;
        nonzero += wi != 0;
    }
    s += c;
    int r = reduction_kind(which);
    return r == 2 ? s : r == 1 ? s / (double)n : (nonzero ? s / (double)nonzero : 0);
}

static float naive(int which, const float *z, const float *x, const float *w, enum wkind wk,
                   int64_t n, int64_t cols)
{
    float s = 0;
    int64_t nonzero = 0;
    for (int64_t i = 0; i < n; i++) {
        float wi = wk == W_NONE ? 1.0f : wk == W_MASK ? w[i] : w[i % cols];
        s += loss_f(which, z[i], x[i]) * wi;
        nonzero += wi != 0;
    }
    int r = reduction_kind(which);
    return r == 2 ? s : r == 1 ? s / (float)n : (nonzero ? s / (float)nonzero : 0);
}

/* The naive loop of a float64 user: libm's double functions, a double running sum. */
static double naive_d(int which, const double *z, const double *x, const double *w, enum wkind wk,
                      int64_t n, int64_t cols)
{
    double s = 0;
    int64_t nonzero = 0;
    for (int64_t i = 0; i < n; i++) {
        double wi = wk == W_NONE ? 1.0 : wk == W_MASK ? w[i] : w[i % cols];
        s += loss_d(which, z[i], x[i]) * wi;
        nonzero += wi != 0;
    }
    int r = reduction_kind(which);
    return r == 2 ? s : r == 1 ? s / (double)n : (nonzero ? s / (double)nonzero : 0);
}

/* The inputs of a softmax case: labels z (one-hot or multi-hot rows) or class indices idx,
 * logits x, and w: the weight of each row (W_MASK), of each class (W_CLASS) or NULL. */
struct softmax_in {
    enum kind kind;
    const void *z, *x, *w;
    const int64_t *idx;
    enum wkind wk;
    int64_t rows, cols;
};

/* A loss of the softmax family over rows of `cols` classes: in double with a compensated sum
 * (mode 0, the accuracy reference), or the naive loops of a float32 user (mode 1: expf, logf,
 * float sums) or a float64 user (mode 2: exp, log, double sums). Its reduction: TF's masked
 * mean (the weights that are not 0), Keras's sum over the batch size (every row), torch's mean
 * (the sum of the target classes' weights). */
static double softmax_loss(int mode, const struct softmax_in *in)
{
    double s = 0, comp = 0, den = 0;
    float sf = 0;
    const int64_t cols = in->cols;
#define AT(v, i) (mode == 2 ? ((const double *)(v))[i] : (double)((const float *)(v))[i])
    for (int64_t r = 0; r < in->rows; r++) {
        double m = -INFINITY, se = 0, acc = 0;
        const int64_t base = r * cols;
        for (int64_t c = 0; c < cols; c++)
            m = AT(in->x, base + c) > m ? AT(in->x, base + c) : m;
        if (mode == 1) {
            const float *x = (const float *)in->x + base, *z = (const float *)in->z + base;
            float sef = 0, accf = 0;
            for (int64_t c = 0; c < cols; c++)
                sef += expf(x[c] - (float)m);
            /* cols >= 1: the maximum's term makes sef >= 1. */
            // cppcheck-suppress invalidFunctionArg
            float lse = (float)m + logf(sef);
            if (in->idx)
                accf = x[in->idx[r]] - lse;
            else
                for (int64_t c = 0; c < cols; c++)
                    accf += z[c] * (x[c] - lse);
            acc = accf;
        } else {
            for (int64_t c = 0; c < cols; c++)
                se += exp(AT(in->x, base + c) - m);
            // cppcheck-suppress invalidFunctionArg
            double lse = m + log(se); /* se >= 1, as above */
            if (in->idx)
                acc = AT(in->x, base + in->idx[r]) - lse;
            else
                for (int64_t c = 0; c < cols; c++)
                    acc += AT(in->z, base + c) * (AT(in->x, base + c) - lse);
        }
        double wr = in->wk == W_NONE ? 1.0
                    : in->wk == W_MASK ? AT(in->w, r)
                                       : AT(in->w, in->idx[r]);
        double v = -acc * wr;
        den += in->kind == K_TORCH ? wr : in->kind == K_KERAS ? 1 : wr != 0;
        if (mode == 1) {
            sf += (float)v;
        } else if (mode == 2) {
            s += v;
        } else {
            double t = s + v; /* Neumaier */
            comp += fabs(s) >= fabs(v) ? (s - t) + v : (v - t) + s;
            s = t;
        }
    }
#undef AT
    double total = mode == 1 ? (double)sf : s + comp;
    return den != 0 ? total / den : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median seconds of repeated calls: at least 3 runs and 0.2 s, at most 15 runs. */
#define TIME_MEDIAN(result, call)                                                                  \
    do {                                                                                           \
        double times_[15];                                                                         \
        int runs_ = 0;                                                                             \
        double start_ = now();                                                                     \
        while (runs_ < 15 && (runs_ < 3 || now() - start_ < 0.2)) {                                \
            double t0_ = now();                                                                    \
            call;                                                                                  \
            times_[runs_++] = now() - t0_;                                                         \
        }                                                                                          \
        qsort(times_, (size_t)runs_, sizeof(double), cmp_double);                                  \
        (result) = times_[runs_ / 2];                                                              \
    } while (0)

static volatile float sink_f;
static volatile uint64_t sink_u;

/* The data every case reads, generated once: float32 and float64 copies of the same values. */
struct data {
    float *z, *x, *m, *cw, *pr;
    double *zd, *xd, *md, *cwd, *prd;
    int64_t *idx1000, *idx64; /* class indices of the rows, for 1000 and 64 classes */
};

static int data_make(struct data *d, int64_t maxn)
{
    d->z = malloc((size_t)maxn * sizeof(float));
    d->x = malloc((size_t)maxn * sizeof(float));
    d->m = malloc((size_t)maxn * sizeof(float));
    d->pr = malloc((size_t)maxn * sizeof(float)); /* probabilities: the logits' sigmoid */
    d->cw = malloc(MAX_COLS * sizeof(float));
    d->zd = malloc((size_t)maxn * sizeof(double));
    d->xd = malloc((size_t)maxn * sizeof(double));
    d->md = malloc((size_t)maxn * sizeof(double));
    d->prd = malloc((size_t)maxn * sizeof(double));
    d->cwd = malloc(MAX_COLS * sizeof(double));
    d->idx64 = malloc((size_t)(maxn / 64 + 1) * sizeof(int64_t));
    d->idx1000 = malloc((size_t)(maxn / MAX_COLS + 1) * sizeof(int64_t));
    if (!d->z || !d->x || !d->m || !d->pr || !d->cw || !d->zd || !d->xd || !d->md || !d->prd ||
        !d->cwd || !d->idx64 || !d->idx1000)
        return -1;
    uint64_t s = 42;
    for (int64_t i = 0; i < maxn; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u1 = (double)(s >> 11) * 0x1p-53;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u2 = (double)(s >> 11) * 0x1p-53;
        d->z[i] = u1 < 0.3 ? 1.0f : 0.0f;
        d->x[i] = (float)((u2 - 0.5) * 12.0);
        d->m[i] = (s >> 7) & 1 ? 1.0f : 0.0f;
        d->zd[i] = d->z[i];
        d->xd[i] = d->x[i];
        d->prd[i] = d->pr[i] = (float)(1 / (1 + exp(-(double)d->x[i])));
        d->md[i] = d->m[i];
        if (i % 64 == 0)
            d->idx64[i / 64] = (int64_t)((s >> 20) % 64);
        if (i % MAX_COLS == 0)
            d->idx1000[i / MAX_COLS] = (int64_t)((s >> 20) % MAX_COLS);
    }
    for (int64_t c = 0; c < MAX_COLS; c++)
        d->cwd[c] = d->cw[c] = 0.5f + (float)(c % 64) / 64.0f;
    return 0;
}

static void data_free(struct data *d)
{
    free(d->z);
    free(d->x);
    free(d->m);
    free(d->pr);
    free(d->cw);
    free(d->zd);
    free(d->xd);
    free(d->md);
    free(d->prd);
    free(d->cwd);
    free(d->idx64);
    free(d->idx1000);
}

/* One case: what ml_eval is given, what the naive loops and the read-only loop read. */
struct run {
    struct ml_tensor tz, tx, tw;
    struct ml_param from_logits;
    struct ml_request req;
    struct softmax_in sm;
    struct bench_span spans[3];
    int nspans;
    int64_t n; /* elements of the logits (or predictions) */
};

static void run_setup(struct run *r, const struct loss_case *lc, int li, const struct data *d,
                      int64_t n, int dt, enum wkind wk)
{
    const size_t es = dt ? sizeof(double) : sizeof(float);
    const int64_t cols = lc->cols, rows = n / cols;
    memset(r, 0, sizeof(*r));
    r->n = n = rows * cols;
    const int sparse = lc->kind == K_SPARSE || lc->kind == K_TORCH;
    const int64_t *idx = cols == 64 ? d->idx64 : d->idx1000;
    r->tz = (struct ml_tensor){2, {rows, cols}, dt ? ML_FLOAT64 : ML_FLOAT32,
                               dt ? (const void *)d->zd : (const void *)d->z};
    r->tx = r->tz;
    r->tw = r->tz;
    r->tx.data = dt ? (const void *)(li == LOG_LOSS ? d->prd : d->xd)
                    : (const void *)(li == LOG_LOSS ? d->pr : d->x);
    r->tw.data = dt ? (const void *)d->md : (const void *)d->m;
    if (sparse)
        r->tz = (struct ml_tensor){1, {rows}, ML_INT64, idx};
    if (wk == W_CLASS) {
        r->tw.rank = lc->kind == K_TORCH ? 1 : 2;
        r->tw.shape[0] = lc->kind == K_TORCH ? cols : 1;
        r->tw.shape[1] = cols;
        r->tw.data = dt ? (const void *)d->cwd : (const void *)d->cw;
    }
    if (lc->kind != K_POINT && wk == W_MASK) { /* one weight per sample */
        r->tw.rank = 1;
        r->tw.shape[0] = rows;
    }
    ml_request_init(&r->req);
    r->req.loss = lc->name;
    r->req.reduction = lc->reduction;
    r->req.dtype = dt ? ML_FLOAT64 : ML_FLOAT32;
    r->req.labels = &r->tz;
    if (li == FIRST_PRED || li == LOG_LOSS)
        r->req.predictions = &r->tx;
    else
        r->req.logits = &r->tx;
    r->req.weights = wk == W_NONE ? NULL : &r->tw;
    if (lc->kind == K_KERAS) {
        r->from_logits = (struct ml_param){"from_logits", ML_PARAM_BOOL, 0, 1, {0}};
        r->req.params = &r->from_logits;
        r->req.num_params = 1;
    }
    r->sm = (struct softmax_in){lc->kind, r->tz.data, r->tx.data, r->tw.data,
                                sparse ? idx : NULL, wk, rows, cols};
    /* What the evaluation reads: labels, logits, then the weights. */
    r->spans[0] = (struct bench_span){r->tz.data, sparse ? (size_t)rows * sizeof(int64_t)
                                                         : (size_t)n * es};
    r->spans[1] = (struct bench_span){r->tx.data, (size_t)n * es};
    r->nspans = 2;
    if (wk != W_NONE)
        r->spans[r->nspans++] =
            (struct bench_span){r->tw.data, (size_t)ml_shape_numel(r->tw.rank, r->tw.shape) * es};
}

int maskloss_bench(int argc, char **argv)
{
    int json = 0, quick = 0;
    const char *only_loss = NULL;
    long long only_n = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--loss") && i + 1 < argc)
            only_loss = argv[++i];
        else if (!strcmp(argv[i], "--n") && i + 1 < argc)
            only_n = atoll(argv[++i]);
        else {
            fprintf(stderr, "maskloss: bench takes --json, --quick, --loss NAME and --n N (one of "
                            "1024, 65536, 1048576, 16777216)\n");
            return 64;
        }
    }
    static const int64_t sizes[] = {1024, 65536, 1048576, 16777216};
    const int nsizes = quick && only_n != 16777216 ? 3 : 4;
    struct data d;
    if (data_make(&d, sizes[nsizes - 1])) {
        data_free(&d);
        fprintf(stderr, "maskloss: bench: out of memory\n");
        return 1;
    }

    if (!json)
        printf("%-34s %5s %-7s %9s %-6s %8s %8s %7s %8s %7s %9s %9s  %s\n", "loss", "cols", "dtype",
               "n", "weights", "Melem/s", "naive", "speedup", "limit", "of_lim", "rel_error",
               "naive_err", "simd");
    for (size_t li = 0; li < sizeof(losses) / sizeof(losses[0]); li++) {
        const struct loss_case *lc = &losses[li];
        if (only_loss && strcmp(only_loss, lc->name))
            continue;
        for (int si = 0; si < nsizes; si++) {
            if (only_n && sizes[si] != only_n)
                continue;
            for (int dt = 0; dt < 2; dt++) {
                for (int wk = 0; wk < 3; wk++) {
                    if (!lc->weights_ok[wk])
                        continue;
                    struct run r;
                    run_setup(&r, lc, (int)li, &d, sizes[si], dt, (enum wkind)wk);
                    const int64_t n = r.n, cols = lc->cols;
                    struct ml_result res;
                    struct ml_error err;
                    double got = NAN, t_ml, t_naive, t_read;
                    int rc = 0;
                    TIME_MEDIAN(t_ml, {
                        rc = ml_eval(&r.req, &res, &err);
                        if (!rc) {
                            got = res.loss;
                            ml_result_free(&res);
                        }
                    });
                    if (rc) {
                        fprintf(stderr, "maskloss: bench %s: %s\n", lc->name, err.message);
                        data_free(&d);
                        return 1;
                    }
                    TIME_MEDIAN(t_read, sink_u = bench_read_all(r.spans, r.nspans, n));
                    /* The naive loop in the request's precision; the reference in double. */
                    double nv = 0, ref;
                    const float *xin = li == LOG_LOSS ? d.pr : d.x;
                    if (lc->kind != K_POINT) {
                        TIME_MEDIAN(t_naive, nv = softmax_loss(dt ? 2 : 1, &r.sm));
                        struct softmax_in f32 = r.sm; /* the reference reads the float32 copy */
                        f32.z = r.sm.idx ? NULL : d.z;
                        f32.x = d.x;
                        f32.w = wk == W_CLASS ? d.cw : d.m;
                        ref = softmax_loss(0, &f32);
                    } else {
                        if (dt)
                            TIME_MEDIAN(t_naive,
                                        nv = naive_d((int)li, d.zd, li == LOG_LOSS ? d.prd : d.xd,
                                                     wk == W_CLASS ? d.cwd : d.md, (enum wkind)wk,
                                                     n, cols));
                        else
                            TIME_MEDIAN(t_naive, nv = naive((int)li, d.z, xin,
                                                            wk == W_CLASS ? d.cw : d.m,
                                                            (enum wkind)wk, n, cols));
                        ref = reference((int)li, d.z, xin, wk == W_CLASS ? d.cw : d.m,
                                        (enum wkind)wk, n, cols);
                    }
                    sink_f = (float)nv;
                    /* Relative errors; absolute when the loss is 0 (one row, masked out). */
                    double scale = ref != 0 ? fabs(ref) : 1;
                    double rel = fabs(got - ref) / scale, nrel = fabs(nv - ref) / scale;
                    double me = (double)n / t_ml * 1e-6, mn = (double)n / t_naive * 1e-6;
                    double ml = (double)n / t_read * 1e-6;
                    const char *simd = ml_simd_path();
                    const char *dts = dt ? "float64" : "float32";
                    if (json)
                        printf("{\"loss\":\"%s\",\"classes\":%lld,\"dtype\":\"%s\",\"n\":%lld,"
                               "\"weights\":\"%s\",\"melem_per_s\":%.1f,"
                               "\"reference_melem_per_s\":%.1f,\"speedup\":%.2f,"
                               "\"read_limit_melem_per_s\":%.1f,\"of_read_limit\":%.3f,"
                               "\"rel_error\":%.3g,\"reference_rel_error\":%.3g,"
                               "\"simd\":\"%s\"}\n",
                               lc->name, (long long)cols, dts, (long long)n, wnames[wk], me, mn,
                               me / mn, ml, me / ml, rel, nrel, simd);
                    else
                        printf("%-34s %5lld %-7s %9lld %-6s %8.1f %8.1f %6.1fx %8.1f %7.2f %9.2g "
                               "%9.2g  %s\n",
                               lc->name, (long long)cols, dts, (long long)n, wnames[wk], me, mn,
                               me / mn, ml, me / ml, rel, nrel, simd);
                    fflush(stdout);
                }
            }
        }
    }
    data_free(&d);
    return 0;
}
