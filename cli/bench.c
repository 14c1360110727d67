/*
 * bench.c -- `maskloss bench`: elements per second of ml_eval against a naive scalar loop
 * run in the same process on the same data, and the accuracy of both.
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

enum wkind { W_NONE, W_MASK, W_CLASS };
static const char *const wnames[] = {"none", "mask", "class"};

struct loss_case {
    const char *name; /* catalogue name */
    const char *reduction;
    int weights_ok[3];
};

static const struct loss_case losses[] = {
    {"sigmoid_cross_entropy", NULL, {1, 1, 1}},
    {"binary_cross_entropy_with_logits", NULL, {1, 1, 1}},
    {"tf.nn.sigmoid_cross_entropy_with_logits", "SUM", {1, 1, 1}},
    {"sigmoid_focal_loss", "mean", {1, 1, 1}},
    {"asymmetric_loss", "mean", {1, 1, 1}},
    {"mean_squared_error", NULL, {1, 1, 1}},    /* regression: predictions */
    {"log_loss", NULL, {1, 1, 1}},              /* binary cross-entropy on probabilities */
    {"softmax_cross_entropy", NULL, {1, 1, 0}}, /* rows of 64 classes; the mask per sample */
};

/* Losses from here on take `predictions`: log_loss probabilities, MSE any number. */
#define FIRST_PRED 5
#define LOG_LOSS 6
#define SOFTMAX 7

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

/* softmax_cross_entropy (TF, masked mean over samples) of rows of `cols` classes: in double
 * with a compensated sum (mode 0, the accuracy reference), or the naive loops of a float32
 * (mode 1: expf, logf, float sums) or a float64 user (mode 2: exp, log, double sums). The
 * mask is one weight per row, w[row]. */
static double softmax_loss(int mode, const void *zv, const void *xv, const void *wv, enum wkind wk,
                           int64_t n, int64_t cols)
{
    double s = 0, comp = 0;
    float sf = 0;
    int64_t nonzero = 0, rows = n / cols;
    for (int64_t r = 0; r < rows; r++) {
        double m = -INFINITY, se = 0, acc = 0;
        for (int64_t c = 0; c < cols; c++) {
            int64_t i = r * cols + c;
            double xi = mode == 2 ? ((const double *)xv)[i] : ((const float *)xv)[i];
            m = xi > m ? xi : m;
        }
        if (mode == 1) {
            const float *x = (const float *)xv + r * cols, *z = (const float *)zv + r * cols;
            float sef = 0, accf = 0;
            for (int64_t c = 0; c < cols; c++)
                sef += expf(x[c] - (float)m);
            /* cols >= 1: the maximum's term makes sef >= 1. */
            // cppcheck-suppress invalidFunctionArg
            float lse = (float)m + logf(sef);
            for (int64_t c = 0; c < cols; c++)
                accf += z[c] * (x[c] - lse);
            acc = accf;
        } else {
            for (int64_t c = 0; c < cols; c++) {
                int64_t i = r * cols + c;
                double xi = mode == 2 ? ((const double *)xv)[i] : ((const float *)xv)[i];
                se += exp(xi - m);
            }
            // cppcheck-suppress invalidFunctionArg
            double lse = m + log(se); /* se >= 1, as above */
            for (int64_t c = 0; c < cols; c++) {
                int64_t i = r * cols + c;
                double xi = mode == 2 ? ((const double *)xv)[i] : ((const float *)xv)[i];
                double zi = mode == 2 ? ((const double *)zv)[i] : ((const float *)zv)[i];
                acc += zi * (xi - lse);
            }
        }
        double wr = wk == W_NONE ? 1.0
                    : mode == 2  ? ((const double *)wv)[r]
                                 : (double)((const float *)wv)[r];
        double v = -acc * wr;
        nonzero += wr != 0;
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
    double total = mode == 1 ? (double)sf : s + comp;
    return nonzero ? total / (double)nonzero : 0;
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
    const int64_t cols = 64;
    int64_t maxn = sizes[nsizes - 1];
    float *z = malloc((size_t)maxn * sizeof(float)), *x = malloc((size_t)maxn * sizeof(float));
    float *m = malloc((size_t)maxn * sizeof(float)), *cw = malloc((size_t)cols * sizeof(float));
    double *zd = malloc((size_t)maxn * sizeof(double)), *xd = malloc((size_t)maxn * sizeof(double));
    /* Probabilities for log_loss: the sigmoid of the logits. */
    float *pr = malloc((size_t)maxn * sizeof(float));
    double *prd = malloc((size_t)maxn * sizeof(double));
    double *md = malloc((size_t)maxn * sizeof(double)),
           *cwd = malloc((size_t)cols * sizeof(double));
    if (!z || !x || !m || !cw || !zd || !xd || !md || !cwd || !pr || !prd) {
        fprintf(stderr, "maskloss: bench: out of memory\n");
        return 1;
    }
    uint64_t s = 42;
    for (int64_t i = 0; i < maxn; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u1 = (double)(s >> 11) * 0x1p-53;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u2 = (double)(s >> 11) * 0x1p-53;
        z[i] = u1 < 0.3 ? 1.0f : 0.0f;
        x[i] = (float)((u2 - 0.5) * 12.0);
        m[i] = (s >> 7) & 1 ? 1.0f : 0.0f;
        zd[i] = z[i];
        xd[i] = x[i];
        prd[i] = pr[i] = (float)(1 / (1 + exp(-(double)x[i])));
        md[i] = m[i];
    }
    for (int64_t c = 0; c < cols; c++)
        cwd[c] = cw[c] = 0.5f + (float)c / (float)cols;

    if (!json)
        printf("%-42s %-7s %9s %-6s %10s %10s %8s %10s %10s  %s\n", "loss", "dtype", "n", "weights",
               "Melem/s", "naive", "speedup", "rel_error", "naive_err", "simd");
    for (size_t li = 0; li < sizeof(losses) / sizeof(losses[0]); li++) {
        if (only_loss && strcmp(only_loss, losses[li].name))
            continue;
        for (int si = 0; si < nsizes; si++) {
            int64_t n = sizes[si];
            if (only_n && n != only_n)
                continue;
            for (int dt = 0; dt < 2; dt++) {
                for (int wk = 0; wk < 3; wk++) {
                    if (!losses[li].weights_ok[wk])
                        continue;
                    struct ml_tensor tz = {2,
                                           {n / cols, cols},
                                           dt ? ML_FLOAT64 : ML_FLOAT32,
                                           dt ? (const void *)zd : (const void *)z};
                    struct ml_tensor tx = tz, tw = tz;
                    const float *xin = li == LOG_LOSS ? pr : x;
                    tx.data = dt ? (const void *)(li == LOG_LOSS ? prd : xd) : (const void *)xin;
                    tw.data = dt ? (const void *)md : (const void *)m;
                    if (wk == W_CLASS) {
                        tw.rank = 2;
                        tw.shape[0] = 1;
                        tw.shape[1] = cols;
                        tw.data = dt ? (const void *)cwd : (const void *)cw;
                    }
                    if (li == SOFTMAX && wk == W_MASK) { /* one weight per sample */
                        tw.rank = 1;
                        tw.shape[0] = n / cols;
                    }
                    struct ml_request req;
                    ml_request_init(&req);
                    req.loss = losses[li].name;
                    req.reduction = losses[li].reduction;
                    req.dtype = dt ? ML_FLOAT64 : ML_FLOAT32;
                    req.labels = &tz;
                    if (li == FIRST_PRED || li == LOG_LOSS)
                        req.predictions = &tx;
                    else
                        req.logits = &tx;
                    req.weights = wk == W_NONE ? NULL : &tw;
                    struct ml_result res;
                    struct ml_error err;
                    double got = NAN, t_ml, t_naive;
                    int rc = 0;
                    TIME_MEDIAN(t_ml, {
                        rc = ml_eval(&req, &res, &err);
                        if (!rc) {
                            got = res.loss;
                            ml_result_free(&res);
                        }
                    });
                    if (rc) {
                        fprintf(stderr, "maskloss: bench %s: %s\n", losses[li].name, err.message);
                        return 1;
                    }
                    /* The naive loop in the request's precision. */
                    double nv = 0;
                    if (li == SOFTMAX)
                        TIME_MEDIAN(t_naive,
                                    nv = softmax_loss(dt ? 2 : 1, dt ? (const void *)zd : z,
                                                      dt ? (const void *)xd : x,
                                                      dt ? (const void *)md : m, (enum wkind)wk, n,
                                                      cols));
                    else if (dt)
                        TIME_MEDIAN(t_naive, nv = naive_d((int)li, zd, li == LOG_LOSS ? prd : xd,
                                                          wk == W_CLASS ? cwd : md, (enum wkind)wk,
                                                          n, cols));
                    else
                        TIME_MEDIAN(t_naive, nv = naive((int)li, z, xin, wk == W_CLASS ? cw : m,
                                                        (enum wkind)wk, n, cols));
                    sink_f = (float)nv;
                    double ref = li == SOFTMAX ? softmax_loss(0, z, x, m, (enum wkind)wk, n, cols)
                                               : reference((int)li, z, xin, wk == W_CLASS ? cw : m,
                                                           (enum wkind)wk, n, cols);
                    double rel = fabs(got - ref) / fabs(ref);
                    double nrel = fabs(nv - ref) / fabs(ref);
                    double me = (double)n / t_ml * 1e-6, mn = (double)n / t_naive * 1e-6;
                    /* Every loss of the table takes the fused path, in both precisions. */
                    const char *simd = ml_simd_path();
                    if (json)
                        printf("{\"loss\":\"%s\",\"dtype\":\"%s\",\"n\":%lld,\"weights\":\"%s\","
                               "\"melem_per_s\":%.1f,\"reference_melem_per_s\":%.1f,"
                               "\"speedup\":%.2f,\"rel_error\":%.3g,\"reference_rel_error\":%.3g,"
                               "\"simd\":\"%s\"}\n",
                               losses[li].name, dt ? "float64" : "float32", (long long)n,
                               wnames[wk], me, mn, me / mn, rel, nrel, simd);
                    else
                        printf("%-42s %-7s %9lld %-6s %10.1f %10.1f %7.1fx %10.2g %10.2g  %s\n",
                               losses[li].name, dt ? "float64" : "float32", (long long)n,
                               wnames[wk], me, mn, me / mn, rel, nrel, simd);
                    fflush(stdout);
                }
            }
        }
    }
    free(z);
    free(x);
    free(m);
    free(cw);
    free(zd);
    free(xd);
    free(md);
    free(cwd);
    free(pr);
    free(prd);
    return 0;
}
