/*
 * accuracy.c -- summation accuracy at scale (`make accuracy`; not part of `make test`,
 * which checks the same bound at 1M elements).
 *
 * Masked sigmoid cross-entropy (SUM_BY_NONZERO_WEIGHTS) over N float32 elements through
 * ml_eval, against a long-double evaluation of the same float32 inputs; for comparison, a
 * naive float32 running sum of float32 losses.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "maskloss.h"
#include "ref.h"

int main(int argc, char **argv)
{
    long long n = argc > 1 ? atoll(argv[1]) : 16LL << 20;
    const long long c = 16;
    n -= n % c;
    float *z = malloc((size_t)n * sizeof(float)), *x = malloc((size_t)n * sizeof(float));
    float *m = malloc((size_t)n * sizeof(float));
    if (!z || !x || !m)
        return 1;
    ld want = ref_masked_sce_inputs(2026, n, z, x, m);
    float naive_num = 0, naive_cnt = 0;
    for (long long i = 0; i < n; i++) {
        float lf = fmaxf(x[i], 0) - x[i] * z[i] + log1pf(expf(-fabsf(x[i])));
        naive_num += lf * m[i];
        naive_cnt += m[i] != 0;
    }
    struct ml_tensor tz = {2, {n / c, c}, ML_FLOAT32, z}, tx = tz, tm = tz;
    tx.data = x;
    tm.data = m;
    printf("elements: %lld; reference (long double): %.17Lg\n", n, want);
    for (int dt = 0; dt < 2; dt++) {
        struct ml_request req;
        struct ml_result res;
        struct ml_error err;
        ml_request_init(&req);
        req.loss = "sigmoid_cross_entropy";
        req.dtype = dt ? ML_FLOAT64 : ML_FLOAT32;
        req.labels = &tz;
        req.logits = &tx;
        req.weights = &tm;
        if (ml_eval(&req, &res, &err)) {
            fprintf(stderr, "accuracy: %s\n", err.message);
            return 1;
        }
        printf("maskloss dtype %s: %.17g  relative error %.3Lg\n", dt ? "float64" : "float32",
               res.loss, fabsl((ld)res.loss - want) / want);
        ml_result_free(&res);
    }
    printf("naive float32 running sum: %.9g  relative error %.3Lg\n", naive_num / naive_cnt,
           fabsl((ld)(naive_num / naive_cnt) - want) / want);
    free(z);
    free(x);
    free(m);
    return 0;
}
